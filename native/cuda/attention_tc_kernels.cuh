// The block-sparse attention on tensor cores for fp16 / bf16 inputs (attention.cu dispatches here; the fp32 FMA kernels
// of attention_kernels.cuh keep fp32 inputs): the same tile lists (attention_plan.h: tiles with no allowed pair are never
// loaded, full tiles skip the mask test), the same layout (the column mask's transposed image part), the same outputs.
// Runtime free, as attention_kernels.cuh (whose PlanDev and delta kernel it uses): the includer provides to_f32 / from_f32 / bits16 of the 16-bit type and the
// warp-collective mma_m16n8k16<T> and shfl_xor (tensor_core.cuh on the GPU, emu/dialect.h on the CPU, where
// emu/attention_tc_emu.cc runs these kernels against a float64 reference).
//
// Keys: tile = 64 layout positions (kTcTile), 4 warps a block, warp w owns the 16 rows 16 w .. 16 w + 15 of the block's
// tile (query rows in the forward and dQ pass, key rows in the dK / dV pass); head widths D, Dv <= 64, zero-padded to
// 64 in shared memory, so every product is 16 x 64 by 64 x 64: 4 k-steps x 8 n-tiles of mma m16n8k16.
//
// Shared memory holds tiles as words: two 16-bit elements packed (low = even column), 32 words a 64-wide row padded to
// kTcWords = 36 so that the fragment loads of a warp (lane (g, t) reads word 36 g + t + c) hit 32 distinct banks.
// A "rows" tile is X[r][0..63] by rows (the B operand of X^T, or the A operand of X); a "cols" tile is its transpose,
// X^T[d][r0..63] (the B operand of X itself: mma wants pairs along k).
//   forward:  S = Q K^T (A: Q rows, B: K rows); O += P V (A: P from the S accumulators, B: V cols).
//   dQ pass:  S = Q K^T, dP = dO V^T (B: V rows); dS = P (dP - delta) scale; dQ += dS K (B: K cols).
//   dK / dV:  S^T = K Q^T, dP^T = V dO^T; dV += P^T dO (B: dO cols); dK += dS^T Q (B: Q cols).
// Accumulators are fp32; P and dS are rounded to the input type for their product (as FlashAttention-2); the online
// softmax, the log-sum-exp and delta are fp32.
#pragma once
#include "attention_kernels.cuh"  // PlanDev, attn_delta_kernel

