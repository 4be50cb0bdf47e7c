// philoxFill on the device (native/cpu/random.cc: the same stream); device code in random_kernels.cuh.
#include "common.cuh"
#include "random_kernels.cuh"

namespace dalle {
namespace cuda {

std::string philox_fill(float* dst, int64_t n, uint32_t k0, uint32_t k1, uint64_t offset, int kind, double a, double b) {
  if (n == 0) return "";
  const int64_t threads = kind == kPhiloxNormal ? (n + 1) / 2 : n;
  philox_fill_kernel<<<(unsigned)elementwise_blocks(threads), kThreads>>>(dst, n, k0, k1, offset, kind, a, b);
  return launch_error("philoxFill");
}

}  // namespace cuda
}  // namespace dalle
