// Vector kernels of the training loop: gradient accumulation (axpy), scaling, squared norms (float64 accumulation,
// in a fixed order so the result does not depend on the thread count), and the fused AdamW update.
#include <cmath>
#include <vector>

#include "napi_util.h"
#include "threadpool.h"

namespace dalle {
namespace {

constexpr int64_t kGrain = 1 << 15;
constexpr int64_t kBlock = 1 << 14;  // sum-of-squares partials: one per block, summed in block order

// The loops below are functions of restrict pointers and scalars passed by value: written inline in a lambda that
// captures the scalars by reference, they stayed scalar code (a store through a float pointer might change a captured
// float, so GCC neither hoists nor vectorizes). Each element's arithmetic is the same, so the results are the same bits.
void axpy_range(int64_t n, float alpha, const float* __restrict x, float* __restrict y) {
  for (int64_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

void axpy_self_range(int64_t n, float alpha, float* __restrict y) {
  for (int64_t i = 0; i < n; i++) y[i] += alpha * y[i];
}

void scale_range(int64_t n, float alpha, float* __restrict x) {
  for (int64_t i = 0; i < n; i++) x[i] *= alpha;
}

// Sum of x[0 : n]^2 in float64 in a fixed order: 8 interleaved accumulators combined pairwise (as reduce.cc's row_sum).
// One running sum waited on its previous addition for every element (latency-bound: about 4 cycles a value).
double block_sum_squares(const float* __restrict x, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; k++) acc[k] += (double)x[i + k] * x[i + k];
  }
  for (int k = 0; i < n; i++, k++) acc[k] += (double)x[i] * x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

struct AdamWConstants {
  float b1, b2, bc1, bc2, lr, eps, wd, gscale;
};

void adamw_range(int64_t n, const AdamWConstants k, float* __restrict p, const float* __restrict g, float* __restrict m,
                 float* __restrict v) {
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i] * k.gscale;
    float mi = k.b1 * m[i] + (1.0f - k.b1) * gi;
    float vi = k.b2 * v[i] + (1.0f - k.b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float update = (mi * k.bc1) / (std::sqrt(vi * k.bc2) + k.eps);
    p[i] -= k.lr * (update + k.wd * p[i]);
  }
}

// axpy(n, alpha, x, y): y += alpha * x
Napi::Value Axpy(const Napi::CallbackInfo& info) {
  const char* op = "axpy";
  int64_t n = arg_i64(info, 0, op);
  float alpha = (float)arg_f64(info, 1, op);
  const float* x = arg_data<const float>(info, 2, op);
  float* y = arg_data<float>(info, 3, op);
  DALLE_CHECK(n >= 0 && (n == 0 || (x && y)), op, "bad arguments: n=%lld", (long long)n);
  DALLE_CHECK(x == y || x + n <= y || y + n <= x, op, "x and y overlap without being the same vector (n=%lld)",
              (long long)n);
  if (x == y) {  // y += alpha * y (a gradient added to itself): axpy_range's pointers must not alias
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) { axpy_self_range(e - b, alpha, y + b); });
    return info.Env().Undefined();
  }
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) { axpy_range(e - b, alpha, x + b, y + b); });
  return info.Env().Undefined();
}

// scale(n, alpha, x): x *= alpha
Napi::Value Scale(const Napi::CallbackInfo& info) {
  const char* op = "scale";
  int64_t n = arg_i64(info, 0, op);
  float alpha = (float)arg_f64(info, 1, op);
  float* x = arg_data<float>(info, 2, op);
  DALLE_CHECK(n >= 0 && (n == 0 || x), op, "bad arguments: n=%lld", (long long)n);
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) { scale_range(e - b, alpha, x + b); });
  return info.Env().Undefined();
}

