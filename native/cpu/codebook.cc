// codebookStats: the dVAE's per-code softmax statistics of a batch of codebook logits in one pass (NCHW, softmax over
// the V codes of each cell), with its gradient:
//   out[v] = sum over cells of q_v (v < V),   out[V] = sum over cells of sum_v q_v log q_v,   q = softmax(l) per cell
//   dl_v = q_v (g_v - sum_u q_u g_u + g_V (log q_v - f)),  f = sum_u q_u log q_u of the cell
// It replaces the chain logSoftmax, exp, mul, sum (the KL to the uniform prior) and mean (code usage) over a
// codebook-last copy of the logits: at the dVAE's (16, 1024, 16, 16) logits, nine passes over 16.8 MB tensors and a
// transpose, forward and backward (src/core/ops/codebook.ts). Kernels per ISA in codebook_simd.h (AVX-512, AVX2);
// the portable one is plain C++ in double. Sums over cells and images run in double. Images run in parallel; each image's sums run in a fixed order and the
// images are then added in order, so results do not depend on the thread count.
#include <cmath>
#include <vector>

#include "allocator.h"
#include "cpu_features.h"
#include "error.h"
#include "napi_util.h"
#include "random.h"
#include "threadpool.h"

namespace dalle {

double codebook_stats_forward_avx512(const float* l, int64_t V, int64_t HW, double* qsum, float* work);
void codebook_stats_backward_avx512(const float* l, int64_t V, int64_t HW, const float* g, float* dl, float* work);
double codebook_stats_forward_avx2(const float* l, int64_t V, int64_t HW, double* qsum, float* work);
void codebook_stats_backward_avx2(const float* l, int64_t V, int64_t HW, const float* g, float* dl, float* work);
void codebook_relaxed_block_avx512(const float* l, const float* rows, int64_t V, int64_t HW, int64_t j, int n,
                                   float inv_tau, float* z, float* work);
void codebook_relaxed_backward_avx512(const float* z, const float* dz, int64_t V, int64_t HW, float inv_tau, float* dl);
void codebook_relaxed_block_avx2(const float* l, const float* rows, int64_t V, int64_t HW, int64_t j, int n,
                                 float inv_tau, float* z, float* work);
void codebook_relaxed_backward_avx2(const float* z, const float* dz, int64_t V, int64_t HW, float inv_tau, float* dl);

namespace {

// One cell's statistics in double: m, log s, f; q_v = exp(l_v - m - log s).
struct Cell {
  double m, log_s, f;
};

Cell cell_stats(const float* l, int64_t V, int64_t HW) {
  double m = l[0];
  for (int64_t v = 1; v < V; v++) m = l[v * HW] > m ? l[v * HW] : m;
  double s = 0, t = 0;
  for (int64_t v = 0; v < V; v++) {
    const double d = l[v * HW] - m, e = std::exp(d);
    s += e;
    t += e * d;
  }
  return {m, std::log(s), t / s - std::log(s)};
}

double forward_portable(const float* l, int64_t V, int64_t HW, double* qsum) {
  std::vector<double> acc(V, 0.0);
  double fsum = 0;
  for (int64_t j = 0; j < HW; j++) {
    const Cell c = cell_stats(l + j, V, HW);
    fsum += c.f;
    for (int64_t v = 0; v < V; v++) acc[v] += std::exp(l[v * HW + j] - c.m - c.log_s);
  }
  for (int64_t v = 0; v < V; v++) qsum[v] = acc[v];
  return fsum;
}

void backward_portable(const float* l, int64_t V, int64_t HW, const float* g, float* dl) {
  for (int64_t j = 0; j < HW; j++) {
    const Cell c = cell_stats(l + j, V, HW);
    double dot = 0;
    for (int64_t v = 0; v < V; v++) dot += std::exp(l[v * HW + j] - c.m - c.log_s) * g[v];
    for (int64_t v = 0; v < V; v++) {
      const double lq = l[v * HW + j] - c.m - c.log_s, q = std::exp(lq);
      dl[v * HW + j] = (float)(q * (g[v] - dot + g[V] * (lq - c.f)));
    }
  }
}

// A per-thread workspace of the kernels (2 V vectors of 16 floats).
struct Work {
  float* p;
  size_t bytes;
  explicit Work(int64_t V) : bytes((size_t)(2 * V * 16 + 16) * sizeof(float)) { p = static_cast<float*>(cache_alloc(bytes)); }
  ~Work() { cache_free(p, bytes); }
};

void check(const char* op, int64_t B, int64_t V, int64_t HW) {
  DALLE_CHECK(B > 0 && V > 0 && HW > 0, op, "dimensions must be positive: (B, V, HW) = (%lld, %lld, %lld)",
              (long long)B, (long long)V, (long long)HW);
  DALLE_CHECK(B * V * HW < (int64_t(1) << 40), op, "tensor too large: (B, V, HW) = (%lld, %lld, %lld)", (long long)B,
              (long long)V, (long long)HW);
}

// codebookStatsForward(logits, out, B, V, HW): out (V + 1) as in the file comment.
Napi::Value CodebookStatsForward(const Napi::CallbackInfo& info) {
  const char* op = "codebookStatsForward";
  const float* l = arg_data<const float>(info, 0, op);
  float* out = arg_data<float>(info, 1, op);
  const int64_t B = arg_i64(info, 2, op), V = arg_i64(info, 3, op), HW = arg_i64(info, 4, op);
  check(op, B, V, HW);
  DALLE_CHECK(l && out, op, "null address");
  std::vector<double> part((size_t)(B * (V + 1)));  // per image: qsum (V), then the sum of f
  const Isa isa = active_isa();
  parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    Work work(V);
    for (int64_t b = b0; b < b1; b++) {
      const float* lb = l + b * V * HW;
      double* pb = part.data() + b * (V + 1);
#if defined(DALLE_X86)
      if (isa == Isa::Avx512) { pb[V] = codebook_stats_forward_avx512(lb, V, HW, pb, work.p); continue; }
      if (isa == Isa::Avx2) { pb[V] = codebook_stats_forward_avx2(lb, V, HW, pb, work.p); continue; }
#endif
      pb[V] = forward_portable(lb, V, HW, pb);
    }
  });
  for (int64_t v = 0; v <= V; v++) {
    double s = 0.0;
    for (int64_t b = 0; b < B; b++) s += part[b * (V + 1) + v];
    out[v] = (float)s;
  }
  (void)isa;
  return info.Env().Undefined();
}

