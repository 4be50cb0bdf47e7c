// Dense attention with an arbitrary (Tq, Tk) mask shared by every batch entry and head, forward and backward.
// Keys: B = batch, H = heads, Tq = queries, Tk = keys, D = query/key width, Dv = value width, BH = B * H.
//   q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv) -> out (B, H, Tq, Dv); lse (B, H, Tq) saved for the backward.
//   S = scale * q k^T; allowed(i, j) = mask[i, j] != 0 (no mask: all) and, when causal, j <= i + Tk - Tq (the
//   queries are the last Tq of Tk positions, as in KV-cached generation; Tq == Tk is the usual lower triangle).
//   P = softmax over allowed j (0 elsewhere), out = P v. A row with no allowed key outputs zeros (lse = -inf).
// Backward (per (b, h)):  dP = dO v^T, dS = P * (dP - rowsum(dP * P)), dq = scale dS k, dk = scale dS^T q, dv = P^T dO.
//
// Memory: the forward saves only the log-sum-exp per row, not P. P is (BH, Tq, Tk), quadratic in the sequence
// (21 MB a layer for the small prior, 1.6 GB a layer for the paper's 62 heads x 1280^2 at batch 4, kept for every
// layer until the backward); recomputing S = q k^T costs the backward one extra GEMM (five instead of four) and a
// row of exps. The backward materializes P and dS for a group of heads at a time (a workspace of at most 64 MB
// unless one head needs more, reused by the caching allocator) so that dk and dv are plain GEMMs over whole key
// columns: no partial sums, no atomics.
// Work: the forward runs (b, h, block of 64 queries) tasks in parallel; each computes only the key range its rows may
// see (the union of their allowed ranges: causal blocks skip the upper triangle). The backward runs (b, h, query
// block) tasks for P, dS and dq, then (b, h, key block of 64) tasks for dk and dv over the query rows that may see
// them. Each output element is written by exactly one GEMM call (whose result does not depend on its thread count):
// same bits for any thread count.
// q, k, v and dO may be strided in (b, h, t) (e.g. permuted views of a (B, T, H, D) projection); their last dimension
// is contiguous. out, lse and the gradients are contiguous.
#include <atomic>
#include <cmath>
#include <cstring>

#if defined(DALLE_X86)
#include <immintrin.h>
#endif

#include "allocator.h"
#include "cpu_features.h"
#include "gemm.h"
#include "napi_util.h"
#include "threadpool.h"

