// The device code of the block-sparse attention (attention.cu includes it; see there for the algorithm): kept in a
// header with no CUDA runtime dependence so that test/cuda/emu (attention_emu.cc) can compile the same kernels with
// g++ and run them on the CPU, one OS thread per CUDA thread with __syncthreads as a barrier, against a dense
// reference. The includer provides to_f32 / from_f32 and, on the CPU, the CUDA keywords.
#pragma once
#include "attention_plan.h"

namespace dalle {
namespace cuda {
namespace {

using namespace attn_plan;

constexpr int kTile = kAttnTile;  // 64: threads per block and tile side
constexpr int kChunk = 16;        // keys scored at a time in the forward

// Device copies of a TilePlan's arrays.
struct PlanDev {
  const int32_t* row_start;
  const int32_t* key_tile;
  const int32_t* full_q;
  const int32_t* col_start;
  const int32_t* query_tile;
  const int32_t* full_k;
};

// Rows of tile `tile` (layout positions) of src (T, width) into dst (kTile, stride) as fp32: zero past T and past width
// (up to DM), so dot products over DM need no bounds.
template <class T, int DM>
__device__ __forceinline__ void load_tile(float* dst, int stride, const T* __restrict__ src, int32_t tile, int32_t Tn,
                                          int32_t width, const MaskSpec& spec) {
  for (int idx = threadIdx.x; idx < kTile * DM; idx += blockDim.x) {
    const int r = idx / DM, d = idx % DM;
    const int32_t pos = tile * kTile + r;
    float val = 0.0f;
    if (pos < Tn && d < width) val = to_f32(src[(int64_t)layout_to_seq(spec, pos) * width + d]);
    dst[r * stride + d] = val;
  }
}

template <class T, int DM>
__global__ void __launch_bounds__(kTile) attn_fwd_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                        const T* __restrict__ v, T* __restrict__ o,
                                                        float* __restrict__ lse, int32_t Tn, int32_t D, int32_t Dv,
                                                        float scale, MaskSpec spec, PlanDev plan) {
  extern __shared__ float smem[];
  float* Ks = smem;               // (kTile, DM)
  float* Vs = smem + kTile * DM;  // (kTile, DM)
  const int tid = threadIdx.x, qt = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const T* qb = q + bh * Tn * D;
  const T* kb = k + bh * Tn * D;
  const T* vb = v + bh * Tn * Dv;
  const int32_t p = qt * kTile + tid;
  const bool valid = p < Tn;
  const int32_t si = valid ? layout_to_seq(spec, p) : 0;
  float qr[DM], acc[DM];
#pragma unroll
  for (int d = 0; d < DM; d++) {
    qr[d] = (valid && d < D) ? to_f32(qb[(int64_t)si * D + d]) * scale : 0.0f;
    acc[d] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int32_t e1 = plan.row_start[qt + 1];
  for (int32_t e = plan.row_start[qt]; e < e1; e++) {
    const int32_t kt = plan.key_tile[e];
    const bool full = plan.full_q[e] != 0;
    __syncthreads();  // every thread is done with the previous tile
    load_tile<T, DM>(Ks, DM, kb, kt, Tn, D, spec);
    load_tile<T, DM>(Vs, DM, vb, kt, Tn, Dv, spec);
    __syncthreads();
    if (!valid) continue;
    for (int j0 = 0; j0 < kTile; j0 += kChunk) {
      // The chunk's mask as bits, from a loop that is not unrolled (one copy of the mask test, not kChunk).
      uint32_t okbits = 0;
#pragma unroll 1
      for (int jj = 0; jj < kChunk; jj++) {
        const int32_t kp = kt * kTile + j0 + jj;
        okbits |= (uint32_t)(kp < Tn && (full || allowed_layout(spec, p, kp))) << jj;
      }
      if (okbits == 0) continue;
      float s[kChunk];
      float cmax = -INFINITY;
#pragma unroll
      for (int jj = 0; jj < kChunk; jj++) {
        const bool ok = (okbits >> jj) & 1u;
        const float* kr = Ks + (j0 + jj) * DM;
        float dot = 0.0f;
#pragma unroll
        for (int d = 0; d < DM; d++) dot = fmaf(qr[d], kr[d], dot);
        s[jj] = ok ? dot : -INFINITY;
        cmax = fmaxf(cmax, s[jj]);
      }
      if (cmax == -INFINITY) continue;
      const float mn = fmaxf(m, cmax);
      const float corr = expf(m - mn);  // 0 while m is -inf
      l *= corr;
#pragma unroll
      for (int d = 0; d < DM; d++) acc[d] *= corr;
#pragma unroll
      for (int jj = 0; jj < kChunk; jj++) {
        const float pj = expf(s[jj] - mn);  // 0 for masked keys
        l += pj;
        const float* vr = Vs + (j0 + jj) * DM;
#pragma unroll
        for (int d = 0; d < DM; d++) acc[d] = fmaf(pj, vr[d], acc[d]);
      }
      m = mn;
    }
  }
  if (!valid) return;
  // A row with no allowed key (impossible for these masks: the diagonal is always allowed) outputs zeros.
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  T* orow = o + (bh * Tn + si) * Dv;
#pragma unroll
  for (int d = 0; d < DM; d++) {
    if (d < Dv) orow[d] = from_f32<T>(acc[d] * inv);
  }
  lse[bh * Tn + si] = l > 0.0f ? m + logf(l) : -INFINITY;
}

// delta[row] = sum_e dO[row, e] * O[row, e], every (b, h, t) row.
template <class T>
__global__ void attn_delta_kernel(const T* __restrict__ o, const T* __restrict__ dout, float* __restrict__ delta,
                                  int64_t rows, int32_t Dv) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int32_t e = 0; e < Dv; e++) s = fmaf(to_f32(dout[r * Dv + e]), to_f32(o[r * Dv + e]), s);
    delta[r] = s;
  }
}