namespace dalle {
namespace cuda {
namespace {

using namespace attn_plan;

constexpr int kTcTile = kAttnTile;            // 64
constexpr int kTcWarps = kTcTile / 16;        // 4
constexpr int kTcThreads = kTcWarps * 32;     // 128
constexpr int kTcWidth = kAttnMaxWidth;       // 64: D and Dv padded to it
constexpr int kTcWords = kTcWidth / 2 + 4;    // 36 words a tile row
constexpr int kTcTileWords = kTcTile * kTcWords;
// Dynamic shared memory per block (bytes).
constexpr int kTcSmemFwd = 3 * kTcTileWords * 4;                 // Q, K rows, V cols
constexpr int kTcSmemDq = 5 * kTcTileWords * 4;                  // Q, dO, K rows, K cols, V rows
constexpr int kTcSmemDkv = 6 * kTcTileWords * 4 + 2 * kTcTile * 4;  // K, V, Q, dO rows, Q, dO cols; lse, delta
static_assert(kTcWidth % 16 == 0 && kTcTile == 16 * kTcWarps, "tile shapes");

template <class T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  return (uint32_t)bits16(from_f32<T>(lo)) | ((uint32_t)bits16(from_f32<T>(hi)) << 16);
}

// The element (row pos, column d) of src (T, width) in sequence order as raw bits; 0 outside.
template <class T>
__device__ __forceinline__ uint32_t elem_bits(const T* __restrict__ src, int32_t pos, int32_t d, int32_t Tn,
                                              int32_t width, const MaskSpec& spec) {
  if (pos >= Tn || d >= width) return 0u;
  return bits16(src[(int64_t)layout_to_seq(spec, pos) * width + d]);
}

// Rows tile: dst[r][w] = (X[r][2w], X[r][2w + 1]) for the rows of layout tile `tile`.
template <class T>
__device__ __forceinline__ void load_rows(uint32_t* dst, const T* __restrict__ src, int32_t tile, int32_t Tn,
                                          int32_t width, const MaskSpec& spec) {
  for (int idx = threadIdx.x; idx < kTcTile * (kTcWidth / 2); idx += blockDim.x) {
    const int r = idx / (kTcWidth / 2), w = idx % (kTcWidth / 2);
    const int32_t pos = tile * kTcTile + r;
    dst[r * kTcWords + w] =
        elem_bits(src, pos, 2 * w, Tn, width, spec) | (elem_bits(src, pos, 2 * w + 1, Tn, width, spec) << 16);
  }
}

// Cols tile: dst[d][w] = (X[2w][d], X[2w + 1][d]) (consecutive threads read consecutive d of two rows).
template <class T>
__device__ __forceinline__ void load_cols(uint32_t* dst, const T* __restrict__ src, int32_t tile, int32_t Tn,
                                          int32_t width, const MaskSpec& spec) {
  for (int idx = threadIdx.x; idx < kTcTile * (kTcWidth / 2); idx += blockDim.x) {
    const int d = idx % kTcWidth, w = idx / kTcWidth;
    const int32_t pos = tile * kTcTile + 2 * w;
    dst[d * kTcWords + w] =
        elem_bits(src, pos, d, Tn, width, spec) | (elem_bits(src, pos + 1, d, Tn, width, spec) << 16);
  }
}

// The A fragments (4 k-steps of 16 columns) of rows r0 .. r0 + 15 of a rows tile.
__device__ __forceinline__ void frag_a_rows(uint32_t a[4][4], const uint32_t* tile, int r0, int g, int t) {
#pragma unroll
  for (int ks = 0; ks < 4; ks++) {
    const uint32_t* p = tile + (r0 + g) * kTcWords + ks * 8 + t;
    a[ks][0] = p[0];
    a[ks][1] = p[8 * kTcWords];
    a[ks][2] = p[4];
    a[ks][3] = p[8 * kTcWords + 4];
  }
}

// The A fragments of a 16 x 64 fp32 accumulator (8 n-tiles), rounded to T: the C layout of n-tiles 2 ks and 2 ks + 1
// is the A layout of k-step ks (rows g, g + 8; columns 2t, 2t + 1 and 8 + 2t, 8 + 2t + 1).
template <class T>
__device__ __forceinline__ void frag_a_acc(uint32_t a[4][4], const float c[8][4]) {
#pragma unroll
  for (int ks = 0; ks < 4; ks++) {
    a[ks][0] = pack_pair<T>(c[2 * ks][0], c[2 * ks][1]);
    a[ks][1] = pack_pair<T>(c[2 * ks][2], c[2 * ks][3]);
    a[ks][2] = pack_pair<T>(c[2 * ks + 1][0], c[2 * ks + 1][1]);
    a[ks][3] = pack_pair<T>(c[2 * ks + 1][2], c[2 * ks + 1][3]);
  }
}

// acc (16 x 64) += A (16 x 64, fragments a) * B (64 x 64), B given by bt: B^T as a rows tile (B[k][n] = bt[n][k]).
template <class T>
__device__ __forceinline__ void warp_mma(float acc[8][4], const uint32_t a[4][4], const uint32_t* bt, int g, int t) {
#pragma unroll
  for (int n = 0; n < 8; n++) {
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
      const uint32_t* p = bt + (n * 8 + g) * kTcWords + ks * 8 + t;
      const uint32_t b[2] = {p[0], p[4]};
      mma_m16n8k16<T>(acc[n], a[ks], b);
    }
  }
}

__device__ __forceinline__ void zero_acc(float acc[8][4]) {
#pragma unroll
  for (int n = 0; n < 8; n++) {
#pragma unroll
    for (int i = 0; i < 4; i++) acc[n][i] = 0.0f;
  }
}

// Accumulator element (n, i) of lane (g, t) is (row g + 8 (i / 2), column 8 n + 2 t + i % 2) of the warp's 16 x 64.
__device__ __forceinline__ int acc_col(int n, int i, int t) { return 8 * n + 2 * t + (i & 1); }

// Writes the lane's accumulator rows (16 x 64 at layout rows p[0], p[1]) to dst (T, width) in sequence order, times
// mul[h] per row.
template <class T>
__device__ __forceinline__ void store_rows(T* __restrict__ dst, const float acc[8][4], const int32_t p[2],
                                           const float mul[2], int32_t Tn, int32_t width, const MaskSpec& spec,
                                           int t) {
#pragma unroll
  for (int h = 0; h < 2; h++) {
    if (p[h] >= Tn) continue;
    T* row = dst + (int64_t)layout_to_seq(spec, p[h]) * width;
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
      for (int j = 0; j < 2; j++) {
        const int col = acc_col(n, 2 * h + j, t);
        if (col < width) row[col] = from_f32<T>(acc[n][2 * h + j] * mul[h]);
      }
    }
  }
}

