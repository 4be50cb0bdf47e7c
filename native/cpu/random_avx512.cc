// Gumbel values from Philox words, 16 at a time in float: g = -ln(t), t = -ln u, u = (word + 0.5) 2^-32. The reference
// (src/core/tensor/rng.ts) works in double; here t comes from u directly when u < 1/2, and above from 1 - u =
// (~word + 0.5) 2^-32 through log1p (Goldberg's log(z) x / (z - 1), z = 1 + x rounded), so its relative error stays a
// few float ulp even for u within 2^-32 of 1 (where ln u itself would lose the digits); g is then within about 1e-6 of
// the reference, absolute for small g (test/tensor/random.test.ts allows 1e-6 (1 + |g|)). Two double logarithms per
// value with a division each were three quarters of a dVAE step's noise (4 of 5.4 ms for 4.2M values).
// GCC 12's getexp/getmant/cvtepu32 intrinsics start from an undefined vector, which it then reports as maybe used
// uninitialized when inlined; the values are fully written.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>

#include "simd_math_avx512.h"

namespace dalle {
namespace {

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
  const __m512 scale = _mm512_set1_ps(2.3283064365386963e-10f), half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 k = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    const __m512i w = _mm512_mask_loadu_epi32(_mm512_set1_epi32(1 << 30), k, words + i);  // past n: any word
    // u = (w + 0.5) 2^-32 and 1 - u = (~w + 0.5) 2^-32 (~w = 2^32 - 1 - w), each from its integer: both to 2^-24
    const __m512 u = _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepu32_ps(w), half), scale);
    const __m512 omu = _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepu32_ps(_mm512_xor_si512(w, _mm512_set1_epi32(-1))), half), scale);
    // -ln u: directly for u < 1/2; above, -log1p(-(1 - u)) by log(z) (-omu) / (z - 1), z = 1 - omu rounded
    // (Goldberg's correction for the rounding of z: relative error a few ulp, where log(u) itself would lose the
    // digits of 1 - u)
    const __m512 z = _mm512_sub_ps(one, omu);
    const __mmask16 z_one = _mm512_cmp_ps_mask(z, one, _CMP_EQ_OQ);
    const __m512 lp = _mm512_mask_mov_ps(
        _mm512_div_ps(_mm512_mul_ps(simd512::log16(z), omu), _mm512_sub_ps(z, one)), z_one, omu);  // -log1p(-omu)
    const __mmask16 low = _mm512_cmp_ps_mask(u, half, _CMP_LT_OQ);
    const __m512 t = _mm512_mask_mov_ps(lp, low, _mm512_sub_ps(_mm512_setzero_ps(), simd512::log16(u)));
    _mm512_mask_storeu_ps(dst + i, k, _mm512_sub_ps(_mm512_setzero_ps(), simd512::log16(t)));
  }
}

}  // namespace dalle
