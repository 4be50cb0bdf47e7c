// Device code of softmax and log-softmax over the last axis, forward and backward (native/cpu/softmax.cc: R rows of
// C columns, the same formulas), free of the CUDA runtime: softmax.cu launches it, emu/ops_emu.cc runs it on the CPU.
// One block per row (blockDim.x a power of two <= kMaxBlock), block reductions through shared memory.
//   softmax:     y = exp(x - max) / sum(exp(x - max));         dx = y * (g - sum(g * y))
//   logSoftmax:  y = x - (max + log(sum(exp(x - max))));       dx = g - exp(y) * sum(g)
#pragma once
#include <cmath>

#include "smem_reduce.cuh"

namespace dalle {
namespace cuda {
namespace {

__global__ void softmax_fwd_kernel(const float* x, float* y, int64_t C, bool log) {
  DALLE_SHARED float red[kMaxBlock];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * C;
  float* yr = y + r * C;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) m = MaxOp()(m, xr[j]);
  m = smem_reduce(m, red, MaxOp());
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += expf(xr[j] - m);
  s = smem_reduce(s, red, AddOp());
  if (log) {
    const float lse = m + logf(s);
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) yr[j] = xr[j] - lse;
  } else {
    const float inv = 1.0f / s;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) yr[j] = expf(xr[j] - m) * inv;
  }
}

// y: the forward output. dx may alias g.
__global__ void softmax_bwd_kernel(const float* y, const float* g, float* dx, int64_t C, bool log) {
  DALLE_SHARED float red[kMaxBlock];
  const int64_t r = blockIdx.x;
  const float* yr = y + r * C;
  const float* gr = g + r * C;
  float* dr = dx + r * C;
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += log ? gr[j] : gr[j] * yr[j];
  s = smem_reduce(s, red, AddOp());
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) dr[j] = log ? gr[j] - expf(yr[j]) * s : yr[j] * (gr[j] - s);
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
