// The engine's vector kernels outside ops on the device (native/cpu/blas1.cc: axpy, scale, sumSquares), f32; device
// code in blas1_kernels.cuh.
#include <vector>

#include "blas1_kernels.cuh"
#include "common.cuh"

namespace dalle {
namespace cuda {

std::string axpy(int64_t n, float alpha, const float* x, float* y) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  axpy_kernel<<<(unsigned)blocks, kThreads>>>(n, alpha, x, y);
  return launch_error("axpy");
}

std::string scale(int64_t n, float alpha, float* x) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  scale_kernel<<<(unsigned)blocks, kThreads>>>(n, alpha, x);
  return launch_error("scale");
}

// One launch over every chunk of every tensor: the tensor table goes in with one copy (pointers, sizes, prefix of
// chunk counts packed in one buffer), the partials come back with one copy, and the host adds them in the CPU
// kernel's order (a tensor's chunks in order). Synchronizes: the caller wants a host number.
std::string sum_squares(const std::vector<const float*>& ptrs, const std::vector<int64_t>& sizes, double* sums) {
  const char* op = "sumSquares";
  const int64_t count = (int64_t)ptrs.size();
  std::vector<int64_t> table(3 * count + 1);  // ptrs (count), sizes (count), first_chunk (count + 1)
  int64_t chunks = 0;
  for (int64_t t = 0; t < count; t++) {
    table[t] = (int64_t)(uintptr_t)ptrs[t];
    table[count + t] = sizes[t];
    table[2 * count + t] = chunks;
    chunks += (sizes[t] + kSumSquaresChunk - 1) / kSumSquaresChunk;
  }
  table[3 * count] = chunks;
  for (int64_t t = 0; t < count; t++) sums[t] = 0.0;
  if (chunks == 0) return "";
  const size_t table_bytes = table.size() * sizeof(int64_t), bytes = table_bytes + (size_t)chunks * sizeof(double);
  void* ws = nullptr;
  std::string err = workspace(bytes, &ws);
  if (!err.empty()) return std::string(op) + ": " + err;
  int64_t* dtable = static_cast<int64_t*>(ws);
  double* partial = reinterpret_cast<double*>(static_cast<char*>(ws) + table_bytes);
  err = cuda_error(op, cudaMemcpy(dtable, table.data(), table_bytes, cudaMemcpyHostToDevice));
  if (!err.empty()) return err;
  const unsigned gx = (unsigned)(chunks < 65535 ? chunks : 65535), gy = (unsigned)((chunks + gx - 1) / gx);
  sum_squares_kernel<<<dim3(gx, gy), kSumSquaresThreads>>>(reinterpret_cast<const float* const*>(dtable),
                                                           dtable + count, dtable + 2 * count, count, partial);
  err = launch_error(op);
  if (!err.empty()) return err;
  std::vector<double> host((size_t)chunks);
  err = cuda_error(op, cudaMemcpy(host.data(), partial, (size_t)chunks * sizeof(double), cudaMemcpyDeviceToHost));
  if (!err.empty()) return err;
  for (int64_t t = 0; t < count; t++) {
    double s = 0;
    for (int64_t c = table[2 * count + t]; c < table[2 * count + t + 1]; c++) s += host[(size_t)c];
    sums[t] = s;
  }
  return "";
}

}  // namespace cuda
}  // namespace dalle