// codebookStatsBackward(logits, g, dl, B, V, HW): dl (B, V, HW) from g (V + 1).
Napi::Value CodebookStatsBackward(const Napi::CallbackInfo& info) {
  const char* op = "codebookStatsBackward";
  const float* l = arg_data<const float>(info, 0, op);
  const float* g = arg_data<const float>(info, 1, op);
  float* dl = arg_data<float>(info, 2, op);
  const int64_t B = arg_i64(info, 3, op), V = arg_i64(info, 4, op), HW = arg_i64(info, 5, op);
  check(op, B, V, HW);
  DALLE_CHECK(l && g && dl, op, "null address");
  const Isa isa = active_isa();
  parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    Work work(V);
    for (int64_t b = b0; b < b1; b++) {
      const float* lb = l + b * V * HW;
      float* db = dl + b * V * HW;
#if defined(DALLE_X86)
      if (isa == Isa::Avx512) { codebook_stats_backward_avx512(lb, V, HW, g, db, work.p); continue; }
      if (isa == Isa::Avx2) { codebook_stats_backward_avx2(lb, V, HW, g, db, work.p); continue; }
#endif
      backward_portable(lb, V, HW, g, db);
    }
  });
  (void)isa;
  return info.Env().Undefined();
}

// ---- relaxed codes ------------------------------------------------------------------------------------------------
// z = softmax((l + g) / tau) over the codes of each cell, g = the Gumbel noise of the Philox stream (key, offset)
// laid out codebook-last ((B, h, w, V): cell c's code v is word offset + c V + v, as randGumbel of that shape draws
// it), written NCHW like the logits. The noise is drawn per block of 16 cells into a buffer and never stored.
constexpr int kCellBlock = 16;

void relaxed_block_portable(const float* l, const float* rows, int64_t V, int64_t HW, int64_t j, int n,
                            float inv_tau, float* z) {
  for (int i = 0; i < n; i++) {
    double m = -INFINITY;
    for (int64_t v = 0; v < V; v++) m = std::fmax(m, (double)((l[v * HW + j + i] + rows[i * V + v]) * inv_tau));
    double s = 0;
    for (int64_t v = 0; v < V; v++) s += std::exp((double)((l[v * HW + j + i] + rows[i * V + v]) * inv_tau) - m);
    for (int64_t v = 0; v < V; v++)
      z[v * HW + j + i] = (float)(std::exp((double)((l[v * HW + j + i] + rows[i * V + v]) * inv_tau) - m) / s);
  }
}

