// AVX-512 leaf of the transposing strided copy (copy.cc): one 16 x 16 block of 4-byte items,
//   dst[i * dst_ld + j] = src[j * src_ld + i]   (i, j < 16),
// read as 16 source rows of 16 items and written as 16 destination rows, transposed in registers (unpack 32-bit,
// unpack 64-bit, then two 128-bit lane shuffles): both sides move whole 64-byte lines, where the scalar loop read one
// item per line. Items are copied as raw bits (f32 or i32 alike).
#include <immintrin.h>

#include <cstdint>

namespace dalle {

void transpose16x16_b32_avx512(const uint32_t* src, int64_t src_ld, uint32_t* dst, int64_t dst_ld) {
  __m512i r[16], t[16];
  for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_si512(src + j * src_ld);
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
    // lanes (0, 1) of groups 0 and 1, then of groups 2 and 3; and lanes (2, 3) likewise
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

}  // namespace dalle
