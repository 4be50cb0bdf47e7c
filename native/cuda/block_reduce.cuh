// Block-wide sum and max with warp shuffles (norm.cu, loss.cu, conv.cu): blockDim.x a multiple of 32, at most 1024.
// Device code for nvcc only (the emulation dialect has no warp shuffles; emulated kernels use smem_reduce.cuh).
#pragma once
#include "common.cuh"

namespace dalle {
namespace cuda {
namespace {

template <class V>
__device__ __forceinline__ V warp_sum(V v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum over the block, returned to every thread. `red` is shared scratch of 32 values.
template <class V>
__device__ V block_sum(V v, V* red) {
  v = warp_sum(v);
  if (blockDim.x == 32) return v;
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[w] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : (V)0;
  return warp_sum(v);
}

__device__ float block_max(float v, float* red) {
  v = warp_max(v);
  if (blockDim.x == 32) return v;
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[w] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : -INFINITY;
  return warp_max(v);
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
