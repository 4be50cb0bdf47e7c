// Sum / max / argmax over the middle axis of (outer, R, inner) and max's backward on the device
// (native/cpu/reduce.cc); device code in reduce_kernels.cuh.
#include <cstring>

#include "common.cuh"
#include "reduce_kernels.cuh"

namespace dalle {
namespace cuda {

std::string reduce(int code, const float* x, int64_t outer, int64_t R, int64_t inner, float* out, int32_t* idx,
                   double scale) {
  if (outer * inner == 0) return "";
  if (R == 0) {  // an empty sum: 0 times the scale (mean of nothing is NaN)
    const float v = (float)(0.0 * scale);
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return fill(out, outer * inner, bits, 4);
  }
  if (inner == 1 && R >= 256) {
    if (outer > 2147483647) return "reduce: too many rows";
    reduce_rows_kernel<<<(unsigned)outer, kMaxBlock>>>(code, x, R, out, idx, scale);
  } else {
    reduce_cols_kernel<<<(unsigned)elementwise_blocks(outer * inner), kThreads>>>(code, x, outer, R, inner, out, idx,
                                                                                   scale);
  }
  return launch_error("reduce");
}

std::string reduce_max_backward(float* dx, const float* g, const int32_t* idx, int64_t outer, int64_t R, int64_t inner,
                                unsigned long long* flag) {
  if (outer * inner == 0 || R == 0) return "";
  std::string e = cuda_error("reduceMaxBackward", cudaMemset(flag, 0xff, sizeof(unsigned long long)));
  if (!e.empty()) return e;
  reduce_max_bwd_kernel<<<(unsigned)elementwise_blocks(outer * inner), kThreads>>>(dx, g, idx, outer, R, inner, flag);
  e = launch_error("reduceMaxBackward");
  if (!e.empty()) return e;
  unsigned long long bad = 0;
  e = cuda_error("reduceMaxBackward", cudaMemcpy(&bad, flag, sizeof(bad), cudaMemcpyDeviceToHost));
  if (!e.empty() || bad == ~0ull) return e;
  int32_t v = 0;
  cudaMemcpy(&v, idx + (bad - 1), sizeof(v), cudaMemcpyDeviceToHost);
  return "reduceMaxBackward: index " + std::to_string(v) + " at " + std::to_string(bad - 1) + " is out of range [0, " +
         std::to_string(R) + ")";
}

}  // namespace cuda
}  // namespace dalle