template <class T, int DM>
__global__ void __launch_bounds__(kTile) attn_dq_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                       const T* __restrict__ v, const T* __restrict__ dout,
                                                       const float* __restrict__ lse, const float* __restrict__ delta,
                                                       T* __restrict__ dq, int32_t Tn, int32_t D, int32_t Dv,
                                                       float scale, MaskSpec spec, PlanDev plan) {
  extern __shared__ float smem[];
  constexpr int P = DM + 1;             // padded row stride: thread t reading its own row hits bank (t + d) % 32
  float* Qo = smem;                     // (kTile, P) this block's q rows
  float* dOo = Qo + kTile * P;          // (kTile, P) this block's dO rows
  float* Ks = dOo + kTile * P;          // (kTile, DM)
  float* Vs = Ks + kTile * DM;          // (kTile, DM)
  const int tid = threadIdx.x, qt = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const T* kb = k + bh * Tn * D;
  const T* vb = v + bh * Tn * Dv;
  load_tile<T, DM>(Qo, P, q + bh * Tn * D, qt, Tn, D, spec);
  load_tile<T, DM>(dOo, P, dout + bh * Tn * Dv, qt, Tn, Dv, spec);
  __syncthreads();  // own rows are read below by their threads, written above by any thread
  const int32_t p = qt * kTile + tid;
  const bool valid = p < Tn;
  const int32_t si = valid ? layout_to_seq(spec, p) : 0;
  const float li = valid ? lse[bh * Tn + si] : -INFINITY;
  const float di = valid ? delta[bh * Tn + si] : 0.0f;
  const bool active = valid && li != -INFINITY;
  float acc[DM];
#pragma unroll
  for (int d = 0; d < DM; d++) acc[d] = 0.0f;
  const float* qo = Qo + tid * P;
  const float* go = dOo + tid * P;
  const int32_t e1 = plan.row_start[qt + 1];
  for (int32_t e = plan.row_start[qt]; e < e1; e++) {
    const int32_t kt = plan.key_tile[e];
    const bool full = plan.full_q[e] != 0;
    __syncthreads();
    load_tile<T, DM>(Ks, DM, kb, kt, Tn, D, spec);
    load_tile<T, DM>(Vs, DM, vb, kt, Tn, Dv, spec);
    __syncthreads();
    if (!active) continue;
    for (int j = 0; j < kTile; j++) {
      const int32_t kp = kt * kTile + j;
      if (kp >= Tn) break;
      if (!full && !allowed_layout(spec, p, kp)) continue;
      const float* kr = Ks + j * DM;
      const float* vr = Vs + j * DM;
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < DM; d++) {
        s = fmaf(qo[d], kr[d], s);
        dp = fmaf(go[d], vr[d], dp);
      }
      const float pr = expf(s * scale - li);
      const float ds = pr * (dp - di) * scale;
#pragma unroll
      for (int d = 0; d < DM; d++) acc[d] = fmaf(ds, kr[d], acc[d]);
    }
  }
  if (!valid) return;
  T* row = dq + (bh * Tn + si) * D;
