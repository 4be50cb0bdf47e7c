// AVX2 + FMA leaves of the codebook kernels (codebook.cc): the vector layer for codebook_simd.h.
// Leaf functions only (see binding.gyp): no std headers, everything but the entry points has internal linkage.
#include <immintrin.h>

#include <cstdint>

#include "simd_math_avx2.h"

namespace dalle {
namespace {

typedef __m256 V;
constexpr int VL = 8;
alignas(64) static const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static inline __m256i first_n(int n) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - n)); }
static inline V vzero() { return _mm256_setzero_ps(); }
static inline V vset1(float x) { return _mm256_set1_ps(x); }
static inline V vloadu(const float* p) { return _mm256_loadu_ps(p); }
static inline V vload_n(const float* p, int n) { return _mm256_maskload_ps(p, first_n(n)); }
static inline void vstoreu(float* p, V v) { _mm256_storeu_ps(p, v); }
static inline void vstore_n(float* p, V v, int n) { _mm256_maskstore_ps(p, first_n(n), v); }
static inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
static inline V vdiv(V a, V b) { return _mm256_div_ps(a, b); }
static inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }
static inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
static inline V vexp(V x) { return simd256::exp8(x); }

// dst[k * 8 + i] = src[i * ld + k] (i, k < 8): unpack, shuffle, then swap 128-bit halves.
static inline void vtranspose(const float* src, int64_t ld, float* dst) {
  __m256 r[8], t[8], u[8];
  for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(src + j * ld);
  for (int k = 0; k < 4; k++) {
    t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 2; k++) {
    u[4 * k + 0] = _mm256_shuffle_ps(t[4 * k + 0], t[4 * k + 2], 0x44);
    u[4 * k + 1] = _mm256_shuffle_ps(t[4 * k + 0], t[4 * k + 2], 0xEE);
    u[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
    u[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
  }
  for (int c = 0; c < 4; c++) {
    _mm256_storeu_ps(dst + c * 8, _mm256_permute2f128_ps(u[c], u[4 + c], 0x20));
    _mm256_storeu_ps(dst + (4 + c) * 8, _mm256_permute2f128_ps(u[c], u[4 + c], 0x31));
  }
}

}  // namespace
}  // namespace dalle

#define DALLE_CODEBOOK_SIMD_LAYER 1
#include "codebook_simd.h"

namespace dalle {

double codebook_stats_forward_avx2(const float* l, int64_t V_, int64_t HW, double* qsum, float* work) {
  return stats_forward(l, V_, HW, qsum, work);
}
void codebook_stats_backward_avx2(const float* l, int64_t V_, int64_t HW, const float* g, float* dl, float* work) {
  stats_backward(l, V_, HW, g, dl, work);
}

void codebook_relaxed_block_avx2(const float* l, const float* rows, int64_t V_, int64_t HW, int64_t j, int n,
                                  float inv_tau, float* z, float* work) {
  relaxed_block(l, rows, V_, HW, j, n, inv_tau, z, work);
}
void codebook_relaxed_backward_avx2(const float* z, const float* dz, int64_t V_, int64_t HW, float inv_tau, float* dl) {
  relaxed_backward(z, dz, V_, HW, inv_tau, dl);
}

}  // namespace dalle
