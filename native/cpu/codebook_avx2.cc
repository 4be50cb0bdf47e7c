// AVX2 + FMA leaves of the codebook statistics (codebook.cc): the vector layer for codebook_simd.h.
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

}  // namespace dalle
