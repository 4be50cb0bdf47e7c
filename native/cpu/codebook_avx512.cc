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

// dst[k * 16 + i] = src[i * ld + k] (i, k < 16).
static inline void vtranspose(const float* src, int64_t ld, float* dst) { simd512::transpose16x16<false>(src, ld, dst, 16); }

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
