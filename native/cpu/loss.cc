// Cross-entropy: fused log-softmax + weighted negative log-likelihood, forward and backward.
// Keys: N = rows (positions), V = classes; logits (N, V), targets i32 (N), weights f32 (N) or none (all 1).
//   lse_n = log(sum_v exp(logits[n, v])), nll_n = lse_n - logits[n, t_n]
//   sum:  loss = sum_n w_n nll_n;  mean: loss = sum_n w_n nll_n / sum_n w_n   (both over rows whose target is not
//         ignoreIndex; ignored rows contribute nothing, not even to the denominator). A mean over a total weight of
//         0 (every row ignored) is 0, with zero gradients, rather than NaN.
//   dlogits[n, :] = w_n * (softmax(logits[n, :]) - onehot(t_n)) * g / denom   (denom = 1 for sum)
//   dweights[n]   = g * nll_n (sum), g * (nll_n - loss) / denom (mean); 0 for ignored rows.
// lse and nll (N) are saved by the forward. Totals are float64 sums in row order: same bits for any thread count.
#include <cmath>
#include <cstring>

#include "napi_util.h"
#include "threadpool.h"

namespace dalle {

// Row kernels (softmax.cc).
float row_max(const float* x, int64_t n);
float row_exp(const float* x, float* y, int64_t n, float shift, float mul);

namespace {

struct Targets {
  const int32_t* t;
  const float* w;  // null: all 1
  bool has_ignore;
  int32_t ignore;
  bool ignored(int64_t n) const { return has_ignore && t[n] == ignore; }
  double weight(int64_t n) const { return w ? (double)w[n] : 1.0; }
};

void check_targets(const char* op, const Targets& tg, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; n++) {
    int64_t t = tg.t[n];
    if (tg.ignored(n) || (t >= 0 && t < V)) continue;
    if (tg.has_ignore) {
      fail(op, __FILE__, __LINE__,
           "target %lld at row %lld is out of range for logits (%lld, %lld): valid targets are 0 to %lld, or the "
           "ignoreIndex %d",
           (long long)t, (long long)n, (long long)N, (long long)V, (long long)(V - 1), (int)tg.ignore);
    }
    fail(op, __FILE__, __LINE__,
         "target %lld at row %lld is out of range for logits (%lld, %lld): valid targets are 0 to %lld (set "
         "ignoreIndex to skip padding positions)",
         (long long)t, (long long)n, (long long)N, (long long)V, (long long)(V - 1));
  }
}

// Sum of w * nll and of w over the rows that are not ignored, in row order.
void totals(const Targets& tg, const float* nll, int64_t N, double* total, double* denom) {
  double s = 0, d = 0;
  for (int64_t n = 0; n < N; n++) {
    if (tg.ignored(n)) continue;
    double w = tg.weight(n);
    s += w * (double)nll[n];
    d += w;
  }
  *total = s;
  *denom = d;
}

Targets read_targets(const Napi::CallbackInfo& info, size_t i, const char* op) {
  Targets tg;
  tg.t = arg_data<const int32_t>(info, i, op);
  tg.w = arg_data<const float>(info, i + 1, op);
  tg.has_ignore = arg_bool(info, i + 2, op);
  tg.ignore = (int32_t)arg_i64(info, i + 3, op);
  return tg;
}

// crossEntropyForward(logits, N, V, targets, weights|null, hasIgnore, ignoreIndex, mean, out, lse, nll)
Napi::Value CrossEntropyForward(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropy";
  const float* x = arg_data<const float>(info, 0, op);
  int64_t N = arg_i64(info, 1, op), V = arg_i64(info, 2, op);
  Targets tg = read_targets(info, 3, op);
  bool mean = arg_bool(info, 7, op);
  float* out = arg_data<float>(info, 8, op);
  float* lse = arg_data<float>(info, 9, op);
  float* nll = arg_data<float>(info, 10, op);
  DALLE_CHECK(N >= 0 && V >= 0, op, "bad logits shape (%lld, %lld)", (long long)N, (long long)V);
  DALLE_CHECK(out, op, "null output address");
  if (N > 0) {
    DALLE_CHECK(tg.t && lse && nll, op, "null address (logits (%lld, %lld))", (long long)N, (long long)V);
    check_targets(op, tg, N, V);
  }
  if (N > 0 && V > 0) DALLE_CHECK(x, op, "null logits address");
  int64_t grain = V >= 8192 ? 1 : 8192 / (V ? V : 1) + 1;
  parallel_for(N, grain, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; n++) {
      if (tg.ignored(n)) {
        lse[n] = 0;
        nll[n] = 0;
        continue;
      }
      const float* xr = x + n * V;
      float m = row_max(xr, V);
      float l = m + std::log(row_exp(xr, nullptr, V, m, 1.0f));
      lse[n] = l;
      nll[n] = l - xr[tg.t[n]];
    }
  });
  double total, denom;
  totals(tg, nll, N, &total, &denom);
  out[0] = (float)(mean ? (denom != 0 ? total / denom : 0.0) : total);
  return info.Env().Undefined();
}

// crossEntropyBackward(logits, N, V, targets, weights|null, hasIgnore, ignoreIndex, mean, lse, nll, g, dlogits|null,
// dweights|null): g is the address of the loss gradient (one f32).
Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropy backward";
  const float* x = arg_data<const float>(info, 0, op);
  int64_t N = arg_i64(info, 1, op), V = arg_i64(info, 2, op);
  Targets tg = read_targets(info, 3, op);
  bool mean = arg_bool(info, 7, op);
  const float* lse = arg_data<const float>(info, 8, op);
  const float* nll = arg_data<const float>(info, 9, op);
  const float* gp = arg_data<const float>(info, 10, op);
  float* dx = arg_data<float>(info, 11, op);
  float* dw = arg_data<float>(info, 12, op);
  DALLE_CHECK(N >= 0 && V >= 0, op, "bad logits shape (%lld, %lld)", (long long)N, (long long)V);
  DALLE_CHECK(gp, op, "null gradient address");
  if (N == 0) return info.Env().Undefined();
  DALLE_CHECK(tg.t && lse && nll, op, "null address (logits (%lld, %lld))", (long long)N, (long long)V);
  check_targets(op, tg, N, V);  // the targets may have changed since the forward
  double total, denom;
  totals(tg, nll, N, &total, &denom);
  const double g = gp[0];
  const double scale = mean ? (denom != 0 ? g / denom : 0.0) : g;
  const double loss = mean ? (denom != 0 ? total / denom : 0.0) : total;
  int64_t grain = V >= 8192 ? 1 : 8192 / (V ? V : 1) + 1;
  parallel_for(N, grain, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; n++) {
      const bool ign = tg.ignored(n);
      if (dw) dw[n] = ign ? 0.0f : (float)(mean ? scale * ((double)nll[n] - loss) : g * (double)nll[n]);
      if (!dx || V == 0) continue;
      float* dr = dx + n * V;
      if (ign || scale == 0) {
        memset(dr, 0, V * sizeof(float));
        continue;
      }
      const float coef = (float)(tg.weight(n) * scale);
      row_exp(x + n * V, dr, V, lse[n], coef);
      dr[tg.t[n]] -= coef;
    }
  });
  return info.Env().Undefined();
}

DALLE_EXPORT("crossEntropyForward", CrossEntropyForward);
DALLE_EXPORT("crossEntropyBackward", CrossEntropyBackward);

}  // namespace
}  // namespace dalle
