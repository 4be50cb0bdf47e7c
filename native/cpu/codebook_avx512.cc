// AVX-512 leaves of the codebook kernels (codebook.cc): the vector layer for codebook_simd.h.
// Leaf functions only (see binding.gyp): no std headers, everything but the entry points has internal linkage.
// GCC 12 reports the undefined-vector start of some AVX-512 intrinsics (masked loads, casts) as used uninitialized
// once inlined; every lane is written.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

#include "simd_math_avx512.h"

namespace dalle {
namespace {

typedef __m512 V;
constexpr int VL = 16;
static inline V vzero() { return _mm512_setzero_ps(); }
static inline V vset1(float x) { return _mm512_set1_ps(x); }
static inline V vloadu(const float* p) { return _mm512_loadu_ps(p); }
static inline V vload_n(const float* p, int n) { return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p); }
static inline void vstoreu(float* p, V v) { _mm512_storeu_ps(p, v); }
static inline void vstore_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v); }
static inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
static inline V vdiv(V a, V b) { return _mm512_div_ps(a, b); }
static inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }
static inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
static inline V vexp(V x) { return simd512::exp16(x); }

// dst[k * 16 + i] = src[i * ld + k] (i, k < 16): the 16 x 16 register transpose of copy_avx512.cc.
static inline void vtranspose(const float* src, int64_t ld, float* dst) {
  __m512i r[16], t[16];
  for (int j = 0; j < 16; j++) r[j] = _mm512_castps_si512(_mm512_loadu_ps(src + j * ld));
  for (int k = 0; k < 8; k++) {
    t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 4; k++) {
    r[4 * k + 0] = _mm512_unpacklo_epi64(t[4 * k + 0], t[4 * k + 2]);
    r[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k + 0], t[4 * k + 2]);
    r[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
    r[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
  }
  for (int c = 0; c < 4; c++) {
    const __m512i a01 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44), a23 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44);
    const __m512i b01 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xEE), b23 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xEE);
    t[c] = _mm512_shuffle_i32x4(a01, a23, 0x88);
    t[4 + c] = _mm512_shuffle_i32x4(a01, a23, 0xDD);
    t[8 + c] = _mm512_shuffle_i32x4(b01, b23, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(b01, b23, 0xDD);
  }
  for (int k = 0; k < 16; k++) _mm512_storeu_si512(dst + k * 16, t[k]);
}

}  // namespace
}  // namespace dalle

#define DALLE_CODEBOOK_SIMD_LAYER 1
#include "codebook_simd.h"

namespace dalle {

double codebook_stats_forward_avx512(const float* l, int64_t V_, int64_t HW, double* qsum, float* work) {
  return stats_forward(l, V_, HW, qsum, work);
}
void codebook_stats_backward_avx512(const float* l, int64_t V_, int64_t HW, const float* g, float* dl, float* work) {
  stats_backward(l, V_, HW, g, dl, work);
}

void codebook_relaxed_block_avx512(const float* l, const float* rows, int64_t V_, int64_t HW, int64_t j, int n,
                                  float inv_tau, float* z, float* work) {
  relaxed_block(l, rows, V_, HW, j, n, inv_tau, z, work);
}
void codebook_relaxed_backward_avx512(const float* z, const float* dz, int64_t V_, int64_t HW, float inv_tau, float* dl) {
  relaxed_backward(z, dz, V_, HW, inv_tau, dl);
}

}  // namespace dalle
