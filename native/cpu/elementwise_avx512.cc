// AVX-512 leaves of the elementwise kernels (driven by elementwise.cc, which holds the portable reference of every
// formula). Compiled with -mavx512f ...: leaf C-style functions only, no std headers (binding.gyp).
//
// exp: Cephes expf scheme. n = round(x log2 e), r = x - n ln2 (ln2 split in two), exp(r) = 1 + r + r^2 P(r) on
// |r| <= ln2/2 (1-2 ulp), 2^n applied with vscalefps, which overflows to +Inf and underflows smoothly through the
// subnormals to 0. x is clamped to [-104, 89] first; NaN propagates (max/min return their second operand on NaN).
// log: Cephes logf on the mantissa in [sqrt(1/2), sqrt(2)) from vgetmantps / vgetexpps (subnormals included).
// tanh: Cephes tanhf: an odd polynomial for |x| < 0.625, 1 - 2 / (exp(2|x|) + 1) with the sign restored above.
// sigmoid: 1 / (1 + exp(-x)); gelu (tanh approximation): x / (1 + exp(-2u)), u = sqrt(2/pi) x (1 + 0.044715 x^2).
// Tails use masked loads and stores with the same code, so each element's value is independent of its position.
#include <immintrin.h>

#include "simd_math_avx512.h"

#include <cstdint>

// GCC 12 warns about the undefined upper part that _mm512_* intrinsics start from (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace dalle {

