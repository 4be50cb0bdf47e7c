// Softmax and log-softmax over the last axis, forward and fused backward, and the row kernels they share with the
// cross-entropy (loss.cc) and attention (attention.cc) kernels.
// Keys: R = rows (product of the leading dims), C = columns (the softmax axis).
//   softmax:     y = exp(x - max) / sum(exp(x - max));         dx = y * (g - sum(g * y))
//   logSoftmax:  y = x - (max + log(sum(exp(x - max))));       dx = g - exp(y) * sum(g)
// A row of all -inf gives NaN (as in PyTorch): callers that mask (attention) handle empty rows themselves.
// Parallel over rows only; each row is reduced by one thread in a fixed order: same bits for any thread count.
#include <cmath>
#include <cstring>

#include "cpu_features.h"
#include "napi_util.h"
#include "threadpool.h"

namespace dalle {

// AVX-512 leaves (softmax_avx512.cc).
float row_max_avx512(const float* x, int64_t n);
float row_exp_avx512(const float* x, float* y, int64_t n, float shift, float mul);
void row_affine_avx512(const float* x, float* y, int64_t n, float s, float c);
float row_dot_avx512(const float* a, const float* b, int64_t n);
float row_sum_avx512(const float* a, int64_t n);
void row_softmax_bwd_avx512(const float* y, const float* g, float* dx, int64_t n, float s);
void row_logsoftmax_bwd_avx512(const float* y, const float* g, float* dx, int64_t n, float s);
void row_mask_avx512(float* s, const int32_t* allowed, int64_t n);

// ---- Row kernels: dispatch on the active ISA (AVX-512, else portable C++). Also used by loss.cc, attention.cc. ----

// `AVX512(call);` returns call's value when the AVX-512 kernels are active (compiled out where they do not exist).
#if defined(DALLE_X86)
#define AVX512(call) \
  if (active_isa() == Isa::Avx512) return call
#else
#define AVX512(call) (void)0
#endif

float row_max(const float* x, int64_t n) {
  AVX512(row_max_avx512(x, n));
  float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) m[k] = x[i + k] > m[k] ? x[i + k] : m[k];
  for (int k = 0; i < n; i++, k++) m[k] = x[i] > m[k] ? x[i] : m[k];
  for (int k = 1; k < 8; k++) m[0] = m[k] > m[0] ? m[k] : m[0];
  return m[0];
}

// Portable exp of a block, written so that the compiler vectorizes it (SSE2 on any x86-64, NEON on arm64): the same
// Cephes scheme as softmax_avx512.cc, with 2^n built in the exponent bits. Inputs below -87.3 (where 2^n would leave
// the normal range) give exactly 0, so exp(-inf) = 0; inputs above 88.3 are clamped (softmax inputs are <= 0); NaN
// propagates. Relative error about 2e-7. GCC vectorizes the clamps (selects) only without trapping math, which is
// harmless here (no FP exception flags are read anywhere); Clang does by default.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-trapping-math")))
#endif
static void exp_block(const float* x, float* y, int64_t n, float shift) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i] - shift;
    const bool tiny = v < -87.3f;
    v = v < -87.3f ? -87.3f : v;
    v = v > 88.3f ? 88.3f : v;
    // round(v log2 e) by the 1.5 * 2^23 trick (exact for |v log2 e| < 2^22).
    const float fn = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = v - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    const float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + (r + 1.0f);
    const int32_t bits = ((int32_t)(fn == fn ? fn : 0.0f) + 127) << 23;  // (a NaN stays in p)
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    y[i] = tiny ? 0.0f : p * scale;
  }
}