namespace dalle {

// Row kernels (softmax.cc).
float row_max(const float* x, int64_t n);
float row_exp(const float* x, float* y, int64_t n, float shift, float mul);
void row_affine(const float* x, float* y, int64_t n, float s, float c);
float row_dot(const float* a, const float* b, int64_t n);
void row_softmax_bwd(const float* y, const float* g, float* dx, int64_t n, float s);
void row_mask(float* s, const int32_t* allowed, int64_t n);

namespace {

constexpr int64_t kBlock = 64;                      // queries (forward, backward phase 1) or keys (phase 2) a task
constexpr int64_t kWorkspaceBytes = int64_t(64) << 20;  // backward: P and dS for this many bytes of heads at once

template <class T>
struct Buffer {
  T* p = nullptr;
  size_t bytes = 0;
  explicit Buffer(int64_t n) : bytes((size_t)(n > 0 ? n : 1) * sizeof(T)) { p = static_cast<T*>(cache_alloc(bytes)); }
  ~Buffer() { cache_free(p, bytes); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

struct Strides {
  int64_t b, h, t;
};

Strides arg_strides(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t width) {
  std::vector<int64_t> s = arg_i64_array(info, i, op);
  DALLE_CHECK(s.size() == 3, op, "%s needs 3 strides (batch, head, time), got %zu", name, s.size());
  DALLE_CHECK(s[2] >= width, op, "%s: row stride %lld is below the row width %lld", name, (long long)s[2],
              (long long)width);
  return {s[0], s[1], s[2]};
}

// Shapes and the allowed key range of every query row: [lo[i], hi[i]) (empty: lo = hi = 0), and the query range of
// every key column, [clo[j], chi[j]). With a mask the ranges bound the allowed set; the mask is applied within them.
struct Geometry {
  int64_t B, H, Tq, Tk, D, Dv;
  float scale;
  bool causal;
  const int32_t* mask;  // (Tq, Tk) or null
  int32_t *lo, *hi, *clo, *chi;

  void compute_ranges() {
    for (int64_t j = 0; j < Tk; j++) clo[j] = (int32_t)Tq, chi[j] = 0;
    for (int64_t i = 0; i < Tq; i++) {
      int64_t end = causal ? i + Tk - Tq + 1 : Tk;
      if (end > Tk) end = Tk;
      if (end < 0) end = 0;
      int64_t a = 0, b = end;
      if (mask) {
        const int32_t* m = mask + i * Tk;
        while (a < b && m[a] == 0) a++;
        while (b > a && m[b - 1] == 0) b--;
      }
      if (a >= b) a = b = 0;
      lo[i] = (int32_t)a, hi[i] = (int32_t)b;
      for (int64_t j = a; j < b; j++) {
        if (mask && mask[i * Tk + j] == 0) continue;
        if (clo[j] > i) clo[j] = (int32_t)i;
        chi[j] = (int32_t)(i + 1);
      }
    }
    for (int64_t j = 0; j < Tk; j++)
      if (clo[j] >= chi[j]) clo[j] = chi[j] = 0;
  }

  // Union of the key ranges of query rows [i0, i1): [*kb, *ke), empty when *kb >= *ke.
  void key_range(int64_t i0, int64_t i1, int64_t* kb, int64_t* ke) const {
    int64_t b = Tk, e = 0;
    for (int64_t i = i0; i < i1; i++) {
      if (lo[i] >= hi[i]) continue;
      if (lo[i] < b) b = lo[i];
      if (hi[i] > e) e = hi[i];
    }
    *kb = b, *ke = e;
  }

  void query_range(int64_t j0, int64_t j1, int64_t* qb, int64_t* qe) const {
    int64_t b = Tq, e = 0;
    for (int64_t j = j0; j < j1; j++) {
      if (clo[j] >= chi[j]) continue;
      if (clo[j] < b) b = clo[j];
      if (chi[j] > e) e = chi[j];
    }
    *qb = b, *qe = e;
  }

  // Row i of S (holding columns [kb, ke)): masked entries to -inf, except that columns outside [lo, hi) are left for
  // the caller to zero. Returns false when the row has no allowed key.
  bool mask_row(float* s, int64_t i, int64_t kb) const {
    if (lo[i] >= hi[i]) return false;
    if (mask) row_mask(s + (lo[i] - kb), mask + i * Tk + lo[i], hi[i] - lo[i]);
    return true;
  }
};

// Zeroes row entries [kb, ke) outside [a, b) of a row that holds columns [kb, ke) at s.
inline void zero_outside(float* s, int64_t kb, int64_t ke, int64_t a, int64_t b) {
  if (a > kb) memset(s, 0, (a - kb) * sizeof(float));
  if (ke > b) memset(s + (b - kb), 0, (ke - b) * sizeof(float));
}

// Few query rows (KV-cached decoding: Tq = 1 with a row of a sparse layer mask) take the gathered path below instead of
// the blocked GEMMs: a GEMM for one query row computes q k^T over the whole key range [lo, hi) (a column layer of the
// prior allows about L + G of its L + i keys) and pays its packing for a single row. Here each row's allowed keys are
// listed once (the mask is shared by every (b, h)), and each (b, h, row) computes only their dot products, the
// softmax over them, and the weighted sum of their values.
constexpr int64_t kGatherMaxRows = 4;

// keys (Tq, Tk) i32 scratch: row i's allowed key indices in ascending order in keys[i * Tk, ...); returns nothing,
// counts in count[i] (0 for a row with no allowed key).
void list_allowed_keys(const Geometry& G, int32_t* keys, int32_t* count) {
  for (int64_t i = 0; i < G.Tq; i++) {
    int32_t* row = keys + i * G.Tk;
    int32_t n = 0;
    for (int64_t j = G.lo[i]; j < G.hi[i]; j++)
      if (!G.mask || G.mask[i * G.Tk + j] != 0) row[n++] = (int32_t)j;
    count[i] = n;
  }
}

// One query row of one (b, h) over its n allowed keys (ascending indices `keys`): out (Dv) = softmax(scale q k^T) v,
// *lse = log-sum-exp of the scores. s: n floats of scratch. Same arithmetic for any batch size and thread count.
void gathered_row(const float* q, const float* k, int64_t kt, const float* v, int64_t vt, const int32_t* keys,
                  int64_t n, int64_t D, int64_t Dv, float scale, float* s, float* out, float* lse) {
  if (n == 0) {
    memset(out, 0, Dv * sizeof(float));
    *lse = -INFINITY;
    return;
  }
  for (int64_t j = 0; j < n; j++) s[j] = scale * row_dot(q, k + keys[j] * kt, D);
  const float m = row_max(s, n);
  const float sum = row_exp(s, s, n, m, 1.0f);
  const float inv = 1.0f / sum;
  memset(out, 0, Dv * sizeof(float));
  for (int64_t j = 0; j < n; j++) {
    const float p = s[j] * inv;
    const float* vr = v + keys[j] * vt;
    for (int64_t e = 0; e < Dv; e++) out[e] += p * vr[e];
  }
  *lse = m + std::log(sum);
}

#if defined(DALLE_X86)
// gathered_row with AVX-512 dot products and value sums (this file is built for the baseline ISA; the decode step
// spends most of its attention time here, so this one function is compiled for AVX-512 and picked at run time).
// Each score is one 16-lane accumulation over D and a horizontal sum; each output lane sums p_j v_j in key order.
__attribute__((target("avx512f,fma"))) void gathered_row_avx512(const float* q, const float* k, int64_t kt,
                                                                const float* v, int64_t vt, const int32_t* keys,
                                                                int64_t n, int64_t D, int64_t Dv, float scale,
                                                                float* s, float* out, float* lse) {
  if (n == 0) {
    memset(out, 0, Dv * sizeof(float));
    *lse = -INFINITY;
    return;
  }
  const int64_t Df = D & ~int64_t(15), Dvf = Dv & ~int64_t(15);
  const __mmask16 dtail = (__mmask16)((1u << (D - Df)) - 1), vtail = (__mmask16)((1u << (Dv - Dvf)) - 1);
  for (int64_t j = 0; j < n; j++) {
    const float* kr = k + keys[j] * kt;
    __m512 acc = _mm512_setzero_ps();
    int64_t d = 0;
    for (; d < Df; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), _mm512_loadu_ps(kr + d), acc);
    if (dtail) acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(dtail, q + d), _mm512_maskz_loadu_ps(dtail, kr + d), acc);
    s[j] = scale * _mm512_reduce_add_ps(acc);
  }
  const float m = row_max(s, n);
  const float sum = row_exp(s, s, n, m, 1.0f);
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; j++) s[j] *= inv;
  for (int64_t e = 0; e < Dv; e += 16) {
    const __mmask16 lanes = e < Dvf ? (__mmask16)0xFFFF : vtail;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j++)
      acc = _mm512_fmadd_ps(_mm512_set1_ps(s[j]), _mm512_maskz_loadu_ps(lanes, v + keys[j] * vt + e), acc);
    _mm512_mask_storeu_ps(out + e, lanes, acc);
  }
  *lse = m + std::log(sum);
}
#endif

