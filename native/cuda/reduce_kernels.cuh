// Device code of the reductions over the middle dimension of a contiguous (outer, R, inner) block (native/cpu/reduce.cc:
// sum times a scale, in float64; max with the index of the first maximal element, a NaN counting as the maximum; and
// max's backward scatter), free of the CUDA runtime: reduce.cu launches it, emu/ops_emu.cc runs it on the CPU.
// Deterministic: every output's order of additions depends only on the shape and the block width.
#pragma once
#include <cmath>

#include "op_codes.h"
#include "smem_reduce.cuh"

namespace dalle {
namespace cuda {

namespace {

// True when v replaces the running maximum best (strictly greater, or the first NaN).
__device__ __forceinline__ bool beats(float v, float best) { return v > best || (v != v && best == best); }

// One thread per output (o, c), R in order: for inner > 1 (neighbouring threads read neighbouring columns).
__global__ void reduce_cols_kernel(int code, const float* x, int64_t outer, int64_t R, int64_t inner, float* out,
                                   int32_t* idx, double scale) {
  GRID_STRIDE(i, outer * inner) {
    const int64_t o = i / inner, c = i % inner;
    const float* p = x + o * R * inner + c;
    if (code == kReduceSum) {
      double s = 0;
      for (int64_t r = 0; r < R; r++) s += (double)p[r * inner];
      out[i] = (float)(s * scale);
    } else {
      float best = p[0];
      int32_t arg = 0;
      for (int64_t r = 1; r < R; r++) {
        const float v = p[r * inner];
        if (beats(v, best)) {
          best = v;
          arg = (int32_t)r;
        }
      }
      out[i] = best;
      if (idx) idx[i] = arg;
    }
  }
}

// A running maximum and its index; combining two keeps the lower index on ties (the first maximal element).
struct MaxArg {
  float v;
  int32_t i;
};

struct MaxArgOp {
  __device__ MaxArg operator()(MaxArg a, MaxArg b) const {
    if (b.i < 0) return a;  // an empty slot
    if (a.i < 0) return b;
    if (beats(b.v, a.v) || (b.v == a.v && b.i < a.i) || (b.v != b.v && a.v != a.v && b.i < a.i)) return b;
    return a;
  }
};

// One block per output row, for inner == 1 (a row of R contiguous values): thread t takes r = t, t + blockDim, ...
__global__ void reduce_rows_kernel(int code, const float* x, int64_t R, float* out, int32_t* idx, double scale) {
  const int64_t o = blockIdx.x;
  const float* p = x + o * R;
  if (code == kReduceSum) {
    DALLE_SHARED double red[kMaxBlock];
    double s = 0;
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) s += (double)p[r];
    s = smem_reduce(s, red, AddOp());
    if (threadIdx.x == 0) out[o] = (float)(s * scale);
  } else {
    DALLE_SHARED MaxArg red[kMaxBlock];
    MaxArg m{-INFINITY, -1};
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
      const float v = p[r];
      if (m.i < 0 || beats(v, m.v)) m = MaxArg{v, (int32_t)r};
    }
    m = smem_reduce(m, red, MaxArgOp());
    if (threadIdx.x == 0) {
      out[o] = m.v;
      if (idx) idx[o] = m.i;
    }
  }
}

// dx (outer, R, inner), already zero: dx[o, idx[o, c], c] = g[o, c]. Indices out of [0, R) are skipped and the
// smallest such position + 1 is kept in *bad (the launcher reports it).
__global__ void reduce_max_bwd_kernel(float* dx, const float* g, const int32_t* idx, int64_t outer, int64_t R,
                                      int64_t inner, unsigned long long* bad) {
  GRID_STRIDE(i, outer * inner) {
    const int32_t r = idx[i];
    if (r < 0 || r >= R) {
      atomicMin(bad, (unsigned long long)(i + 1));
      continue;
    }
    const int64_t o = i / inner, c = i % inner;
    dx[(o * R + r) * inner + c] = g[i];
  }
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