namespace {

// Op codes: keep in sync with elementwise.cc.
enum { kAffine = 0, kExp, kLog, kSigmoid, kTanh, kRelu, kGelu, kSqrt, kSquare };
enum { kAdd = 0, kSub, kMul, kDiv, kReluGrad, kSigmoidGrad, kTanhGrad, kGeluGrad };

static inline __m512 v1(float f) { return _mm512_set1_ps(f); }

static inline __mmask16 tail16(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

using simd512::exp16;

using simd512::log16;

static inline __m512 sigmoid16(__m512 x) {
  const __m512 one = v1(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

static inline __m512 tanh16(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  // |x| < 0.625: x + x^3 P(x^2)
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 p = v1(-5.70498872745e-3f);
  p = _mm512_fmadd_ps(p, z, v1(2.06390887954e-2f));
  p = _mm512_fmadd_ps(p, z, v1(-5.37397155531e-2f));
  p = _mm512_fmadd_ps(p, z, v1(1.33314422036e-1f));
  p = _mm512_fmadd_ps(p, z, v1(-3.33332819422e-1f));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
  // else: sign(x) (1 - 2 / (exp(2|x|) + 1))
  const __m512 e = exp16(_mm512_add_ps(ax, ax));
  __m512 big = _mm512_sub_ps(v1(1.0f), _mm512_div_ps(v1(2.0f), _mm512_add_ps(e, v1(1.0f))));
  big = _mm512_or_ps(big, _mm512_and_ps(x, v1(-0.0f)));
  const __mmask16 is_small = _mm512_cmp_ps_mask(ax, v1(0.625f), _CMP_LT_OQ);
  return _mm512_mask_mov_ps(big, is_small, small);
}

// s = sigmoid(2u) for gelu and its derivative; u = sqrt(2/pi) x (1 + 0.044715 x^2).
static inline __m512 gelu_s16(__m512 x, __m512 x2) {
  const __m512 u = _mm512_mul_ps(_mm512_mul_ps(v1(0.7978845608028654f), x), _mm512_fmadd_ps(v1(0.044715f), x2, v1(1.0f)));
  const __m512 e = exp16(_mm512_mul_ps(v1(-2.0f), u));
  return _mm512_div_ps(v1(1.0f), _mm512_add_ps(v1(1.0f), e));
}

static inline __m512 gelu16(__m512 x) {
  const __m512 x2 = _mm512_mul_ps(x, x);
  const __m512 u = _mm512_mul_ps(_mm512_mul_ps(v1(0.7978845608028654f), x), _mm512_fmadd_ps(v1(0.044715f), x2, v1(1.0f)));
  const __m512 e = exp16(_mm512_mul_ps(v1(-2.0f), u));
  return _mm512_div_ps(x, _mm512_add_ps(v1(1.0f), e));
}

// gelu'(x) = s + x s (1 - s) 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
static inline __m512 gelu_grad16(__m512 x) {
  const __m512 x2 = _mm512_mul_ps(x, x);
  const __m512 s = gelu_s16(x, x2);
  const __m512 du = _mm512_mul_ps(v1(2.0f * 0.7978845608028654f), _mm512_fmadd_ps(v1(3.0f * 0.044715f), x2, v1(1.0f)));
  const __m512 ds = _mm512_mul_ps(s, _mm512_sub_ps(v1(1.0f), s));
  return _mm512_fmadd_ps(_mm512_mul_ps(x, ds), du, s);
}

}  // namespace

// Full vectors with plain loads and stores, the tail masked: the same arithmetic either way.
#define DALLE_EW_UNARY_LOOP(EXPR)                            \
  {                                                          \
    int64_t i = 0;                                           \
    for (; i + 16 <= n; i += 16) {                           \
      const __m512 v = _mm512_loadu_ps(x + i);               \
      _mm512_storeu_ps(y + i, (EXPR));                       \
    }                                                        \
    if (i < n) {                                             \
      const __mmask16 m = tail16(n - i);                     \
      const __m512 v = _mm512_maskz_loadu_ps(m, x + i);      \
      _mm512_mask_storeu_ps(y + i, m, (EXPR));               \
    }                                                        \
  }                                                          \
  return 1

int ew_unary_avx512(int code, const float* x, float* y, int64_t n, float alpha, float beta) {
  const __m512 va = v1(alpha), vb = v1(beta);
  switch (code) {
    case kAffine: DALLE_EW_UNARY_LOOP(_mm512_add_ps(_mm512_mul_ps(va, v), vb));
    case kExp: DALLE_EW_UNARY_LOOP(exp16(v));
    case kLog: DALLE_EW_UNARY_LOOP(log16(v));
    case kSigmoid: DALLE_EW_UNARY_LOOP(sigmoid16(v));
    case kTanh: DALLE_EW_UNARY_LOOP(tanh16(v));
    case kRelu: DALLE_EW_UNARY_LOOP(_mm512_max_ps(_mm512_setzero_ps(), v));
    case kGelu: DALLE_EW_UNARY_LOOP(gelu16(v));
    case kSqrt: DALLE_EW_UNARY_LOOP(_mm512_sqrt_ps(v));
    case kSquare: DALLE_EW_UNARY_LOOP(_mm512_mul_ps(v, v));
    default: return 0;
  }
}

// sa / sb: 1 = a vector operand, 0 = one value broadcast over the run.
#define DALLE_EW_BINARY_LOOP(EXPR)                                             \
  {                                                                            \
    int64_t i = 0;                                                             \
    for (; i + 16 <= n; i += 16) {                                             \
      const __m512 p = sa ? _mm512_loadu_ps(a + i) : ca;                       \
      const __m512 q = sb ? _mm512_loadu_ps(b + i) : cb;                       \
      _mm512_storeu_ps(y + i, (EXPR));                                         \
    }                                                                          \
    if (i < n) {                                                               \
      const __mmask16 m = tail16(n - i);                                       \
      const __m512 p = sa ? _mm512_maskz_loadu_ps(m, a + i) : ca;              \
      const __m512 q = sb ? _mm512_maskz_loadu_ps(m, b + i) : cb;              \
      _mm512_mask_storeu_ps(y + i, m, (EXPR));                                 \
    }                                                                          \
  }                                                                            \
  return 1

int ew_binary_avx512(int code, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n) {
  if (n <= 0) return 1;
  const __m512 ca = v1(a[0]), cb = v1(b[0]);
  const __m512 one = v1(1.0f);
  switch (code) {
    case kAdd: DALLE_EW_BINARY_LOOP(_mm512_add_ps(p, q));
    case kSub: DALLE_EW_BINARY_LOOP(_mm512_sub_ps(p, q));
    case kMul: DALLE_EW_BINARY_LOOP(_mm512_mul_ps(p, q));
    case kDiv: DALLE_EW_BINARY_LOOP(_mm512_div_ps(p, q));
    case kReluGrad:
      DALLE_EW_BINARY_LOOP(_mm512_maskz_mov_ps(_mm512_cmp_ps_mask(q, _mm512_setzero_ps(), _CMP_GT_OQ), p));
    case kSigmoidGrad: DALLE_EW_BINARY_LOOP(_mm512_mul_ps(p, _mm512_mul_ps(q, _mm512_sub_ps(one, q))));
    case kTanhGrad: DALLE_EW_BINARY_LOOP(_mm512_mul_ps(p, _mm512_fnmadd_ps(q, q, one)));
    case kGeluGrad: DALLE_EW_BINARY_LOOP(_mm512_mul_ps(p, gelu_grad16(q)));
    default: return 0;
  }
}

#undef DALLE_EW_UNARY_LOOP
#undef DALLE_EW_BINARY_LOOP

}  // namespace dalle
