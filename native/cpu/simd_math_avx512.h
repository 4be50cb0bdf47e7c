// Vector math shared by the AVX-512 kernel files (elementwise, softmax). Include only from *_avx512.cc files: the
// functions are static inline, so each file keeps its own copy compiled with its own flags (see binding.gyp).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace dalle {
namespace simd512 {

// exp(x) for 16 floats (Cephes expf: range reduction by ln 2 in two parts, a degree-6 polynomial, scalef). Relative
// error about 2 ulp; exp(x) overflows to +Inf above 88.72 and underflows to 0 below -103.97 like expf; NaN stays NaN
// (max/min take x second).
static inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  const __m512 r2 = _mm512_mul_ps(r, r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// log(x) for 16 floats: Cephes logf on the mantissa in [sqrt(1/2), sqrt(2)) from vgetmantps / vgetexpps (subnormals
// included); about 1 ulp. log(+Inf) = +Inf, log(0) = -Inf, log(x < 0) = log(NaN) = NaN.
static inline __m512 log16(__m512 x) {
  // x = m 2^e with m in [0.5, 1); then m < sqrt(1/2) -> 2m - 1, e - 1, else m - 1 (Cephes logf).
  __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_p5_1, _MM_MANT_SIGN_zero);
  __m512 e = _mm512_add_ps(_mm512_getexp_ps(x), _mm512_set1_ps(1.0f));
  const __mmask16 lo = _mm512_cmp_ps_mask(m, _mm512_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm512_mask_sub_ps(e, lo, e, _mm512_set1_ps(1.0f));
  m = _mm512_mask_add_ps(m, lo, m, m);
  m = _mm512_sub_ps(m, _mm512_set1_ps(1.0f));
  const __m512 z = _mm512_mul_ps(m, m);
  __m512 y = _mm512_set1_ps(7.0376836292e-2f);
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-1.1514610310e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(1.1676998740e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-1.2420140846e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(1.4249322787e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-1.6668057665e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(2.0000714765e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(-2.4999993993e-1f));
  y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(3.3333331174e-1f));
  y = _mm512_mul_ps(_mm512_mul_ps(y, m), z);
  y = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.12194440e-4f), y);
  y = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), y);
  __m512 r = _mm512_add_ps(m, y);
  r = _mm512_fmadd_ps(e, _mm512_set1_ps(0.693359375f), r);
  // Special values: log(+Inf) = +Inf, log(0) = -Inf, log(x < 0) = log(NaN) = NaN.
  const __mmask16 is_inf = _mm512_cmp_ps_mask(x, _mm512_set1_ps(__builtin_inff()), _CMP_EQ_OQ);
  const __mmask16 is_zero = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_EQ_OQ);
  const __mmask16 is_bad = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NGE_UQ);  // x < 0 or NaN
  r = _mm512_mask_mov_ps(r, is_inf, x);
  r = _mm512_mask_mov_ps(r, is_zero, _mm512_set1_ps(-__builtin_inff()));
  r = _mm512_mask_mov_ps(r, is_bad, _mm512_set1_ps(__builtin_nanf("")));
  return r;
}

// dst[i * dst_ld + j] = src[j * src_ld + i] for i, j < 16 (ReLU'd with RELU: max(x, 0), NaN -> 0): 16 rows loaded,
// transposed in registers (unpack 32-bit, unpack 64-bit, then two 128-bit lane shuffles), 16 rows stored, so both sides
// move whole 64-byte lines. Without RELU the items are moved as raw bits (f32 or i32 alike).
template <bool RELU>
static inline void transpose16x16(const float* src, int64_t src_ld, float* dst, int64_t dst_ld) {
  __m512i r[16], t[16];
  for (int j = 0; j < 16; j++) {
    if (RELU) {  // MAXPS gives the second operand for NaN
      r[j] = _mm512_castps_si512(_mm512_max_ps(_mm512_loadu_ps(src + j * src_ld), _mm512_setzero_ps()));
    } else {
      r[j] = _mm512_loadu_si512(src + j * src_ld);
    }
  }
  // 32-bit interleave of row pairs: t[2k] = (r[2k][0], r[2k+1][0], r[2k][1], r[2k+1][1], ...) per 128-bit lane
  for (int k = 0; k < 8; k++) {
    t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
  }
  // 64-bit interleave of pairs of pairs: each 128-bit lane now holds one column of 4 consecutive rows
  for (int k = 0; k < 4; k++) {
    r[4 * k + 0] = _mm512_unpacklo_epi64(t[4 * k + 0], t[4 * k + 2]);
    r[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k + 0], t[4 * k + 2]);
    r[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
    r[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
  }
  // r[4g + c]: lane L = column 4L + c of rows 4g..4g+3. Gather lane L of the 4 groups: 128-bit shuffles.
  for (int c = 0; c < 4; c++) {
    const __m512i a01 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44);       // g0 L0, g0 L1, g1 L0, g1 L1
    const __m512i a23 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44);  // g2 L0, g2 L1, g3 L0, g3 L1
    const __m512i b01 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xEE);       // g0 L2, g0 L3, g1 L2, g1 L3
    const __m512i b23 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xEE);
    t[c] = _mm512_shuffle_i32x4(a01, a23, 0x88);       // column c:      g0 L0, g1 L0, g2 L0, g3 L0
    t[4 + c] = _mm512_shuffle_i32x4(a01, a23, 0xDD);   // column 4 + c:  lane 1 of each group
    t[8 + c] = _mm512_shuffle_i32x4(b01, b23, 0x88);   // column 8 + c
    t[12 + c] = _mm512_shuffle_i32x4(b01, b23, 0xDD);  // column 12 + c
  }
  for (int i = 0; i < 16; i++) _mm512_storeu_si512(dst + i * dst_ld, t[i]);
}

}  // namespace simd512
}  // namespace dalle
