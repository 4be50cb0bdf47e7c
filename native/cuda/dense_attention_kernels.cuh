// Device code of the dense attention with an arbitrary mask (native/cpu/attention.cc: the same arguments, formulas and
// edge cases), f32, free of the CUDA runtime: dense_attention.cu launches it, emu/ops_emu.cc runs it on the CPU.
// Keys: BH = B * H, Tq queries, Tk keys, D = query/key width, Dv = value width.
//   allowed(i, j) = (no mask or mask[i * Tk + j] != 0) and (not causal or j <= i + Tk - Tq)
//   S = scale q k^T; P = softmax over the allowed j (0 elsewhere); out = P v; lse = log-sum-exp of the allowed S of a
//   row (-inf, and a zero output row, when none is allowed).
//   Backward: dP = dO v^T, delta_i = rowsum(P * dP), dS = P * (dP - delta), dq = scale dS k, dk = scale dS^T q,
//   dv = P^T dO.
// q, k, v, dO are strided by (batch, head, time) with a contiguous last dimension (the CPU kernel's strides); out, lse,
// dq, dk, dv and delta are contiguous. No atomics: every output element is written by one thread (the same bits on
// every run).
// Work: one block a query row (forward; backward dq and delta) or a key row (backward dk, dv), its scores in dynamic
// shared memory: (D + Tk) floats for the forward, (D + 2 Tk) for dq, (D + Dv + 2 Tq) for dk / dv. The single-query
// decode step (Tq = 1, a mask row) is one block per (batch, head).
#pragma once
#include <cmath>

#include "cuda_ops.h"
#include "smem_reduce.cuh"

namespace dalle {
namespace cuda {
namespace {

constexpr int kDenseAttnThreads = 128;  // a power of two <= kMaxBlock (smem_reduce)

// DenseAttnGeometry: cuda_ops.h (shared with the launcher and the binding).
__device__ __forceinline__ bool dense_allowed(const DenseAttnGeometry& G, int64_t i, int64_t j) {
  return (!G.mask || G.mask[i * G.Tk + j] != 0) && (!G.causal || j <= i + G.Tk - G.Tq);
}

// Row i of head bh: its allowed scores s_j = scale q_i . k_j into s[0, Tk) (-inf elsewhere); returns their max
// (-inf when none is allowed). qrow: shared copy of q_i (D floats).
__device__ float dense_scores(const DenseAttnGeometry& G, const float* kh, const float* qrow, int64_t i, float* s,
                              float* red) {
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < G.Tk; j += blockDim.x) {
    float v = -INFINITY;
    if (dense_allowed(G, i, j)) {
      const float* kj = kh + j * G.ks[2];
      float dot = 0.0f;
      for (int64_t d = 0; d < G.D; d++) dot += qrow[d] * kj[d];
      v = G.scale * dot;
    }
    s[j] = v;
    m = MaxOp()(m, v);
  }
  return smem_reduce(m, red, MaxOp());
}

// Grid: BH * Tq blocks (blockIdx.x + gridDim.x * blockIdx.y), one a query row.
__global__ void dense_attn_fwd_kernel(DenseAttnGeometry G, const float* q, const float* k, const float* v, float* out,
                                      float* lse) {
  extern __shared__ float smem[];
  DALLE_SHARED float red[kMaxBlock];
  const int64_t row = blockIdx.x + (int64_t)gridDim.x * blockIdx.y;
  const int64_t bh = row / G.Tq, i = row % G.Tq, b = bh / G.H, h = bh % G.H;
  float* qrow = smem;       // (D)
  float* s = smem + G.D;    // (Tk): scores, then probabilities
  const float* qi = q + b * G.qs[0] + h * G.qs[1] + i * G.qs[2];
  for (int64_t d = threadIdx.x; d < G.D; d += blockDim.x) qrow[d] = qi[d];
  __syncthreads();
  const float m = dense_scores(G, k + b * G.ks[0] + h * G.ks[1], qrow, i, s, red);
  float* o = out + row * G.Dv;
  if (m == -INFINITY) {  // no allowed key (a NaN score is "allowed" and propagates, as on the CPU)
    for (int64_t c = threadIdx.x; c < G.Dv; c += blockDim.x) o[c] = 0.0f;
    if (threadIdx.x == 0) lse[row] = -INFINITY;
    return;
  }
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < G.Tk; j += blockDim.x) {
    const float p = s[j] == -INFINITY ? 0.0f : expf(s[j] - m);
    s[j] = p;
    sum += p;
  }
  sum = smem_reduce(sum, red, AddOp());  // its barriers also publish s
  const float inv = 1.0f / sum;
  const float* vh = v + b * G.vs[0] + h * G.vs[1];
  for (int64_t c = threadIdx.x; c < G.Dv; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < G.Tk; j++) {
      if (s[j] != 0.0f) acc += s[j] * vh[j * G.vs[2] + c];
    }
    o[c] = acc * inv;
  }
  if (threadIdx.x == 0) lse[row] = m + logf(sum);
}