// The row kernel for the active ISA.
using GatheredRowFn = void (*)(const float*, const float*, int64_t, const float*, int64_t, const int32_t*, int64_t,
                               int64_t, int64_t, float, float*, float*, float*);
GatheredRowFn gathered_row_kernel() {
#if defined(DALLE_X86)
  if (active_isa() == Isa::Avx512) return &gathered_row_avx512;
#endif
  return &gathered_row;
}

Geometry read_geometry(const Napi::CallbackInfo& info, size_t i, const char* op) {
  Geometry g{};
  g.B = arg_i64(info, i, op), g.H = arg_i64(info, i + 1, op), g.Tq = arg_i64(info, i + 2, op);
  g.Tk = arg_i64(info, i + 3, op), g.D = arg_i64(info, i + 4, op), g.Dv = arg_i64(info, i + 5, op);
  g.scale = (float)arg_f64(info, i + 6, op);
  g.causal = arg_bool(info, i + 7, op);
  DALLE_CHECK(g.B >= 0 && g.H >= 0 && g.Tq >= 0 && g.Tk >= 0 && g.D >= 1 && g.Dv >= 1, op,
              "bad sizes B=%lld H=%lld Tq=%lld Tk=%lld D=%lld Dv=%lld", (long long)g.B, (long long)g.H,
              (long long)g.Tq, (long long)g.Tk, (long long)g.D, (long long)g.Dv);
  DALLE_CHECK(g.Tq < (int64_t(1) << 31) && g.Tk < (int64_t(1) << 31), op, "sequence too long (Tq=%lld, Tk=%lld)",
              (long long)g.Tq, (long long)g.Tk);
  return g;
}