// Max and sum over the 4 lanes of a quad (the lanes holding one accumulator row).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, shfl_xor(v, 1));
  return fmaxf(v, shfl_xor(v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += shfl_xor(v, 1);
  return v + shfl_xor(v, 2);
}

// Forward. Grid (query tiles, B * H), kTcThreads threads, kTcSmemFwd bytes. o (B, H, T, Dv) in T, lse (B, H, T) fp32.
template <class T>
__global__ void __launch_bounds__(kTcThreads) attn_fwd_tc_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                                const T* __restrict__ v, T* __restrict__ o,
                                                                float* __restrict__ lse, int32_t Tn, int32_t D,
                                                                int32_t Dv, float scale, MaskSpec spec, PlanDev plan) {
  extern __shared__ float smem[];
  uint32_t* Qs = reinterpret_cast<uint32_t*>(smem);  // rows
  uint32_t* Ks = Qs + kTcTileWords;                  // rows
  uint32_t* Vc = Ks + kTcTileWords;                  // cols
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, qt = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const T* kb = k + bh * Tn * D;
  const T* vb = v + bh * Tn * Dv;
  load_rows<T>(Qs, q + bh * Tn * D, qt, Tn, D, spec);
  __syncthreads();
  uint32_t qa[4][4];
  frag_a_rows(qa, Qs, 16 * warp, g, t);
  const int32_t p[2] = {qt * kTcTile + 16 * warp + g, qt * kTcTile + 16 * warp + g + 8};
  float acc[8][4], s[8][4];
  zero_acc(acc);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int32_t e1 = plan.row_start[qt + 1];
  for (int32_t e = plan.row_start[qt]; e < e1; e++) {
    const int32_t kt = plan.key_tile[e];
    const bool full = plan.full_q[e] != 0;
    const bool whole = full && (kt + 1) * kTcTile <= Tn;  // every pair allowed and in range: no test at all
    __syncthreads();  // every warp is done with the previous tile
    load_rows<T>(Ks, kb, kt, Tn, D, spec);
    load_cols<T>(Vc, vb, kt, Tn, Dv, spec);
    __syncthreads();
    zero_acc(s);
    warp_mma<T>(s, qa, Ks, g, t);
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int h = i >> 1;
        bool ok = whole;
        if (!ok) {
          const int32_t kp = kt * kTcTile + acc_col(n, i, t);
          ok = kp < Tn && (full || allowed_layout(spec, p[h], kp));
        }
        s[n][i] = ok ? s[n][i] * scale : -INFINITY;
        mx[h] = fmaxf(mx[h], s[n][i]);
      }
    }
    float corr[2], base[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const float mn = fmaxf(m[h], quad_max(mx[h]));
      base[h] = mn == -INFINITY ? 0.0f : mn;  // a row with nothing allowed yet: exp(-inf - 0) = 0, never NaN
      corr[h] = expf(m[h] - base[h]);
      m[h] = mn;
      l[h] *= corr[h];
    }
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        s[n][i] = expf(s[n][i] - base[i >> 1]);
        l[i >> 1] += s[n][i];
        acc[n][i] *= corr[i >> 1];
      }
    }
    uint32_t pa[4][4];
    frag_a_acc<T>(pa, s);
    warp_mma<T>(acc, pa, Vc, g, t);
  }
  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; h++) {
    l[h] = quad_sum(l[h]);
    inv[h] = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;  // no allowed key (impossible for these masks): zeros
  }
  store_rows<T>(o + bh * Tn * Dv, acc, p, inv, Tn, Dv, spec, t);
  if (t == 0) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      if (p[h] < Tn) lse[bh * Tn + layout_to_seq(spec, p[h])] = l[h] > 0.0f ? m[h] + logf(l[h]) : -INFINITY;
    }
  }
}