// Backward, per query row (grid as the forward): P and dS of the row in shared memory, delta[row], and dq (when dq
// is not null). Shared: q_i (D), P (Tk), dS (Tk).
__global__ void dense_attn_bwd_q_kernel(DenseAttnGeometry G, const float* q, const float* k, const float* v,
                                        const float* dout, const float* lse, float* dq, float* delta) {
  extern __shared__ float smem[];
  DALLE_SHARED float red[kMaxBlock];
  const int64_t row = blockIdx.x + (int64_t)gridDim.x * blockIdx.y;
  const int64_t bh = row / G.Tq, i = row % G.Tq, b = bh / G.H, h = bh % G.H;
  float* qrow = smem;
  float* P = smem + G.D;
  float* dS = P + G.Tk;
  const float* qi = q + b * G.qs[0] + h * G.qs[1] + i * G.qs[2];
  const float* doi = dout + b * G.os[0] + h * G.os[1] + i * G.os[2];
  const float* kh = k + b * G.ks[0] + h * G.ks[1];
  const float* vh = v + b * G.vs[0] + h * G.vs[1];
  for (int64_t d = threadIdx.x; d < G.D; d += blockDim.x) qrow[d] = qi[d];
  __syncthreads();
  const float l = lse[row];
  float di = 0.0f;
  for (int64_t j = threadIdx.x; j < G.Tk; j += blockDim.x) {
    float p = 0.0f, dp = 0.0f;
    if (l != -INFINITY && dense_allowed(G, i, j)) {
      const float* kj = kh + j * G.ks[2];
      const float* vj = vh + j * G.vs[2];
      float dot = 0.0f;
      for (int64_t d = 0; d < G.D; d++) dot += qrow[d] * kj[d];
      p = expf(G.scale * dot - l);
      for (int64_t c = 0; c < G.Dv; c++) dp += doi[c] * vj[c];
    }
    P[j] = p;
    dS[j] = dp;
    di += p * dp;
  }
  di = smem_reduce(di, red, AddOp());  // its barriers also publish P and dS
  for (int64_t j = threadIdx.x; j < G.Tk; j += blockDim.x) dS[j] = P[j] * (dS[j] - di);
  if (threadIdx.x == 0) delta[row] = di;
  __syncthreads();
  if (!dq) return;
  float* dqi = dq + row * G.D;
  for (int64_t d = threadIdx.x; d < G.D; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < G.Tk; j++) {
      if (dS[j] != 0.0f) acc += dS[j] * kh[j * G.ks[2] + d];
    }
    dqi[d] = G.scale * acc;
  }
}

// Backward, per key row j of head bh (grid: BH * Tk blocks): P_ij and dS_ij of every query row i recomputed from lse
// and delta, then dk_j = scale sum_i dS_ij q_i and dv_j = sum_i P_ij dO_i (either may be null). Shared: k_j (D),
// v_j (Dv), P (Tq), dS (Tq).
__global__ void dense_attn_bwd_kv_kernel(DenseAttnGeometry G, const float* q, const float* k, const float* v,
                                         const float* dout, const float* lse, const float* delta, float* dk,
                                         float* dv) {
  extern __shared__ float smem[];
  const int64_t col = blockIdx.x + (int64_t)gridDim.x * blockIdx.y;
  const int64_t bh = col / G.Tk, j = col % G.Tk, b = bh / G.H, h = bh % G.H;
  float* krow = smem;
  float* vrow = krow + G.D;
  float* P = vrow + G.Dv;
  float* dS = P + G.Tq;
  const float* kj = k + b * G.ks[0] + h * G.ks[1] + j * G.ks[2];
  const float* vj = v + b * G.vs[0] + h * G.vs[1] + j * G.vs[2];
  const float* qh = q + b * G.qs[0] + h * G.qs[1];
  const float* oh = dout + b * G.os[0] + h * G.os[1];
  for (int64_t d = threadIdx.x; d < G.D; d += blockDim.x) krow[d] = kj[d];
  for (int64_t c = threadIdx.x; c < G.Dv; c += blockDim.x) vrow[c] = vj[c];
  __syncthreads();
  for (int64_t i = threadIdx.x; i < G.Tq; i += blockDim.x) {
    const int64_t r = bh * G.Tq + i;
    float p = 0.0f, ds = 0.0f;
    if (lse[r] != -INFINITY && dense_allowed(G, i, j)) {
      const float* qi = qh + i * G.qs[2];
      const float* doi = oh + i * G.os[2];
      float dot = 0.0f, dp = 0.0f;
      for (int64_t d = 0; d < G.D; d++) dot += qi[d] * krow[d];
      for (int64_t c = 0; c < G.Dv; c++) dp += doi[c] * vrow[c];
      p = expf(G.scale * dot - lse[r]);
      ds = p * (dp - delta[r]);
    }
    P[i] = p;
    dS[i] = ds;
  }
  __syncthreads();
  if (dv) {
    float* dvj = dv + col * G.Dv;
    for (int64_t c = threadIdx.x; c < G.Dv; c += blockDim.x) {
      float acc = 0.0f;
      for (int64_t i = 0; i < G.Tq; i++) {
        if (P[i] != 0.0f) acc += P[i] * oh[i * G.os[2] + c];
      }
      dvj[c] = acc;
    }
  }
  if (dk) {
    float* dkj = dk + col * G.D;
    for (int64_t d = threadIdx.x; d < G.D; d += blockDim.x) {
      float acc = 0.0f;
      for (int64_t i = 0; i < G.Tq; i++) {
        if (dS[i] != 0.0f) acc += dS[i] * qh[i * G.qs[2] + d];
      }
      dkj[d] = G.scale * acc;
    }
  }
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