// attentionForward(q, qStrides, k, kStrides, v, vStrides, mask|null, out, lse, B, H, Tq, Tk, D, Dv, scale, causal)
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  const char* op = "attention";
  const float* q = arg_data<const float>(info, 0, op);
  const float* k = arg_data<const float>(info, 2, op);
  const float* v = arg_data<const float>(info, 4, op);
  const int32_t* mask = arg_data<const int32_t>(info, 6, op);
  float* out = arg_data<float>(info, 7, op);
  float* lse = arg_data<float>(info, 8, op);
  Geometry G = read_geometry(info, 9, op);
  Strides qs = arg_strides(info, 1, op, "q", G.D), ks = arg_strides(info, 3, op, "k", G.D),
          vs = arg_strides(info, 5, op, "v", G.Dv);
  const int64_t BH = G.B * G.H, Tq = G.Tq, Tk = G.Tk, D = G.D, Dv = G.Dv;
  if (BH * Tq == 0) return info.Env().Undefined();
  DALLE_CHECK(q && out && lse && (Tk == 0 || (k && v)), op, "null address (B=%lld H=%lld Tq=%lld Tk=%lld)",
              (long long)G.B, (long long)G.H, (long long)Tq, (long long)Tk);
  G.mask = mask;
  Buffer<int32_t> ranges(2 * Tq + 2 * Tk);
  G.lo = ranges.p, G.hi = G.lo + Tq, G.clo = G.hi + Tq, G.chi = G.clo + Tk;
  G.compute_ranges();

  if (Tq <= kGatherMaxRows) {
    Buffer<int32_t> keys(Tq * Tk + Tq);
    int32_t* count = keys.p + Tq * Tk;
    list_allowed_keys(G, keys.p, count);
    int64_t work = 0;  // multiply-adds of one (b, h)
    for (int64_t i = 0; i < Tq; i++) work += count[i] * (D + Dv);
    const int64_t grain = 1 + (int64_t(1) << 15) / (work > 0 ? work : 1);  // tasks of about 32k multiply-adds
    const size_t row_bytes = (size_t)(Tk > 0 ? Tk : 1) * sizeof(float);   // one row's scores
    std::atomic<bool> no_memory{false};
    const GatheredRowFn row_kernel = gathered_row_kernel();
    parallel_for(BH, grain, [&](int64_t t0, int64_t t1) {
      float* s;
      try {  // nothing may throw inside a pool thread: report after the parallel region
        s = static_cast<float*>(cache_alloc(row_bytes));
      } catch (...) {
        no_memory = true;
        return;
      }
      for (int64_t bh = t0; bh < t1; bh++) {
        const int64_t b = bh / G.H, h = bh % G.H;
        const float* qb = q + b * qs.b + h * qs.h;
        const float* kbp = k + b * ks.b + h * ks.h;
        const float* vb = v + b * vs.b + h * vs.h;
        for (int64_t i = 0; i < Tq; i++)
          row_kernel(qb + i * qs.t, kbp, ks.t, vb, vs.t, keys.p + i * Tk, count[i], D, Dv, G.scale, s,
                       out + (bh * Tq + i) * Dv, lse + bh * Tq + i);
      }
      cache_free(s, row_bytes);
    });
    DALLE_CHECK(!no_memory, op, "out of memory for a %zu-byte row of scores (Tk=%lld)", row_bytes, (long long)Tk);
    return info.Env().Undefined();
  }

  const int64_t nqb = (Tq + kBlock - 1) / kBlock;
  const size_t ws_bytes = (size_t)(kBlock * (Tk > 0 ? Tk : 1)) * sizeof(float);  // S, then P, of a query block
  std::atomic<bool> out_of_memory{false};
  parallel_for(BH * nqb, 1, [&](int64_t t0, int64_t t1) {
    float* ws;
    try {  // nothing may throw inside a pool thread: report after the parallel region
      ws = static_cast<float*>(cache_alloc(ws_bytes));
    } catch (...) {
      out_of_memory = true;
      return;
    }
    for (int64_t t = t0; t < t1; t++) {
      const int64_t bh = t / nqb, b = bh / G.H, h = bh % G.H;
      const int64_t i0 = (t % nqb) * kBlock, i1 = i0 + kBlock < Tq ? i0 + kBlock : Tq, rows = i1 - i0;
      const float* qb = q + b * qs.b + h * qs.h;
      const float* kbp = k + b * ks.b + h * ks.h;
      const float* vb = v + b * vs.b + h * vs.h;
      float* ob = out + (bh * Tq + i0) * Dv;
      float* lb = lse + bh * Tq;
      int64_t kb, ke;
      G.key_range(i0, i1, &kb, &ke);
      if (kb >= ke) {
        memset(ob, 0, rows * Dv * sizeof(float));
        for (int64_t i = i0; i < i1; i++) lb[i] = -INFINITY;
        continue;
      }
      const int64_t W = ke - kb;
      float* S = ws;
      sgemm(false, true, rows, W, D, G.scale, qb + i0 * qs.t, qs.t, kbp + kb * ks.t, ks.t, 0.0f, S, W);
      for (int64_t i = i0; i < i1; i++) {
        float* s = S + (i - i0) * W;
        if (!G.mask_row(s, i, kb)) {
          memset(s, 0, W * sizeof(float));
          lb[i] = -INFINITY;
          continue;
        }
        zero_outside(s, kb, ke, G.lo[i], G.hi[i]);
        float* sr = s + (G.lo[i] - kb);
        const int64_t n = G.hi[i] - G.lo[i];
        float m = row_max(sr, n);
        float sum = row_exp(sr, sr, n, m, 1.0f);
        row_affine(sr, sr, n, 1.0f / sum, 0.0f);
        lb[i] = m + std::log(sum);
      }
      sgemm(false, false, rows, Dv, W, 1.0f, S, W, vb + kb * vs.t, vs.t, 0.0f, ob, Dv);
    }
    cache_free(ws, ws_bytes);
  });
  DALLE_CHECK(!out_of_memory, op, "out of memory for a %zu-byte workspace (B=%lld H=%lld Tq=%lld Tk=%lld)", ws_bytes,
              (long long)G.B, (long long)G.H, (long long)Tq, (long long)Tk);
  return info.Env().Undefined();
}

