// Vector math shared by the AVX2 kernel files (elementwise, sparse attention). Include only from *_avx2.cc files: the
// functions are static inline, so each file keeps its own copy compiled with its own flags (see binding.gyp).
#pragma once
#include <immintrin.h>

namespace dalle {
namespace simd256 {

// exp(x) for 8 floats: Cephes expf; without vscalefps, 2^n is built in the exponent bits as 2^floor(n/2) *
// 2^(n - floor(n/2)), so that n in [-150, 128] (x from -104 to ln(FLT_MAX)) is exact, subnormal results included;
// x > 88.72 gives +Inf; NaN stays NaN.
static inline __m256 exp8(__m256 x0) {
  __m256 x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x0);  // NaN x: returned unchanged (second operand)
  x = _mm256_min_ps(_mm256_set1_ps(88.72283905206835f), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  const __m256 r2 = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n with n in [-150, 128] as 2^n1 * 2^n2 (n1 = floor(n/2), both in the normal range): p 2^n1 is exact and the
  // second product rounds once, into the subnormals when it must, like vscalefps.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
  const __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  // Past ln(FLT_MAX) the clamped x would give FLT_MAX: the answer is +Inf. A NaN x left p NaN, so y is NaN.
  return _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()),
                          _mm256_cmp_ps(x0, _mm256_set1_ps(88.72283905206835f), _CMP_GT_OQ));
}

}  // namespace simd256
}  // namespace dalle
