// Casts between f32, f16, bf16 and i32 on the device (native/cpu/copy.cc): f32 -> 16-bit rounds to nearest even (NaN
// stays NaN), 16-bit -> f32 is exact; i32 goes through f32 as on the CPU (cast_kernels.cuh: rounding to nearest one
// way, truncation with saturation the other).
#include <cmath>
#include <type_traits>

#include "cast_kernels.cuh"
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

// i32 <-> 16-bit, through f32 as the CPU kernel.
template <class D>
__global__ void cast_from_i32_kernel(D* dst, const int32_t* src, int64_t n) {
  GRID_STRIDE(i, n) dst[i] = from_f32<D>((float)src[i]);
}

template <class S>
__global__ void cast_to_i32_kernel(int32_t* dst, const S* src, int64_t n) {
  GRID_STRIDE(i, n) dst[i] = f32_to_i32_saturating(to_f32(src[i]));
}

std::string cast_i32(void* dst, DType dd, const void* src, DType sd, int64_t n, int64_t blocks) {
  if (sd == kI32 && dd == kF32) {
    cast_i32_to_f32_kernel<<<blocks, kThreads>>>((float*)dst, (const int32_t*)src, n);
    return launch_error("cast i32 -> f32");
  }
  if (dd == kI32 && sd == kF32) {
    cast_f32_to_i32_kernel<<<blocks, kThreads>>>((int32_t*)dst, (const float*)src, n);
    return launch_error("cast f32 -> i32");
  }
  if (sd == kI32) {
    return dispatch(dd, [&](auto* d_) {
      using D = std::remove_pointer_t<decltype(d_)>;
      cast_from_i32_kernel<D><<<blocks, kThreads>>>((D*)dst, (const int32_t*)src, n);
      return launch_error("cast i32 -> 16-bit");
    });
  }
  return dispatch(sd, [&](auto* s_) {
    using S = std::remove_pointer_t<decltype(s_)>;
    cast_to_i32_kernel<S><<<blocks, kThreads>>>((int32_t*)dst, (const S*)src, n);
    return launch_error("cast 16-bit -> i32");
  });
}

}  // namespace

std::string cast(void* dst, DType dd, const void* src, DType sd, int64_t n) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  if (sd == dd) return cuda_error("cast (copy)", cudaMemcpy(dst, src, n * dtype_bytes(sd), cudaMemcpyDeviceToDevice));
  if (sd == kI32 || dd == kI32) return cast_i32(dst, dd, src, sd, n, blocks);
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
