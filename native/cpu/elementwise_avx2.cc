// AVX2 + FMA leaves of the elementwise kernels (driven by elementwise.cc; the same formulas as elementwise_avx512.cc,
// 8 lanes at a time). Compiled with -mavx2 -mfma: leaf C-style functions only, no std headers (binding.gyp).
//
// exp: Cephes expf; without vscalefps, 2^n is built in the exponent bits as 2^floor(n/2) * 2^(n - floor(n/2)), so
// that n in [-150, 128] (x from -104 to ln(FLT_MAX)) is exact, subnormal results included; x > 88.72 gives +Inf.
// log: Cephes logf with the exponent and mantissa taken from the bits (subnormals rescaled by 2^23 first).
// Tails use masked loads and stores with the same code, so each element's value is independent of its position.
#include <immintrin.h>

#include <cstdint>

#include "simd_math_avx2.h"

namespace dalle {

namespace {

// Op codes: keep in sync with elementwise.cc.
enum { kAffine = 0, kExp, kLog, kSigmoid, kTanh, kRelu, kGelu, kSqrt, kSquare };
enum { kAdd = 0, kSub, kMul, kDiv, kReluGrad, kSigmoidGrad, kTanhGrad, kGeluGrad };

static inline __m256 v1(float f) { return _mm256_set1_ps(f); }

using simd256::exp8;

static inline __m256i tail8(int64_t n) {
  const int k = n >= 8 ? 8 : (int)n;
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __m256 log8(__m256 x0) {
  // Subnormals: scale into the normal range first.
  const __m256 tiny = _mm256_cmp_ps(x0, v1(1.17549435e-38f), _CMP_LT_OQ);
  const __m256 x = _mm256_blendv_ps(x0, _mm256_mul_ps(x0, v1(8388608.0f)), tiny);
  const __m256i xi = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(xi, 23), _mm256_set1_epi32(0xff)),
                                                 _mm256_set1_epi32(126)));
  e = _mm256_sub_ps(e, _mm256_and_ps(tiny, v1(23.0f)));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(xi, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
  const __m256 lo = _mm256_cmp_ps(m, v1(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_sub_ps(e, _mm256_and_ps(lo, v1(1.0f)));
  m = _mm256_add_ps(m, _mm256_and_ps(lo, m));
  m = _mm256_sub_ps(m, v1(1.0f));
  const __m256 z = _mm256_mul_ps(m, m);
  __m256 y = v1(7.0376836292e-2f);
  y = _mm256_fmadd_ps(y, m, v1(-1.1514610310e-1f));
  y = _mm256_fmadd_ps(y, m, v1(1.1676998740e-1f));
  y = _mm256_fmadd_ps(y, m, v1(-1.2420140846e-1f));
  y = _mm256_fmadd_ps(y, m, v1(1.4249322787e-1f));
  y = _mm256_fmadd_ps(y, m, v1(-1.6668057665e-1f));
  y = _mm256_fmadd_ps(y, m, v1(2.0000714765e-1f));
  y = _mm256_fmadd_ps(y, m, v1(-2.4999993993e-1f));
  y = _mm256_fmadd_ps(y, m, v1(3.3333331174e-1f));
  y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
  y = _mm256_fmadd_ps(e, v1(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(z, v1(0.5f), y);
  __m256 r = _mm256_add_ps(m, y);
  r = _mm256_fmadd_ps(e, v1(0.693359375f), r);
  r = _mm256_blendv_ps(r, x0, _mm256_cmp_ps(x0, v1(__builtin_inff()), _CMP_EQ_OQ));
  r = _mm256_blendv_ps(r, v1(-__builtin_inff()), _mm256_cmp_ps(x0, _mm256_setzero_ps(), _CMP_EQ_OQ));
  r = _mm256_blendv_ps(r, v1(__builtin_nanf("")), _mm256_cmp_ps(x0, _mm256_setzero_ps(), _CMP_NGE_UQ));
  return r;
}

static inline __m256 sigmoid8(__m256 x) {
  const __m256 one = v1(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

static inline __m256 tanh8(__m256 x) {
  const __m256 sign = _mm256_and_ps(x, v1(-0.0f));
  const __m256 ax = _mm256_andnot_ps(v1(-0.0f), x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 p = v1(-5.70498872745e-3f);
  p = _mm256_fmadd_ps(p, z, v1(2.06390887954e-2f));
  p = _mm256_fmadd_ps(p, z, v1(-5.37397155531e-2f));
  p = _mm256_fmadd_ps(p, z, v1(1.33314422036e-1f));
  p = _mm256_fmadd_ps(p, z, v1(-3.33332819422e-1f));
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
  const __m256 e = exp8(_mm256_add_ps(ax, ax));
  __m256 big = _mm256_sub_ps(v1(1.0f), _mm256_div_ps(v1(2.0f), _mm256_add_ps(e, v1(1.0f))));
  big = _mm256_or_ps(big, sign);
  return _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, v1(0.625f), _CMP_LT_OQ));
}

// exp(-2u), u = sqrt(2/pi) x (1 + 0.044715 x^2)
static inline __m256 gelu_e8(__m256 x, __m256 x2) {
  const __m256 u = _mm256_mul_ps(_mm256_mul_ps(v1(0.7978845608028654f), x), _mm256_fmadd_ps(v1(0.044715f), x2, v1(1.0f)));
  return exp8(_mm256_mul_ps(v1(-2.0f), u));
}

static inline __m256 gelu8(__m256 x) {
  return _mm256_div_ps(x, _mm256_add_ps(v1(1.0f), gelu_e8(x, _mm256_mul_ps(x, x))));
}

static inline __m256 gelu_grad8(__m256 x) {
  const __m256 x2 = _mm256_mul_ps(x, x);
  const __m256 s = _mm256_div_ps(v1(1.0f), _mm256_add_ps(v1(1.0f), gelu_e8(x, x2)));
  const __m256 du = _mm256_mul_ps(v1(2.0f * 0.7978845608028654f), _mm256_fmadd_ps(v1(3.0f * 0.044715f), x2, v1(1.0f)));
  const __m256 ds = _mm256_mul_ps(s, _mm256_sub_ps(v1(1.0f), s));
  return _mm256_fmadd_ps(_mm256_mul_ps(x, ds), du, s);
}

}  // namespace

// Full vectors with plain loads and stores (masked stores are slow on AMD cores), the tail masked: the same
// arithmetic either way.
#define DALLE_EW_UNARY_LOOP(EXPR)                       \
  {                                                     \
    int64_t i = 0;                                      \
    for (; i + 8 <= n; i += 8) {                        \
      const __m256 v = _mm256_loadu_ps(x + i);          \
      _mm256_storeu_ps(y + i, (EXPR));                  \
    }                                                   \
    if (i < n) {                                        \
      const __m256i m = tail8(n - i);                   \
      const __m256 v = _mm256_maskload_ps(x + i, m);    \
      _mm256_maskstore_ps(y + i, m, (EXPR));            \
    }                                                   \
  }                                                     \
  return 1

int ew_unary_avx2(int code, const float* x, float* y, int64_t n, float alpha, float beta) {
  const __m256 va = v1(alpha), vb = v1(beta);
  switch (code) {
    case kAffine: DALLE_EW_UNARY_LOOP(_mm256_add_ps(_mm256_mul_ps(va, v), vb));
    case kExp: DALLE_EW_UNARY_LOOP(exp8(v));
    case kLog: DALLE_EW_UNARY_LOOP(log8(v));
    case kSigmoid: DALLE_EW_UNARY_LOOP(sigmoid8(v));
    case kTanh: DALLE_EW_UNARY_LOOP(tanh8(v));
    case kRelu: DALLE_EW_UNARY_LOOP(_mm256_max_ps(_mm256_setzero_ps(), v));
    case kGelu: DALLE_EW_UNARY_LOOP(gelu8(v));
    case kSqrt: DALLE_EW_UNARY_LOOP(_mm256_sqrt_ps(v));
    case kSquare: DALLE_EW_UNARY_LOOP(_mm256_mul_ps(v, v));
    default: return 0;
  }
}

#define DALLE_EW_BINARY_LOOP(EXPR)                                   \
  {                                                                  \
    int64_t i = 0;                                                   \
    for (; i + 8 <= n; i += 8) {                                     \
      const __m256 p = sa ? _mm256_loadu_ps(a + i) : ca;             \
      const __m256 q = sb ? _mm256_loadu_ps(b + i) : cb;             \
      _mm256_storeu_ps(y + i, (EXPR));                               \
    }                                                                \
    if (i < n) {                                                     \
      const __m256i m = tail8(n - i);                                \
      const __m256 p = sa ? _mm256_maskload_ps(a + i, m) : ca;       \
      const __m256 q = sb ? _mm256_maskload_ps(b + i, m) : cb;       \
      _mm256_maskstore_ps(y + i, m, (EXPR));                         \
    }                                                                \
  }                                                                  \
  return 1

int ew_binary_avx2(int code, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n) {
  if (n <= 0) return 1;
  const __m256 ca = v1(a[0]), cb = v1(b[0]);
  const __m256 one = v1(1.0f);
  switch (code) {
    case kAdd: DALLE_EW_BINARY_LOOP(_mm256_add_ps(p, q));
    case kSub: DALLE_EW_BINARY_LOOP(_mm256_sub_ps(p, q));
    case kMul: DALLE_EW_BINARY_LOOP(_mm256_mul_ps(p, q));
    case kDiv: DALLE_EW_BINARY_LOOP(_mm256_div_ps(p, q));
    case kReluGrad: DALLE_EW_BINARY_LOOP(_mm256_and_ps(p, _mm256_cmp_ps(q, _mm256_setzero_ps(), _CMP_GT_OQ)));
    case kSigmoidGrad: DALLE_EW_BINARY_LOOP(_mm256_mul_ps(p, _mm256_mul_ps(q, _mm256_sub_ps(one, q))));
    case kTanhGrad: DALLE_EW_BINARY_LOOP(_mm256_mul_ps(p, _mm256_fnmadd_ps(q, q, one)));
    case kGeluGrad: DALLE_EW_BINARY_LOOP(_mm256_mul_ps(p, gelu_grad8(q)));
    default: return 0;
  }
}

#undef DALLE_EW_UNARY_LOOP
#undef DALLE_EW_BINARY_LOOP

}  // namespace dalle
