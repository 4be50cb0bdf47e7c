// AVX-512 leaf of the transposing strided copy (copy.cc): one 16 x 16 block of 4-byte items,
//   dst[i * dst_ld + j] = src[j * src_ld + i]   (i, j < 16),
// read as 16 source rows of 16 items and written as 16 destination rows, transposed in registers
// (simd512::transpose16x16): both sides move whole 64-byte lines, where the scalar loop read one item per line. Items
// are copied as raw bits (f32 or i32 alike).
// GCC 12 reports the undefined-vector start of some AVX-512 intrinsics (casts) as used uninitialized once inlined;
// every lane is written.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

#include "simd_math_avx512.h"

namespace dalle {

void transpose16x16_b32_avx512(const uint32_t* src, int64_t src_ld, uint32_t* dst, int64_t dst_ld) {
  simd512::transpose16x16<false>(reinterpret_cast<const float*>(src), src_ld, reinterpret_cast<float*>(dst), dst_ld);
}

}  // namespace dalle