#pragma unroll
  for (int d = 0; d < DM; d++) {
    if (d < D) row[d] = from_f32<T>(acc[d]);
  }
}

template <class T, int DM>
__global__ void __launch_bounds__(kTile) attn_dkv_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                        const T* __restrict__ v, const T* __restrict__ dout,
                                                        const float* __restrict__ lse, const float* __restrict__ delta,
                                                        T* __restrict__ dk, T* __restrict__ dv, int32_t Tn, int32_t D,
                                                        int32_t Dv, float scale, MaskSpec spec, PlanDev plan) {
  extern __shared__ float smem[];
  constexpr int P = DM + 1;
  float* Ko = smem;                // (kTile, P) this block's k rows
  float* Vo = Ko + kTile * P;      // (kTile, P) this block's v rows
  float* Qs = Vo + kTile * P;      // (kTile, DM)
  float* dOs = Qs + kTile * DM;    // (kTile, DM)
  float* Ls = dOs + kTile * DM;    // (kTile) lse of the query tile
  float* Ds = Ls + kTile;          // (kTile) delta of the query tile
  const int tid = threadIdx.x, kt = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const T* qb = q + bh * Tn * D;
  const T* gb = dout + bh * Tn * Dv;
  load_tile<T, DM>(Ko, P, k + bh * Tn * D, kt, Tn, D, spec);
  load_tile<T, DM>(Vo, P, v + bh * Tn * Dv, kt, Tn, Dv, spec);
  __syncthreads();
  const int32_t kp = kt * kTile + tid;
  const bool valid = kp < Tn;
  const int32_t sj = valid ? layout_to_seq(spec, kp) : 0;
  float ak[DM], av[DM];
#pragma unroll
  for (int d = 0; d < DM; d++) {
    ak[d] = 0.0f;
    av[d] = 0.0f;
  }
  const float* ko = Ko + tid * P;
  const float* vo = Vo + tid * P;
  const int32_t e1 = plan.col_start[kt + 1];
  for (int32_t e = plan.col_start[kt]; e < e1; e++) {
    const int32_t qt = plan.query_tile[e];
    const bool full = plan.full_k[e] != 0;
    __syncthreads();
    load_tile<T, DM>(Qs, DM, qb, qt, Tn, D, spec);
    load_tile<T, DM>(dOs, DM, gb, qt, Tn, Dv, spec);
    {
      const int32_t pos = qt * kTile + tid;
      const int32_t s = pos < Tn ? layout_to_seq(spec, pos) : 0;
      Ls[tid] = pos < Tn ? lse[bh * Tn + s] : -INFINITY;
      Ds[tid] = pos < Tn ? delta[bh * Tn + s] : 0.0f;
    }
    __syncthreads();
    if (!valid) continue;
    for (int i = 0; i < kTile; i++) {
      const int32_t qp = qt * kTile + i;
      if (qp >= Tn) break;
      if (!full && !allowed_layout(spec, qp, kp)) continue;
      const float li = Ls[i];
      if (li == -INFINITY) continue;
      const float* qr = Qs + i * DM;
      const float* gr = dOs + i * DM;
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < DM; d++) {
        s = fmaf(qr[d], ko[d], s);
        dp = fmaf(gr[d], vo[d], dp);
      }
      const float pr = expf(s * scale - li);
      const float ds = pr * (dp - Ds[i]) * scale;
#pragma unroll
      for (int d = 0; d < DM; d++) {
        av[d] = fmaf(pr, gr[d], av[d]);
        ak[d] = fmaf(ds, qr[d], ak[d]);
      }
    }
  }
  if (!valid) return;
  T* krow = dk + (bh * Tn + sj) * D;
  T* vrow = dv + (bh * Tn + sj) * Dv;
#pragma unroll
  for (int d = 0; d < DM; d++) {
    if (d < D) krow[d] = from_f32<T>(ak[d]);
    if (d < Dv) vrow[d] = from_f32<T>(av[d]);
  }
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