// attentionBackward(q, qStrides, k, kStrides, v, vStrides, mask|null, dO, dOStrides, lse, dq|null, dk|null, dv|null,
//                   B, H, Tq, Tk, D, Dv, scale, causal)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  const char* op = "attention backward";
  const float* q = arg_data<const float>(info, 0, op);
  const float* k = arg_data<const float>(info, 2, op);
  const float* v = arg_data<const float>(info, 4, op);
  const int32_t* mask = arg_data<const int32_t>(info, 6, op);
  const float* dO = arg_data<const float>(info, 7, op);
  const float* lse = arg_data<const float>(info, 9, op);
  float* dq = arg_data<float>(info, 10, op);
  float* dk = arg_data<float>(info, 11, op);
  float* dv = arg_data<float>(info, 12, op);
  Geometry G = read_geometry(info, 13, op);
  Strides qs = arg_strides(info, 1, op, "q", G.D), ks = arg_strides(info, 3, op, "k", G.D),
          vs = arg_strides(info, 5, op, "v", G.Dv), os = arg_strides(info, 8, op, "dOut", G.Dv);
  const int64_t BH = G.B * G.H, Tq = G.Tq, Tk = G.Tk, D = G.D, Dv = G.Dv;
  if (BH == 0) return info.Env().Undefined();
  if (Tq == 0 || Tk == 0) {  // nothing attends: every gradient is zero
    if (dq) memset(dq, 0, BH * Tq * D * sizeof(float));
    if (dk) memset(dk, 0, BH * Tk * D * sizeof(float));
    if (dv) memset(dv, 0, BH * Tk * Dv * sizeof(float));
    return info.Env().Undefined();
  }
  DALLE_CHECK(q && k && v && dO && lse, op, "null address (B=%lld H=%lld Tq=%lld Tk=%lld)", (long long)G.B,
              (long long)G.H, (long long)Tq, (long long)Tk);
  G.mask = mask;
  Buffer<int32_t> ranges(2 * Tq + 2 * Tk);
  G.lo = ranges.p, G.hi = G.lo + Tq, G.clo = G.hi + Tq, G.chi = G.clo + Tk;
  G.compute_ranges();

  // Heads per group: P and dS of a group fit the workspace budget (a function of the shapes only).
  const int64_t per_head = 2 * Tq * Tk;
  int64_t group = kWorkspaceBytes / (int64_t)(per_head * sizeof(float));
  if (group < 1) group = 1;
  if (group > BH) group = BH;
  Buffer<float> ws(group * per_head);
  const int64_t nqb = (Tq + kBlock - 1) / kBlock, nkb = (Tk + kBlock - 1) / kBlock;

  for (int64_t g0 = 0; g0 < BH; g0 += group) {
    const int64_t gn = g0 + group < BH ? group : BH - g0;
    // Phase 1: per (head, query block): P and dS rows into the workspace, and dq.
    parallel_for(gn * nqb, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; t++) {
        const int64_t bh = g0 + t / nqb, b = bh / G.H, h = bh % G.H;
        const int64_t i0 = (t % nqb) * kBlock, i1 = i0 + kBlock < Tq ? i0 + kBlock : Tq, rows = i1 - i0;
        float* P = ws.p + (bh - g0) * per_head;  // (Tq, Tk)
        float* dS = P + Tq * Tk;                 // (Tq, Tk)
        const float* qb = q + b * qs.b + h * qs.h;
        const float* kbp = k + b * ks.b + h * ks.h;
        const float* vb = v + b * vs.b + h * vs.h;
        const float* ob = dO + b * os.b + h * os.h;
        const float* lb = lse + bh * Tq;
        float* dqb = dq ? dq + (bh * Tq + i0) * D : nullptr;
        int64_t kb, ke;
        G.key_range(i0, i1, &kb, &ke);
        if (kb >= ke) {
          memset(P + i0 * Tk, 0, rows * Tk * sizeof(float));
          memset(dS + i0 * Tk, 0, rows * Tk * sizeof(float));
          if (dqb) memset(dqb, 0, rows * D * sizeof(float));
          continue;
        }
        const int64_t W = ke - kb;
        sgemm(false, true, rows, W, D, G.scale, qb + i0 * qs.t, qs.t, kbp + kb * ks.t, ks.t, 0.0f, P + i0 * Tk + kb,
              Tk);
        sgemm(false, true, rows, W, Dv, 1.0f, ob + i0 * os.t, os.t, vb + kb * vs.t, vs.t, 0.0f, dS + i0 * Tk + kb,
              Tk);
        for (int64_t i = i0; i < i1; i++) {
          float* pr = P + i * Tk;
          float* dr = dS + i * Tk;
          // Columns outside [kb, ke) were not computed: zero them so phase 2 can read whole columns.
          memset(pr, 0, kb * sizeof(float));
          memset(pr + ke, 0, (Tk - ke) * sizeof(float));
          memset(dr, 0, kb * sizeof(float));
          memset(dr + ke, 0, (Tk - ke) * sizeof(float));
          if (!G.mask_row(pr + kb, i, kb)) {
            memset(pr + kb, 0, W * sizeof(float));
            memset(dr + kb, 0, W * sizeof(float));
            continue;
          }
          zero_outside(pr + kb, kb, ke, G.lo[i], G.hi[i]);
          zero_outside(dr + kb, kb, ke, G.lo[i], G.hi[i]);
          const int64_t a = G.lo[i], n = G.hi[i] - G.lo[i];
          row_exp(pr + a, pr + a, n, lb[i], 1.0f);                        // P = exp(S - lse)
          float di = row_dot(pr + a, dr + a, n);                          // rowsum(dP * P)
          row_softmax_bwd(pr + a, dr + a, dr + a, n, di);                 // dS = P * (dP - di)
        }
        if (dqb) sgemm(false, false, rows, D, W, G.scale, dS + i0 * Tk + kb, Tk, kbp + kb * ks.t, ks.t, 0.0f, dqb, D);
      }
    });
    if (!dk && !dv) continue;
    // Phase 2: per (head, key block): dv = P^T dO and dk = scale dS^T q over the query rows that see the block.
    parallel_for(gn * nkb, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; t++) {
        const int64_t bh = g0 + t / nkb, b = bh / G.H, h = bh % G.H;
        const int64_t j0 = (t % nkb) * kBlock, j1 = j0 + kBlock < Tk ? j0 + kBlock : Tk, cols = j1 - j0;
        const float* P = ws.p + (bh - g0) * per_head;
        const float* dS = P + Tq * Tk;
        const float* qb = q + b * qs.b + h * qs.h;
        const float* ob = dO + b * os.b + h * os.h;
        float* dkb = dk ? dk + (bh * Tk + j0) * D : nullptr;
        float* dvb = dv ? dv + (bh * Tk + j0) * Dv : nullptr;
        int64_t qa, qe;
        G.query_range(j0, j1, &qa, &qe);
        if (qa >= qe) {
          if (dkb) memset(dkb, 0, cols * D * sizeof(float));
          if (dvb) memset(dvb, 0, cols * Dv * sizeof(float));
          continue;
        }
        const int64_t n = qe - qa;
        if (dvb) sgemm(true, false, cols, Dv, n, 1.0f, P + qa * Tk + j0, Tk, ob + qa * os.t, os.t, 0.0f, dvb, Dv);
        if (dkb) sgemm(true, false, cols, D, n, G.scale, dS + qa * Tk + j0, Tk, qb + qa * qs.t, qs.t, 0.0f, dkb, D);
      }
    });
  }
  return info.Env().Undefined();
}

DALLE_EXPORT("attentionForward", AttentionForward);
DALLE_EXPORT("attentionBackward", AttentionBackward);

}  // namespace
}  // namespace dalle