// relaxedCodesForward(logits, z, B, V, HW, key0, key1, offsetLo, offsetHi, invTau)
Napi::Value RelaxedCodesForward(const Napi::CallbackInfo& info) {
  const char* op = "relaxedCodesForward";
  const float* l = arg_data<const float>(info, 0, op);
  float* z = arg_data<float>(info, 1, op);
  const int64_t B = arg_i64(info, 2, op), V = arg_i64(info, 3, op), HW = arg_i64(info, 4, op);
  const uint32_t k0 = (uint32_t)arg_i64(info, 5, op), k1 = (uint32_t)arg_i64(info, 6, op);
  const uint64_t offset = (uint64_t)(uint32_t)arg_i64(info, 7, op) | ((uint64_t)(uint32_t)arg_i64(info, 8, op) << 32);
  const float inv_tau = (float)arg_f64(info, 9, op);
  check(op, B, V, HW);
  DALLE_CHECK(l && z, op, "null address");
  DALLE_CHECK(inv_tau > 0.0f && inv_tau < INFINITY, op, "1 / temperature must be positive and finite, got %g", (double)inv_tau);
  const int64_t blocks = (HW + kCellBlock - 1) / kCellBlock;
  const Isa isa = active_isa();
  parallel_for(B * blocks, 1, [&](int64_t i0, int64_t i1) {
    const size_t floats = (size_t)(3 * V * kCellBlock);
    float* buf = static_cast<float*>(cache_alloc(floats * sizeof(float)));
    float* rows = buf;                   // (16 cells, V) noise, cell-major
    float* work = buf + V * kCellBlock;  // the leaves' 2 V 16
    for (int64_t it = i0; it < i1; it++) {
      const int64_t b = it / blocks, j = (it % blocks) * kCellBlock;
      const int n = (int)(HW - j < kCellBlock ? HW - j : kCellBlock);
      gumbel_noise(k0, k1, offset, (b * HW + j) * V, n * V, rows);
      const float* lb = l + b * V * HW;
      float* zb = z + b * V * HW;
#if defined(DALLE_X86)
      if (isa == Isa::Avx512) {
        codebook_relaxed_block_avx512(lb, rows, V, HW, j, n, inv_tau, zb, work);
        continue;
      }
      if (isa == Isa::Avx2) {  // 8 cells a vector: two halves of the block
        codebook_relaxed_block_avx2(lb, rows, V, HW, j, n < 8 ? n : 8, inv_tau, zb, work);
        if (n > 8) codebook_relaxed_block_avx2(lb, rows + 8 * V, V, HW, j + 8, n - 8, inv_tau, zb, work);
        continue;
      }
#endif
      relaxed_block_portable(lb, rows, V, HW, j, n, inv_tau, zb);
    }
    cache_free(buf, floats * sizeof(float));
  });
  (void)isa;
  return info.Env().Undefined();
}

// relaxedCodesBackward(z, dz, dl, B, V, HW, invTau): dl = invTau z (dz - sum over codes of z dz), per cell.
Napi::Value RelaxedCodesBackward(const Napi::CallbackInfo& info) {
  const char* op = "relaxedCodesBackward";
  const float* z = arg_data<const float>(info, 0, op);
  const float* dz = arg_data<const float>(info, 1, op);
  float* dl = arg_data<float>(info, 2, op);
  const int64_t B = arg_i64(info, 3, op), V = arg_i64(info, 4, op), HW = arg_i64(info, 5, op);
  const float inv_tau = (float)arg_f64(info, 6, op);
  check(op, B, V, HW);
  DALLE_CHECK(z && dz && dl, op, "null address");
  const Isa isa = active_isa();
  parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      const float* zb = z + b * V * HW;
      const float* gb = dz + b * V * HW;
      float* db = dl + b * V * HW;
#if defined(DALLE_X86)
      if (isa == Isa::Avx512) { codebook_relaxed_backward_avx512(zb, gb, V, HW, inv_tau, db); continue; }
      if (isa == Isa::Avx2) { codebook_relaxed_backward_avx2(zb, gb, V, HW, inv_tau, db); continue; }
#endif
      for (int64_t j = 0; j < HW; j++) {
        double dot = 0;
        for (int64_t v = 0; v < V; v++) dot += (double)zb[v * HW + j] * gb[v * HW + j];
        for (int64_t v = 0; v < V; v++) db[v * HW + j] = (float)(inv_tau * zb[v * HW + j] * (gb[v * HW + j] - dot));
      }
    }
  });
  (void)isa;
  return info.Env().Undefined();
}

DALLE_EXPORT("relaxedCodesForward", RelaxedCodesForward);
DALLE_EXPORT("relaxedCodesBackward", RelaxedCodesBackward);
DALLE_EXPORT("codebookStatsForward", CodebookStatsForward);
DALLE_EXPORT("codebookStatsBackward", CodebookStatsBackward);

}  // namespace
}  // namespace dalle
