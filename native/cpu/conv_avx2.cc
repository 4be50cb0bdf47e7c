// AVX2 + FMA direct-convolution kernels: the vector layer for conv_simd.h, and this ISA's tile sizes (16 registers).
// Leaf functions only (see binding.gyp): no std headers, everything but the entry points has internal linkage.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace dalle {
namespace {

typedef __m256 V;
constexpr int VL = 8;
alignas(64) static const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static inline __m256i first_n(int n) {  // 0 <= n <= 8
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - n));
}
static inline V vzero() { return _mm256_setzero_ps(); }
static inline V vloadu(const float* p) { return _mm256_loadu_ps(p); }
// A load kept in a register: GCC would otherwise fold a reused load into each FMA as a memory operand (one load per
// use, most of them split across cache lines).
static inline V vloadu_reg(const float* p) {
  V v = vloadu(p);
  __asm__("" : "+x"(v));
  return v;
}
static inline V vload_n(const float* p, int n) { return _mm256_maskload_ps(p, first_n(n)); }
// p[0..8), p[1..9), p[2..10): three loads (AVX2 has no lane rotation across its 128-bit halves).
static inline void vwindows3(const float* p, V* out) {
  out[0] = vloadu_reg(p);
  out[1] = vloadu_reg(p + 1);
  out[2] = vloadu_reg(p + 2);
}
static inline V vset1(float x) { return _mm256_set1_ps(x); }
static inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
static inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
static inline void vstoreu(float* p, V v) { _mm256_storeu_ps(p, v); }
static inline void vstore_n(float* p, V v, int n) { _mm256_maskstore_ps(p, first_n(n), v); }
// v where g > 0, else 0 (NaN in g gives 0, as the ReLU's gradient does)
static inline V vgate(V v, V g) { return _mm256_and_ps(v, _mm256_cmp_ps(g, vzero(), _CMP_GT_OQ)); }
static inline float vhsum(V v) {
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  b = _mm_add_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}

}  // namespace
}  // namespace dalle

#define DALLE_CONV_SIMD_LAYER 1
#include "conv_simd.h"

namespace dalle {

// Forward tile: 4 output channels x 2 vectors of 8 pixels = 8 accumulators (measured fastest of 4x3, 3x3, 6x2,
// 2x5 on Zen 4 with no channel padding at the dVAE widths).
#ifndef CONV2_FWD_MR
#define CONV2_FWD_MR 4
#endif
#ifndef CONV2_FWD_NR
#define CONV2_FWD_NR 2
#endif
enum : int { kFwdMr = CONV2_FWD_MR, kFwdNr = CONV2_FWD_NR };

int conv_fwd_mr_avx2() { return kFwdMr; }

void conv_fwd_avx2(const ConvFwdJob* jb) {
  switch (jb->k) {
    case 1: fwd_run<kFwdMr, kFwdNr, 1>(jb); break;
    case 3: fwd_run<kFwdMr, kFwdNr, 3>(jb); break;
    case 5: fwd_run<kFwdMr, kFwdNr, 5>(jb); break;
    case 7: fwd_run<kFwdMr, kFwdNr, 7>(jb); break;
    default: fwd_run<kFwdMr, kFwdNr, 0>(jb); break;
  }
}

// Weight-gradient tile: MR output channels x U units of k taps (12-14 accumulators).
int conv_dw_tile_co_avx2(int64_t k) { return k == 1 ? 2 : k == 7 ? 1 : 2; }
int conv_dw_tile_units_avx2(int64_t k) { return k == 1 ? 6 : k == 5 ? 1 : 2; }

void conv_dw_avx2(const ConvDwJob* jb) {
  switch (jb->k) {
    case 1: dw_run<2, 6, 1>(jb); break;
    case 3: dw_run<2, 2, 3>(jb); break;
    case 5: dw_run<2, 1, 5>(jb); break;
    case 7: dw_run<1, 2, 7>(jb); break;
    default: break;  // conv.cc runs other k through im2col + GEMM
  }
}

void conv_db_avx2(const ConvDbJob* jb) { db_run(jb); }

}  // namespace dalle
