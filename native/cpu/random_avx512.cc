// Gumbel values from Philox words, 8 at a time: g = -ln(-ln u), u = (word + 0.5) 2^-32, in double and rounded once to
// float like the reference (src/core/tensor/rng.ts). libm's log, called twice per value, was most of the noise's cost
// (a 16 x 32 x 32 x 1024 draw per dVAE step at a 32x32 grid); here ln x = e ln 2 + ln m with x = 2^e m from
// getexp/getmant, m in [sqrt(1/2), sqrt(2)), and ln m = 2 atanh(s) = 2 (s + s^3/3 + ... + s^17/17), s = (m-1)/(m+1),
// |s| <= 0.1716, so the first omitted term is below 1.2e-16 of the sum: within a few double ulps of libm, which rounds
// to the same float except within ~1e-16 of a rounding boundary (test/tensor/random.test.ts allows 1e-6).
// GCC 12's getexp/getmant/cvtepu32 intrinsics start from _mm512_undefined_pd(), which it then reports as maybe used
// uninitialized when inlined; the values are fully written.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>

namespace dalle {
namespace {

inline __m512d log8(__m512d x) {
  const __m512d one = _mm512_set1_pd(1.0);
  __m512d m = _mm512_getmant_pd(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);  // [1, 2)
  __m512d e = _mm512_getexp_pd(x);
  const __mmask8 high = _mm512_cmp_pd_mask(m, _mm512_set1_pd(1.4142135623730951), _CMP_GT_OQ);
  m = _mm512_mask_mul_pd(m, high, m, _mm512_set1_pd(0.5));
  e = _mm512_mask_add_pd(e, high, e, one);
  const __m512d s = _mm512_div_pd(_mm512_sub_pd(m, one), _mm512_add_pd(m, one));
  const __m512d s2 = _mm512_mul_pd(s, s);
  __m512d p = _mm512_set1_pd(1.0 / 17);
  p = _mm512_fmadd_pd(p, s2, _mm512_set1_pd(1.0 / 15));
  p = _mm512_fmadd_pd(p, s2, _mm512_set1_pd(1.0 / 13));
  p = _mm512_fmadd_pd(p, s2, _mm512_set1_pd(1.0 / 11));
  p = _mm512_fmadd_pd(p, s2, _mm512_set1_pd(1.0 / 9));
  p = _mm512_fmadd_pd(p, s2, _mm512_set1_pd(1.0 / 7));
  p = _mm512_fmadd_pd(p, s2, _mm512_set1_pd(1.0 / 5));
  p = _mm512_fmadd_pd(p, s2, _mm512_set1_pd(1.0 / 3));
  const __m512d two_s = _mm512_add_pd(s, s);
  const __m512d lnm = _mm512_fmadd_pd(_mm512_mul_pd(two_s, s2), p, two_s);
  // fdlibm's split of ln 2: e * ln2_hi is exact for |e| < 2^11
  const __m512d lo = _mm512_fmadd_pd(e, _mm512_set1_pd(1.90821492927058770002e-10), lnm);
  return _mm512_fmadd_pd(e, _mm512_set1_pd(6.93147180369123816490e-01), lo);
}

}  // namespace

void gumbel_from_words_avx512(const uint32_t* words, float* dst, int64_t n) {
  const __m512d half = _mm512_set1_pd(0.5), inv32 = _mm512_set1_pd(1.0 / 4294967296.0);
  const __m512d zero = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t left = n - i;
    const __mmask8 k = left >= 8 ? (__mmask8)0xff : (__mmask8)((1u << left) - 1);
    const __m256i w = _mm256_maskz_loadu_epi32(k, words + i);
    __m512d u = _mm512_mul_pd(_mm512_add_pd(_mm512_cvtepu32_pd(w), half), inv32);
    u = _mm512_mask_blend_pd(k, _mm512_set1_pd(0.5), u);  // lanes past n: any value in (0, 1)
    const __m512d g = _mm512_sub_pd(zero, log8(_mm512_sub_pd(zero, log8(u))));
    _mm256_mask_storeu_ps(dst + i, k, _mm512_cvtpd_ps(g));
  }
}

}  // namespace dalle
