// Embedding lookup and its backward on the device (native/cpu/embedding.cc); device code in embedding_kernels.cuh.
// The indices are checked on the device first (one u64 copied back: synchronizes); nothing is written when one is bad.
#include "common.cuh"
#include "embedding_kernels.cuh"

namespace dalle {
namespace cuda {
namespace {

// "" when every index is in [0, V), else the CPU kernel's message naming the first bad one and its position in shape.
std::string check_indices(const char* op, const int32_t* idx, int64_t n, int64_t V, const std::vector<int64_t>& shape,
                          unsigned long long* flag) {
  std::string e = cuda_error(op, cudaMemset(flag, 0xff, sizeof(unsigned long long)));
  if (!e.empty()) return e;
  embedding_check_kernel<<<(unsigned)elementwise_blocks(n), kThreads>>>(idx, n, V, flag);
  e = launch_error(op);
  if (!e.empty()) return e;
  unsigned long long bad = 0;
  e = cuda_error(op, cudaMemcpy(&bad, flag, sizeof(bad), cudaMemcpyDeviceToHost));
  if (!e.empty() || bad == ~0ull) return e;
  int32_t v = 0;
  cudaMemcpy(&v, idx + (bad - 1), sizeof(v), cudaMemcpyDeviceToHost);
  std::string pos;
  int64_t rem = (int64_t)bad - 1;
  for (size_t d = shape.size(); d-- > 0;) {
    pos = std::to_string(shape[d] ? rem % shape[d] : 0) + (pos.empty() ? "" : ", ") + pos;
    rem = shape[d] ? rem / shape[d] : 0;
  }
  std::string dims;
  for (size_t d = 0; d < shape.size(); d++) dims += (d ? ", " : "") + std::to_string(shape[d]);
  return std::string(op) + ": index " + std::to_string(v) + " at position (" + pos + ") of the indices (" + dims +
         ") is out of range for a table of V = " + std::to_string(V) + " rows (valid: 0 to " + std::to_string(V - 1) +
         ")";
}

}  // namespace

std::string embedding_forward(const float* table, int64_t V, int64_t C, const int32_t* idx,
                              const std::vector<int64_t>& shape, float* out, unsigned long long* flag) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (n == 0) return "";
  std::string e = check_indices("embedding", idx, n, V, shape, flag);
  if (!e.empty() || C == 0) return e;
  embedding_fwd_kernel<<<(unsigned)elementwise_blocks(n * C), kThreads>>>(table, C, idx, n, out);
  return launch_error("embedding");
}

std::string embedding_backward(const float* g, const int32_t* idx, int64_t N, int64_t V, int64_t C, float* dtable,
                               unsigned long long* flag) {
  if (V * C == 0) return "";
  if (N > 0) {
    std::string e = check_indices("embedding backward", idx, N, V, std::vector<int64_t>{N}, flag);
    if (!e.empty()) return e;
  }
  std::string e = cuda_error("embedding backward", cudaMemsetAsync(dtable, 0, (size_t)(V * C) * sizeof(float)));
  if (!e.empty() || N == 0) return e;
  embedding_bwd_kernel<<<(unsigned)elementwise_blocks(C), kThreads>>>(g, idx, N, C, dtable);
  return launch_error("embedding backward");
}

}  // namespace cuda
}  // namespace dalle
