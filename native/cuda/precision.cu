// The per-resblock unscale and filter of mixed precision (native/cpu/blas1.cc scaleFilter): y = alpha * x with every
// non-finite product set to 0, and the count of such products.
#include <cmath>
#include <type_traits>

#include "common.cuh"

namespace dalle {
namespace cuda {
namespace {

// ---- scale and filter ----

template <class T>
__global__ void scale_filter_kernel(const T* x, T* y, int64_t n, float alpha, unsigned long long* count) {
  unsigned int bad = 0;
  GRID_STRIDE(i, n) {
    const T v = from_f32<T>(to_f32(x[i]) * alpha);  // a 16-bit result may overflow where the f32 product did not
    const bool ok = isfinite(to_f32(v));
    bad += ok ? 0u : 1u;
    y[i] = ok ? v : from_f32<T>(0.0f);
  }
  // Every thread of the block reaches here (the loop has no early exit): one atomic per warp.
  for (int o = 16; o > 0; o >>= 1) bad += __shfl_xor_sync(0xffffffffu, bad, o);
  if ((threadIdx.x & 31) == 0 && bad) atomicAdd(count, (unsigned long long)bad);
}

}  // namespace

std::string scale_filter(DType dt, const void* x, void* y, int64_t n, float alpha, unsigned long long* count) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    scale_filter_kernel<T><<<blocks, kThreads>>>((const T*)x, (T*)y, n, alpha, count);
    return launch_error("scaleFilter");
  });
}

}  // namespace cuda
}  // namespace dalle