// dQ pass. Grid (query tiles, B * H), kTcThreads threads, kTcSmemDq bytes. delta = rowsum(dO * O) first
// (attn_delta_kernel of attention_kernels.cuh).
template <class T>
__global__ void __launch_bounds__(kTcThreads) attn_dq_tc_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                               const T* __restrict__ v, const T* __restrict__ dout,
                                                               const float* __restrict__ lse,
                                                               const float* __restrict__ delta, T* __restrict__ dq,
                                                               int32_t Tn, int32_t D, int32_t Dv, float scale,
                                                               MaskSpec spec, PlanDev plan) {
  extern __shared__ float smem[];
  uint32_t* Qs = reinterpret_cast<uint32_t*>(smem);  // rows (own)
  uint32_t* Gs = Qs + kTcTileWords;                  // dO rows (own)
  uint32_t* Ks = Gs + kTcTileWords;                  // rows
  uint32_t* Kc = Ks + kTcTileWords;                  // cols
  uint32_t* Vs = Kc + kTcTileWords;                  // rows
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, qt = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const T* kb = k + bh * Tn * D;
  const T* vb = v + bh * Tn * Dv;
  load_rows<T>(Qs, q + bh * Tn * D, qt, Tn, D, spec);
  load_rows<T>(Gs, dout + bh * Tn * Dv, qt, Tn, Dv, spec);
  __syncthreads();
  uint32_t qa[4][4], ga[4][4];
  frag_a_rows(qa, Qs, 16 * warp, g, t);
  frag_a_rows(ga, Gs, 16 * warp, g, t);
  const int32_t p[2] = {qt * kTcTile + 16 * warp + g, qt * kTcTile + 16 * warp + g + 8};
  float li[2], di[2];
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int32_t si = p[h] < Tn ? layout_to_seq(spec, p[h]) : 0;
    li[h] = p[h] < Tn ? lse[bh * Tn + si] : -INFINITY;  // -inf: the row takes no part (P = 0)
    di[h] = p[h] < Tn ? delta[bh * Tn + si] : 0.0f;
  }
  float acc[8][4], s[8][4], dp[8][4];
  zero_acc(acc);
  const int32_t e1 = plan.row_start[qt + 1];
  for (int32_t e = plan.row_start[qt]; e < e1; e++) {
    const int32_t kt = plan.key_tile[e];
    const bool full = plan.full_q[e] != 0;
    const bool whole = full && (kt + 1) * kTcTile <= Tn;
    __syncthreads();
    load_rows<T>(Ks, kb, kt, Tn, D, spec);
    load_cols<T>(Kc, kb, kt, Tn, D, spec);
    load_rows<T>(Vs, vb, kt, Tn, Dv, spec);
    __syncthreads();
    zero_acc(s);
    zero_acc(dp);
    warp_mma<T>(s, qa, Ks, g, t);
    warp_mma<T>(dp, ga, Vs, g, t);
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int h = i >> 1;
        bool ok = whole;
        if (!ok) {
          const int32_t kp = kt * kTcTile + acc_col(n, i, t);
          ok = kp < Tn && (full || allowed_layout(spec, p[h], kp));
        }
        ok = ok && li[h] != -INFINITY;
        const float pr = ok ? expf(s[n][i] * scale - li[h]) : 0.0f;
        s[n][i] = pr * (dp[n][i] - di[h]) * scale;  // dS
      }
    }
    uint32_t sa[4][4];
    frag_a_acc<T>(sa, s);
    warp_mma<T>(acc, sa, Kc, g, t);
  }
  const float one[2] = {1.0f, 1.0f};
  store_rows<T>(dq + bh * Tn * D, acc, p, one, Tn, D, spec, t);
}

