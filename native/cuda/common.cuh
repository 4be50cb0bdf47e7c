// Shared device helpers for the launchers (*.cu): element loads / stores in fp32 for the three element types, error
// strings, launch checks, dtype dispatch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda_ops.h"
#include "grid.cuh"

namespace dalle {
namespace cuda {

using attn_plan::elementwise_blocks;
using attn_plan::row_threads;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// "" or "<what>: <CUDA error>" for the last launch.
inline std::string launch_error(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return "";
  return std::string(what) + ": " + cudaGetErrorString(e);
}

inline std::string cuda_error(const char* what, cudaError_t e) {
  if (e == cudaSuccess) return "";
  return std::string(what) + ": " + cudaGetErrorString(e);
}

// Calls f.template operator()<T>() with T the element type of dt.
template <class F>
std::string dispatch(DType dt, F&& f) {
  switch (dt) {
    case kF32: return f((float*)nullptr);
    case kF16: return f((__half*)nullptr);
    case kBF16: return f((__nv_bfloat16*)nullptr);
    case kI32: break;  // not a float element type: cast handles it before dispatching
  }
  return "unknown dtype " + std::to_string((int)dt);
}

}  // namespace cuda
}  // namespace dalle
