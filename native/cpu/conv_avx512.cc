// AVX-512 direct-convolution kernels: the vector layer for conv_simd.h, and this ISA's tile sizes.
// Leaf functions only (see binding.gyp): no std headers, everything but the entry points has internal linkage.
// GCC 12 reports the undefined-vector start of some AVX-512 intrinsics (valignd, casts) as maybe used uninitialized
// once inlined; every lane is written.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace dalle {
namespace {

typedef __m512 V;
constexpr int VL = 16;
static inline V vzero() { return _mm512_setzero_ps(); }
static inline V vloadu(const float* p) { return _mm512_loadu_ps(p); }
static inline __mmask16 first_n(int n) { return (__mmask16)((1u << n) - 1u); }  // 0 <= n <= 16
// A load kept in a register: GCC would otherwise fold a reused load into each FMA as a memory operand (one load per
// use, most of them split across cache lines).
static inline V vloadu_reg(const float* p) {
  V v = vloadu(p);
  __asm__("" : "+v"(v));
  return v;
}
static inline V vload_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first_n(n), p); }
// p[0..16), p[1..17), p[2..18) from two loads and two lane rotations (valignd): the 3x3 weight gradient's tile reads
// three shifted windows of each input row, and on Zen 5 it is bound by loads (p[16..32) must be readable).
static inline void vwindows3(const float* p, V* out) {
  const __m512i a = _mm512_castps_si512(vloadu_reg(p)), b = _mm512_castps_si512(vloadu_reg(p + 16));
  out[0] = _mm512_castsi512_ps(a);
  out[1] = _mm512_castsi512_ps(_mm512_alignr_epi32(b, a, 1));
  out[2] = _mm512_castsi512_ps(_mm512_alignr_epi32(b, a, 2));
}
static inline V vset1(float x) { return _mm512_set1_ps(x); }
static inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
static inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
static inline void vstoreu(float* p, V v) { _mm512_storeu_ps(p, v); }
static inline void vstore_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, first_n(n), v); }
// v where g > 0, else 0 (NaN in g gives 0, as the ReLU's gradient does)
static inline V vgate(V v, V g) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(g, vzero(), _CMP_GT_OQ), v); }
// Fixed order: halves, then quarters, then pairs.
static inline float vhsum(V v) {
  __m256 a = _mm256_add_ps(_mm512_extractf32x8_ps(v, 0), _mm512_extractf32x8_ps(v, 1));
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  b = _mm_add_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}

}  // namespace
}  // namespace dalle

#define DALLE_CONV_SIMD_LAYER 1
#include "conv_simd.h"

namespace dalle {

// Tile sizes; the macros let native/dev/conv/build.sh try others (-DCONV_FWD_MR=6 ...).
#ifndef CONV_FWD_MR
#define CONV_FWD_MR 8
#endif
#ifndef CONV_FWD_NR
#define CONV_FWD_NR 3
#endif
#ifndef CONV_DW3_MR
#define CONV_DW3_MR 4
#endif
#ifndef CONV_DW3_U
#define CONV_DW3_U 2
#endif
#ifndef CONV_DW1_MR
#define CONV_DW1_MR 4
#endif
#ifndef CONV_DW1_U
#define CONV_DW1_U 6
#endif
// Forward tile: 8 output channels x 3 vectors of 16 pixels = 24 accumulators (8x3, 6x4, 8x2, 4x6, 16x1 all within 3%
// on Zen 4: FMA-bound; see native/dev/conv/README.md).
enum : int { kFwdMr = CONV_FWD_MR, kFwdNr = CONV_FWD_NR };

int conv_fwd_mr_avx512() { return kFwdMr; }

void conv_fwd_avx512(const ConvFwdJob* jb) {
  switch (jb->k) {
    case 1: fwd_run<kFwdMr, kFwdNr, 1>(jb); break;
    case 3: fwd_run<kFwdMr, kFwdNr, 3>(jb); break;
    case 5: fwd_run<kFwdMr, kFwdNr, 5>(jb); break;
    case 7: fwd_run<kFwdMr, kFwdNr, 7>(jb); break;
    default: fwd_run<kFwdMr, kFwdNr, 0>(jb); break;
  }
}

// Weight-gradient tile: MR output channels x U units of k taps (about 24 accumulators). k = 3: 4 x 2. On Zen 5 (two
// 512-bit FMAs a cycle) the tile is bound by its dy loads, which come from L2: 4 x 2 loads 4 dy and 6 input vectors per
// 24 FMAs where 8 x 1 loaded 8 and 3, and ran the dVAE's 3x3 weight gradients 1.1-1.4x faster (44.0 -> 33.8 ms a
// step; native/dev/conv). On Zen 4 (half the FMA rate) the tiles were within 3% of each other. k = 1: 4 x 6 beat
// 3 x 8, 2 x 12, 6 x 4 and 8 x 3 on Zen 5. The tile never changes a result: each dw element is one lane-wise chain
// over the pixels and one fixed horizontal sum, whichever tile holds it.
int conv_dw_tile_co_avx512(int64_t k) { return k == 1 ? CONV_DW1_MR : k == 3 ? CONV_DW3_MR : k == 5 ? 4 : 3; }
int conv_dw_tile_units_avx512(int64_t k) { return k == 1 ? CONV_DW1_U : k == 3 ? CONV_DW3_U : 1; }

void conv_dw_avx512(const ConvDwJob* jb) {
  switch (jb->k) {
    case 1: dw_run<CONV_DW1_MR, CONV_DW1_U, 1>(jb); break;
    case 3: dw_run<CONV_DW3_MR, CONV_DW3_U, 3>(jb); break;
    case 5: dw_run<4, 1, 5>(jb); break;
    case 7: dw_run<3, 1, 7>(jb); break;
    default: break;  // conv.cc runs other k through im2col + GEMM
  }
}

void conv_db_avx512(const ConvDbJob* jb) { db_run(jb); }

}  // namespace dalle
