// Softmax and log-softmax over the last axis on the device (native/cpu/softmax.cc); device code in
// softmax_kernels.cuh: one block per row.
#include "common.cuh"
#include "softmax_kernels.cuh"

namespace dalle {
namespace cuda {
namespace {
// Threads per row block: a power of two, wider for long rows.
unsigned softmax_threads(int64_t C) { return C <= 64 ? 32 : C <= 512 ? 128 : kMaxBlock; }
}  // namespace

std::string softmax_forward(const float* x, float* y, int64_t R, int64_t C, bool log) {
  if (R * C == 0) return "";
  if (R > 2147483647) return "softmax: too many rows";
  softmax_fwd_kernel<<<(unsigned)R, softmax_threads(C)>>>(x, y, C, log);
  return launch_error("softmax");
}

std::string softmax_backward(const float* y, const float* g, float* dx, int64_t R, int64_t C, bool log) {
  if (R * C == 0) return "";
  if (R > 2147483647) return "softmax backward: too many rows";
  softmax_bwd_kernel<<<(unsigned)R, softmax_threads(C)>>>(y, g, dx, C, log);
  return launch_error("softmax backward");
}

}  // namespace cuda
}  // namespace dalle
