// Device code of the casts to and from i32 (native/cpu/copy.cc cast), free of the CUDA runtime: cast.cu launches it,
// and emu/ops_emu.cc runs it on the CPU against the CPU kernel (test/cuda/ops-emu.test.ts). i32 -> float rounds to
// nearest (as C's conversion); float -> i32 truncates toward zero and saturates, NaN giving 0 (no conversion is
// undefined), exactly as the CPU kernel.
#pragma once
#include <cstdint>

#include "grid.cuh"

namespace dalle {
namespace cuda {
namespace {

__device__ __forceinline__ int32_t f32_to_i32_saturating(float v) {
  if (!(v == v)) return 0;
  if (v >= 2147483647.0f) return INT32_MAX;
  if (v <= -2147483648.0f) return INT32_MIN;
  return (int32_t)v;
}

__global__ void cast_f32_to_i32_kernel(int32_t* dst, const float* src, int64_t n) {
  GRID_STRIDE(i, n) dst[i] = f32_to_i32_saturating(src[i]);
}

__global__ void cast_i32_to_f32_kernel(float* dst, const int32_t* src, int64_t n) {
  GRID_STRIDE(i, n) dst[i] = (float)src[i];
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
