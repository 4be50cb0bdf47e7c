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

// High 32 bits of the 32x32-bit products a * m, lane by lane: mul_epu32 multiplies the even lanes (as 64-bit
// products), so the odd lanes are shifted down and multiplied separately.
inline __m512i mulhi_epu32(__m512i a, __m512i m) {
  const __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(a, m), 32);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  return _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, odd);
}

}  // namespace

// Philox4x32-10 blocks for the 16 x `groups` counters first_counter, first_counter + 1, ... under key (k0, k1): block j
// is words out[4j .. 4j + 3] (the stream's order, src/core/tensor/rng.ts). Each lane runs one counter through the
// rounds; the four word vectors are then transposed into stream order. Bit-exact with the scalar philox_block.
void philox_blocks_avx512(uint32_t k0, uint32_t k1, uint64_t first_counter, int64_t groups, uint32_t* out) {
  const __m512i m0 = _mm512_set1_epi32((int)0xD2511F53u), m1 = _mm512_set1_epi32((int)0xCD9E8D57u);
  alignas(64) uint32_t lo[16], hi[16];
  for (int64_t g = 0; g < groups; g++) {
    for (int j = 0; j < 16; j++) {
      const uint64_t c = first_counter + (uint64_t)(g * 16 + j);
      lo[j] = (uint32_t)c;
      hi[j] = (uint32_t)(c >> 32);
    }
    __m512i c0 = _mm512_load_si512(lo), c1 = _mm512_load_si512(hi);
    __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
    uint32_t key0 = k0, key1 = k1;
    for (int r = 0; r < 10; r++) {
      const __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(mulhi_epu32(c2, m1), c1), _mm512_set1_epi32((int)key0));
      const __m512i n1 = _mm512_mullo_epi32(c2, m1);
      const __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(mulhi_epu32(c0, m0), c3), _mm512_set1_epi32((int)key1));
      const __m512i n3 = _mm512_mullo_epi32(c0, m0);
      c0 = n0; c1 = n1; c2 = n2; c3 = n3;
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    // (4 words x 16 blocks) -> 16 blocks of 4 words: within each 128-bit lane L, u_i holds block 4L + i ...
    const __m512i t0 = _mm512_unpacklo_epi32(c0, c1), t1 = _mm512_unpackhi_epi32(c0, c1);
    const __m512i t2 = _mm512_unpacklo_epi32(c2, c3), t3 = _mm512_unpackhi_epi32(c2, c3);
    const __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
    const __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
    // ... then a 4 x 4 transpose of 128-bit lanes puts blocks 4L .. 4L + 3 in output vector L.
    const __m512i a = _mm512_shuffle_i32x4(u0, u1, 0x44), b = _mm512_shuffle_i32x4(u0, u1, 0xEE);
    const __m512i c = _mm512_shuffle_i32x4(u2, u3, 0x44), d = _mm512_shuffle_i32x4(u2, u3, 0xEE);
    uint32_t* o = out + g * 64;
    _mm512_storeu_si512(o, _mm512_shuffle_i32x4(a, c, 0x88));
    _mm512_storeu_si512(o + 16, _mm512_shuffle_i32x4(a, c, 0xDD));
    _mm512_storeu_si512(o + 32, _mm512_shuffle_i32x4(b, d, 0x88));
    _mm512_storeu_si512(o + 48, _mm512_shuffle_i32x4(b, d, 0xDD));
  }
}

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
