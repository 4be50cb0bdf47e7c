// KV-cache decode attention for generation (attention.cu attention_decode): one new query row per sequence, at
// sequence position `pos`, against the cached keys / values of exactly the positions the layer's mask lets it see
// (attention_plan.h row_runs: the text, then the image runs of its row; never a disallowed position, so a cache slot
// the mask excludes is never read). The same row as the forward's row pos (as src/core/models/prior/attention.ts
// priorCachedAttention, which applies that row of the dense mask).
// Keys: B batch, H heads, D query / key width, Dv value width (<= kAttnMaxWidth), Tc cache capacity.
//   q (B, H, 1, D) and the caches k (B', H, Tc, D), v (B', H, Tc, Dv) by element strides (batch, head[, time]) with a
//   contiguous last dimension (the prior's PriorKvCache is (B', H, Tc, D) contiguous, B <= B'); o (B, H, 1, Dv)
//   contiguous, lse (B, H) fp32. Elements fp32, fp16 or bf16 (q, caches and o alike); arithmetic fp32.
// One block of kDecodeThreads threads per (b, h). The allowed keys are walked in chunks of kDecodeThreads: each thread
// scores one key (q.k over D), the chunk's max and sum are block reductions (smem_reduce.cuh), and threads d < Dv
// accumulate column d of P V with the online-softmax rescale. Deterministic (fixed reduction order). Runtime free:
// emu/attention_decode_emu.cc runs it on the CPU against a float64 reference.
#pragma once
#include "attention_plan.h"
#include "grid.cuh"
#include "smem_reduce.cuh"

namespace dalle {
namespace cuda {
namespace {

using namespace attn_plan;

constexpr int kDecodeThreads = 128;  // a power of two (smem_reduce), >= kAttnMaxWidth (one thread per value column)
constexpr int kDecodeMaxRuns = 64;   // runs of allowed keys of a row (max_row_runs; the conv mask has 1 + (k + 1) / 2)
static_assert(kDecodeThreads >= kAttnMaxWidth && kDecodeThreads <= kMaxBlock, "decode block shape");

// Element strides of a (B, H, T, width) operand: batch, head, time (the last dimension is contiguous).
struct DecodeStrides {
  int64_t b, h, t;
};

template <class T>
__global__ void __launch_bounds__(kDecodeThreads) attn_decode_kernel(
    const T* __restrict__ q, DecodeStrides qs, const T* __restrict__ k, DecodeStrides ks, const T* __restrict__ v,
    DecodeStrides vs, T* __restrict__ o, float* __restrict__ lse, int32_t H, int32_t pos, int32_t D, int32_t Dv,
    float scale, MaskSpec spec) {
  DALLE_SHARED float qv[kAttnMaxWidth];          // scale * q
  DALLE_SHARED int32_t lo[kDecodeMaxRuns], hi[kDecodeMaxRuns];  // allowed keys: layout runs [lo, hi]
  DALLE_SHARED int32_t n_runs;
  DALLE_SHARED float prob[kDecodeThreads];       // the chunk's exp(score - m)
  DALLE_SHARED int32_t key_seq[kDecodeThreads];  // the chunk's key positions (sequence order)
  DALLE_SHARED float red[kDecodeThreads];
  const int tid = threadIdx.x;
  const int64_t bh = blockIdx.x, b = bh / H, h = bh % H;
  const T* kb = k + b * ks.b + h * ks.h;
  const T* vb = v + b * vs.b + h * vs.h;
  if (tid == 0) n_runs = row_runs(spec, layout_to_seq(spec, pos), lo, hi);  // (sequence -> layout: an involution)
  if (tid < D) qv[tid] = to_f32(q[b * qs.b + h * qs.h + tid]) * scale;
  __syncthreads();
  int32_t total = 0;
  for (int r = 0; r < n_runs; r++) total += hi[r] - lo[r] + 1;
  float m = -INFINITY, l = 0.0f, acc = 0.0f;  // m, l alike in every thread; acc: column tid of the output
  for (int32_t c0 = 0; c0 < total; c0 += kDecodeThreads) {
    // This thread's key: the (c0 + tid)-th allowed one, found by walking the runs.
    float s = -INFINITY;
    int32_t kseq = 0;
    int32_t u = c0 + tid;
    if (u < total) {
      int r = 0;
      while (u > hi[r] - lo[r]) {
        u -= hi[r] - lo[r] + 1;
        r++;
      }
      kseq = layout_to_seq(spec, lo[r] + u);
      const T* kr = kb + (int64_t)kseq * ks.t;
      float dot = 0.0f;
      for (int d = 0; d < D; d++) dot = fmaf(qv[d], to_f32(kr[d]), dot);
      s = dot;
    }
    const float mn = fmaxf(m, smem_reduce(s, red, MaxOp()));  // finite: every chunk holds an allowed key
    const float corr = expf(m - mn);                            // 0 while m is -inf
    const float pj = expf(s - mn);                              // 0 past the last key
    prob[tid] = pj;
    key_seq[tid] = kseq;
    l = l * corr + smem_reduce(pj, red, AddOp());  // its barriers also publish prob and key_seq
    m = mn;
    if (tid < Dv) {
      const int32_t n = total - c0 < kDecodeThreads ? total - c0 : kDecodeThreads;
      float a = acc * corr;
      for (int j = 0; j < n; j++) a = fmaf(prob[j], to_f32(vb[(int64_t)key_seq[j] * vs.t + tid]), a);
      acc = a;
    }
    __syncthreads();  // prob and key_seq are read before the next chunk writes them
  }
  // The query position itself is always allowed, so l > 0.
  if (tid < Dv) o[bh * Dv + tid] = from_f32<T>(acc / l);
  if (tid == 0) lse[bh] = m + logf(l);
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
