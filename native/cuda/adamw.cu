// Fused AdamW on fp32 master weights (native/cpu/blas1.cc adamw).
#include <cmath>

#include "common.cuh"

namespace dalle {
namespace cuda {
namespace {

// ---- AdamW ----

__global__ void adamw_kernel(int64_t n, float* p, const float* g, float* m, float* v, float lr, float b1, float b2,
                             float eps, float wd, float gs, float bc1, float bc2) {
  GRID_STRIDE(i, n) {
    const float gi = g[i] * gs;
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float update = (mi * bc1) / (sqrtf(vi * bc2) + eps);
    p[i] -= lr * (update + wd * p[i]);
  }
}

}  // namespace

std::string adamw(int64_t n, float* p, const float* g, float* m, float* v, float lr, float b1, float b2, float eps,
                  float wd, float gscale, float bc1, float bc2) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  adamw_kernel<<<blocks, kThreads>>>(n, p, g, m, v, lr, b1, b2, eps, wd, gscale, bc1, bc2);
  return launch_error("adamw");
}

}  // namespace cuda
}  // namespace dalle
