// AVX2 leaf of the transposing strided copy (copy.cc): one 8 x 8 block of 4-byte items,
//   dst[i * dst_ld + j] = src[j * src_ld + i]   (i, j < 8),
// read as 8 source rows and written as 8 destination rows, transposed in registers (unpack, shuffle, then 128-bit
// lane permutes). Items are copied as raw bits (f32 or i32 alike).
#include <immintrin.h>

#include <cstdint>

namespace dalle {

void transpose8x8_b32_avx2(const uint32_t* src, int64_t src_ld, uint32_t* dst, int64_t dst_ld) {
  const float* s = reinterpret_cast<const float*>(src);
  float* d = reinterpret_cast<float*>(dst);
  __m256 r[8], t[8];
  for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(s + j * src_ld);
  for (int k = 0; k < 4; k++) {  // 32-bit interleave of row pairs, per 128-bit lane
    t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 2; k++) {  // 64-bit interleave: each 128-bit lane holds one column of 4 rows
    r[4 * k + 0] = _mm256_shuffle_ps(t[4 * k + 0], t[4 * k + 2], 0x44);
    r[4 * k + 1] = _mm256_shuffle_ps(t[4 * k + 0], t[4 * k + 2], 0xEE);
    r[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
    r[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
  }
  // r[4g + c]: lane L = column 4L + c of rows 4g..4g+3; join lane L of groups 0 and 1.
  for (int c = 0; c < 4; c++) {
    t[c] = _mm256_permute2f128_ps(r[c], r[4 + c], 0x20);
    t[4 + c] = _mm256_permute2f128_ps(r[c], r[4 + c], 0x31);
  }
  for (int i = 0; i < 8; i++) _mm256_storeu_ps(d + i * dst_ld, t[i]);
}

}  // namespace dalle
