// Casts between f32 and f16 / bf16 on the device (native/cpu/copy.cc): f32 -> 16-bit rounds to nearest even (NaN
// stays NaN), 16-bit -> f32 is exact.
#include <cmath>
#include <type_traits>

#include "common.cuh"

namespace dalle {
namespace cuda {
namespace {

// ---- casts (bit patterns as native/cpu/copy.cc) ----

__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN (quiet)
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);                // round to nearest even
}

template <class S, class D>
__global__ void cast_kernel(D* dst, const S* src, int64_t n) {
  GRID_STRIDE(i, n) dst[i] = from_f32<D>(to_f32(src[i]));
}

__global__ void cast_f32_bf16_kernel(uint16_t* dst, const float* src, int64_t n) {
  GRID_STRIDE(i, n) dst[i] = f32_to_bf16_bits(src[i]);
}

}  // namespace

std::string cast(void* dst, DType dd, const void* src, DType sd, int64_t n) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  if (sd == dd) return cuda_error("cast (copy)", cudaMemcpy(dst, src, n * dtype_bytes(sd), cudaMemcpyDeviceToDevice));
  if (sd == kF32 && dd == kBF16) {
    cast_f32_bf16_kernel<<<blocks, kThreads>>>((uint16_t*)dst, (const float*)src, n);
    return launch_error("cast f32 -> bf16");
  }
  return dispatch(sd, [&](auto* s_) {
    using S = std::remove_pointer_t<decltype(s_)>;
    return dispatch(dd, [&](auto* d_) {
      using D = std::remove_pointer_t<decltype(d_)>;
      cast_kernel<S, D><<<blocks, kThreads>>>((D*)dst, (const S*)src, n);
      return launch_error("cast");
    });
  });
}

}  // namespace cuda
}  // namespace dalle