// dK / dV pass. Grid (key tiles, B * H), kTcThreads threads, kTcSmemDkv bytes; walks the query tiles that list the
// block's key tile (the plan's by-key lists): no atomics.
template <class T>
__global__ void __launch_bounds__(kTcThreads) attn_dkv_tc_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                                const T* __restrict__ v, const T* __restrict__ dout,
                                                                const float* __restrict__ lse,
                                                                const float* __restrict__ delta, T* __restrict__ dk,
                                                                T* __restrict__ dv, int32_t Tn, int32_t D, int32_t Dv,
                                                                float scale, MaskSpec spec, PlanDev plan) {
  extern __shared__ float smem[];
  uint32_t* Ks = reinterpret_cast<uint32_t*>(smem);  // rows (own)
  uint32_t* Vs = Ks + kTcTileWords;                  // rows (own)
  uint32_t* Qs = Vs + kTcTileWords;                  // rows
  uint32_t* Gs = Qs + kTcTileWords;                  // dO rows
  uint32_t* Qc = Gs + kTcTileWords;                  // cols
  uint32_t* Gc = Qc + kTcTileWords;                  // dO cols
  float* Ls = reinterpret_cast<float*>(Gc + kTcTileWords);  // (kTcTile) lse of the query tile
  float* Ds = Ls + kTcTile;                                 // (kTcTile) delta of the query tile
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, kt = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const T* qb = q + bh * Tn * D;
  const T* gb = dout + bh * Tn * Dv;
  load_rows<T>(Ks, k + bh * Tn * D, kt, Tn, D, spec);
  load_rows<T>(Vs, v + bh * Tn * Dv, kt, Tn, Dv, spec);
  __syncthreads();
  uint32_t ka[4][4], va[4][4];
  frag_a_rows(ka, Ks, 16 * warp, g, t);
  frag_a_rows(va, Vs, 16 * warp, g, t);
  const int32_t kp[2] = {kt * kTcTile + 16 * warp + g, kt * kTcTile + 16 * warp + g + 8};
  float ak[8][4], av[8][4], s[8][4], dp[8][4];
  zero_acc(ak);
  zero_acc(av);
  const int32_t e1 = plan.col_start[kt + 1];
  for (int32_t e = plan.col_start[kt]; e < e1; e++) {
    const int32_t qt = plan.query_tile[e];
    const bool full = plan.full_k[e] != 0;
    const bool whole = full && (qt + 1) * kTcTile <= Tn;
    __syncthreads();
    load_rows<T>(Qs, qb, qt, Tn, D, spec);
    load_rows<T>(Gs, gb, qt, Tn, Dv, spec);
    load_cols<T>(Qc, qb, qt, Tn, D, spec);
    load_cols<T>(Gc, gb, qt, Tn, Dv, spec);
    for (int i = threadIdx.x; i < kTcTile; i += blockDim.x) {
      const int32_t pos = qt * kTcTile + i;
      const int32_t si = pos < Tn ? layout_to_seq(spec, pos) : 0;
      Ls[i] = pos < Tn ? lse[bh * Tn + si] : -INFINITY;
      Ds[i] = pos < Tn ? delta[bh * Tn + si] : 0.0f;
    }
    __syncthreads();
    zero_acc(s);
    zero_acc(dp);
    warp_mma<T>(s, ka, Qs, g, t);   // S^T (keys x queries)
    warp_mma<T>(dp, va, Gs, g, t);  // dP^T
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int h = i >> 1, col = acc_col(n, i, t);
        const float li = Ls[col];
        bool ok = whole;
        if (!ok) {
          const int32_t qp = qt * kTcTile + col;
          ok = qp < Tn && (full || allowed_layout(spec, qp, kp[h]));
        }
        ok = ok && li != -INFINITY;
        const float pr = ok ? expf(s[n][i] * scale - li) : 0.0f;
        s[n][i] = pr;                                      // P^T
        dp[n][i] = pr * (dp[n][i] - Ds[col]) * scale;      // dS^T
      }
    }
    uint32_t pa[4][4];
    frag_a_acc<T>(pa, s);
    warp_mma<T>(av, pa, Gc, g, t);
    frag_a_acc<T>(pa, dp);
    warp_mma<T>(ak, pa, Qc, g, t);
  }
  const float one[2] = {1.0f, 1.0f};
  store_rows<T>(dk + bh * Tn * D, ak, kp, one, Tn, D, spec, t);
  store_rows<T>(dv + bh * Tn * Dv, av, kp, one, Tn, Dv, spec, t);
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