// sumSquares(n, x) -> sum of x^2 in float64 (NaN/Inf propagate, so a non-finite gradient is visible).
Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  const char* op = "sumSquares";
  int64_t n = arg_i64(info, 0, op);
  const float* x = arg_data<const float>(info, 1, op);
  DALLE_CHECK(n >= 0 && (n == 0 || x), op, "bad arguments: n=%lld", (long long)n);
  int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks > 0 ? blocks : 1, 0.0);
  parallel_for(blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; blk++) {
      int64_t lo = blk * kBlock, hi = lo + kBlock < n ? lo + kBlock : n;
      partial[blk] = block_sum_squares(x + lo, hi - lo);
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  return Napi::Number::New(info.Env(), total);
}

// adamw(n, param, grad, m, v, lr, beta1, beta2, eps, weightDecay, gradScale, step)
// Decoupled weight decay (Loshchilov & Hutter): p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p), on fp32 master weights;
// the gradient is multiplied by gradScale first (1 / loss scale, or the clipping factor).
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  const char* op = "adamw";
  int64_t n = arg_i64(info, 0, op);
  float* p = arg_data<float>(info, 1, op);
  const float* g = arg_data<const float>(info, 2, op);
  float* m = arg_data<float>(info, 3, op);
  float* v = arg_data<float>(info, 4, op);
  double lr = arg_f64(info, 5, op), b1 = arg_f64(info, 6, op), b2 = arg_f64(info, 7, op);
  double eps = arg_f64(info, 8, op), wd = arg_f64(info, 9, op), gscale = arg_f64(info, 10, op);
  int64_t step = arg_i64(info, 11, op);
  DALLE_CHECK(n >= 0 && (n == 0 || (p && g && m && v)), op, "bad arguments: n=%lld", (long long)n);
  DALLE_CHECK(step >= 1, op, "step must be >= 1 (bias correction), got %lld", (long long)step);
  const float bc1 = (float)(1.0 / (1.0 - std::pow(b1, (double)step)));
  const float bc2 = (float)(1.0 / (1.0 - std::pow(b2, (double)step)));
  const AdamWConstants k{(float)b1, (float)b2, bc1, bc2, (float)lr, (float)eps, (float)wd, (float)gscale};
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) { adamw_range(e - b, k, p + b, g + b, m + b, v + b); });
  return info.Env().Undefined();
}

// scaleFilter(n, x, y, alpha) -> count: y = alpha * x, with every non-finite product (Inf, NaN, or an overflow) set to
// 0; returns how many were non-finite. x == y is allowed. The per-resblock gradient scaling's unscale-and-filter.
Napi::Value ScaleFilter(const Napi::CallbackInfo& info) {
  const char* op = "scaleFilter";
  int64_t n = arg_i64(info, 0, op);
  const float* x = arg_data<const float>(info, 1, op);
  float* y = arg_data<float>(info, 2, op);
  float alpha = (float)arg_f64(info, 3, op);
  DALLE_CHECK(n >= 0 && (n == 0 || (x && y)), op, "bad arguments: n=%lld", (long long)n);
  int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<int64_t> bad(blocks > 0 ? blocks : 1, 0);
  parallel_for(blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; blk++) {
      int64_t lo = blk * kBlock, hi = lo + kBlock < n ? lo + kBlock : n;
      int64_t c = 0;
      for (int64_t i = lo; i < hi; i++) {
        float v = x[i] * alpha;
        bool ok = std::isfinite(v);
        c += ok ? 0 : 1;
        y[i] = ok ? v : 0.0f;
      }
      bad[blk] = c;
    }
  });
  int64_t total = 0;
  for (int64_t c : bad) total += c;
  return Napi::Number::New(info.Env(), (double)total);
}

DALLE_EXPORT("axpy", Axpy);
DALLE_EXPORT("scale", Scale);
DALLE_EXPORT("sumSquares", SumSquares);
DALLE_EXPORT("adamw", AdamW);
DALLE_EXPORT("scaleFilter", ScaleFilter);

}  // namespace
}  // namespace dalle
