// 2x2 max-pool and 2x nearest upsampling, forward and backward, on the device (native/cpu/pool.cc); device code in
// pool_kernels.cuh.
#include "common.cuh"
#include "pool_kernels.cuh"

namespace dalle {
namespace cuda {

std::string maxpool2x2_forward(const float* x, float* y, int32_t* argmax, int64_t B, int64_t C, int64_t H, int64_t W) {
  const int64_t n = B * C * (H / 2) * (W / 2);
  if (n == 0) return "";
  maxpool2x2_fwd_kernel<<<(unsigned)elementwise_blocks(n), kThreads>>>(x, y, argmax, B * C, H, W);
  return launch_error("maxpool2x2Forward");
}

std::string maxpool2x2_backward(const float* dy, const int32_t* argmax, float* dx, int64_t B, int64_t C, int64_t H,
                                int64_t W) {
  const int64_t n = B * C * H * W;
  if (n == 0) return "";
  maxpool2x2_bwd_kernel<<<(unsigned)elementwise_blocks(n), kThreads>>>(dy, argmax, dx, B * C, H, W);
  return launch_error("maxpool2x2Backward");
}

std::string upsample2x_forward(const float* x, float* y, int64_t B, int64_t C, int64_t H, int64_t W) {
  const int64_t n = B * C * 4 * H * W;
  if (n == 0) return "";
  upsample2x_fwd_kernel<<<(unsigned)elementwise_blocks(n), kThreads>>>(x, y, B * C, H, W);
  return launch_error("upsample2xForward");
}

std::string upsample2x_backward(const float* dy, float* dx, int64_t B, int64_t C, int64_t H, int64_t W) {
  const int64_t n = B * C * H * W;
  if (n == 0) return "";
  upsample2x_bwd_kernel<<<(unsigned)elementwise_blocks(n), kThreads>>>(dy, dx, B * C, H, W);
  return launch_error("upsample2xBackward");
}

}  // namespace cuda
}  // namespace dalle
