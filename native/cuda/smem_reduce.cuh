// Block-wide reductions through shared memory and __syncthreads only (no warp shuffles), so that the emulation
// (emu/dialect.h) runs them: blockDim.x a power of two, at most kMaxBlock. Every thread of the block must call them
// (they synchronize) and gets the result. The order of the additions depends only on blockDim.x: deterministic.
#pragma once
#include "grid.cuh"

namespace dalle {
namespace cuda {
namespace {

constexpr int kMaxBlock = 256;

// The tree reduction of v with `op` over the block; red: shared scratch of blockDim.x values.
template <class V, class Op>
__device__ V smem_reduce(V v, V* red, Op op) {
  const unsigned t = threadIdx.x;
  red[t] = v;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) red[t] = op(red[t], red[t + s]);
    __syncthreads();
  }
  const V r = red[0];
  __syncthreads();  // red may be reused at once
  return r;
}

struct AddOp {
  template <class V>
  __device__ V operator()(V a, V b) const { return a + b; }
};

// max that propagates NaN (a NaN beats any number, as the CPU kernels' `beats`)
struct MaxOp {
  __device__ float operator()(float a, float b) const { return (b > a || (b != b && a == a)) ? b : a; }
};

}  // namespace
}  // namespace cuda
}  // namespace dalle