// y = mul * exp(x - shift) (y may be null: sum only; y may equal x); returns sum of exp(x - shift).
float row_exp(const float* x, float* y, int64_t n, float shift, float mul) {
  AVX512(row_exp_avx512(x, y, n, shift, mul));
  constexpr int64_t kChunk = 256;
  float e[kChunk];
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t m = n - i0 < kChunk ? n - i0 : kChunk;
    exp_block(x + i0, e, m, shift);
    int64_t j = 0;
    for (; j + 8 <= m; j += 8)
      for (int k = 0; k < 8; k++) acc[k] += e[j + k];
    for (int k = 0; j < m; j++, k++) acc[k] += e[j];
    if (y)
      for (int64_t j2 = 0; j2 < m; j2++) y[i0 + j2] = e[j2] * mul;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// y = x * s + c (y may equal x)
void row_affine(const float* x, float* y, int64_t n, float s, float c) {
  AVX512(row_affine_avx512(x, y, n, s, c));
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * s + c;
}

float row_dot(const float* a, const float* b, int64_t n) {
  AVX512(row_dot_avx512(a, b, n));
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
  for (int k = 0; i < n; i++, k++) acc[k] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

float row_sum(const float* a, int64_t n) {
  AVX512(row_sum_avx512(a, n));
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) acc[k] += a[i + k];
  for (int k = 0; i < n; i++, k++) acc[k] += a[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// dx = y * (g - s) (dx may alias g)
void row_softmax_bwd(const float* y, const float* g, float* dx, int64_t n, float s) {
  AVX512(row_softmax_bwd_avx512(y, g, dx, n, s));
  for (int64_t i = 0; i < n; i++) dx[i] = y[i] * (g[i] - s);
}

// s[j] = -inf where allowed[j] == 0
void row_mask(float* s, const int32_t* allowed, int64_t n) {
  AVX512(row_mask_avx512(s, allowed, n));
  for (int64_t i = 0; i < n; i++)
    if (allowed[i] == 0) s[i] = -INFINITY;
}

// Softmax of one row in place or into y: returns log(sum(exp(x - max))) + max, the log-sum-exp.
float row_softmax(const float* x, float* y, int64_t n) {
  float m = row_max(x, n);
  float s = row_exp(x, y, n, m, 1.0f);
  row_affine(y, y, n, 1.0f / s, 0.0f);
  return m + std::log(s);
}

namespace {

static void row_logsoftmax_bwd(const float* y, const float* g, float* dx, int64_t n, float s) {
  AVX512(row_logsoftmax_bwd_avx512(y, g, dx, n, s));
  constexpr int64_t kChunk = 256;
  float e[kChunk];
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t m = n - i0 < kChunk ? n - i0 : kChunk;
    exp_block(y + i0, e, m, 0.0f);
    for (int64_t j = 0; j < m; j++) dx[i0 + j] = g[i0 + j] - e[j] * s;
  }
}

static int64_t row_grain(int64_t cols) { return cols >= 8192 ? 1 : 8192 / (cols ? cols : 1) + 1; }

// softmaxForward(x, y, R, C, log)
Napi::Value SoftmaxForward(const Napi::CallbackInfo& info) {
  const char* op = "softmax";
  const float* x = arg_data<const float>(info, 0, op);
  float* y = arg_data<float>(info, 1, op);
  int64_t R = arg_i64(info, 2, op), C = arg_i64(info, 3, op);
  bool log = arg_bool(info, 4, op);
  DALLE_CHECK(R >= 0 && C >= 0, op, "bad shape (%lld rows, %lld columns)", (long long)R, (long long)C);
  if (R * C == 0) return info.Env().Undefined();
  DALLE_CHECK(x && y, op, "null address for rows=%lld cols=%lld", (long long)R, (long long)C);
  parallel_for(R, row_grain(C), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
      if (log) {
        float m = row_max(xr, C);
        float lse = m + std::log(row_exp(xr, nullptr, C, m, 1.0f));
        row_affine(xr, yr, C, 1.0f, -lse);
      } else {
        row_softmax(xr, yr, C);
      }
    }
  });
  return info.Env().Undefined();
}

// softmaxBackward(y, g, dx, R, C, log): y is the forward output.
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  const char* op = "softmax backward";
  const float* y = arg_data<const float>(info, 0, op);
  const float* g = arg_data<const float>(info, 1, op);
  float* dx = arg_data<float>(info, 2, op);
  int64_t R = arg_i64(info, 3, op), C = arg_i64(info, 4, op);
  bool log = arg_bool(info, 5, op);
  DALLE_CHECK(R >= 0 && C >= 0, op, "bad shape (%lld rows, %lld columns)", (long long)R, (long long)C);
  if (R * C == 0) return info.Env().Undefined();
  DALLE_CHECK(y && g && dx, op, "null address for rows=%lld cols=%lld", (long long)R, (long long)C);
  parallel_for(R, row_grain(C), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const float* yr = y + r * C;
      const float* gr = g + r * C;
      float* dr = dx + r * C;
      if (log) row_logsoftmax_bwd(yr, gr, dr, C, row_sum(gr, C));
      else row_softmax_bwd(yr, gr, dr, C, row_dot(gr, yr, C));
    }
  });
  return info.Env().Undefined();
}

DALLE_EXPORT("softmaxForward", SoftmaxForward);
DALLE_EXPORT("softmaxBackward", SoftmaxBackward);

}  // namespace
}  // namespace dalle
