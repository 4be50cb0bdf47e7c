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
#include "threadpool.h"

namespace dalle {

double codebook_stats_forward_avx512(const float* l, int64_t V, int64_t HW, double* qsum, float* work);
void codebook_stats_backward_avx512(const float* l, int64_t V, int64_t HW, const float* g, float* dl, float* work);
double codebook_stats_forward_avx2(const float* l, int64_t V, int64_t HW, double* qsum, float* work);
void codebook_stats_backward_avx2(const float* l, int64_t V, int64_t HW, const float* g, float* dl, float* work);

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

DALLE_EXPORT("codebookStatsForward", CodebookStatsForward);
DALLE_EXPORT("codebookStatsBackward", CodebookStatsBackward);

}  // namespace
}  // namespace dalle
