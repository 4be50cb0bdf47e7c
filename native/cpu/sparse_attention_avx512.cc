// AVX-512 tile kernels of the sparse attention; contracts and the tile layout in sparse_attention_tiles.h.
// Broadcast GEMM: C is computed in strips of up to 64 columns (CH vectors of 16) and MR rows, MR * CH accumulators
// in registers (16 at most of the 32 zmm); per k, CH loads of B and MR broadcasts of a. No packing: at these sizes
// (M, N <= ~100, K = head width 32..64) packing cost about as much as the arithmetic.
// Softmax: 16 lanes (queries) a vector, down the tile's rows (keys); a key's lanes are masked by comparing its
// element index with each lane's allowed interval [lo, hi) of its segment.
#include <immintrin.h>
#include <math.h>

#include "simd_math_avx512.h"
#include "sparse_attention_tiles.h"

// GCC 12 reports its own _mm512_undefined_ps() inside the unmasked intrinsics of exp16 as uninitialized (a false
// positive, as in softmax_avx512.cc).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace dalle {

namespace {

using simd512::exp16;

inline __mmask16 tail_mask(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

// Rows a step: MR * CH <= 16 accumulators, and MR row pointers of a stay in general registers.
template <int CH>
struct RowsPerStep {
  static constexpr int value = CH <= 2 ? 8 : CH == 3 ? 5 : 4;
};

// Columns [n0, n0 + nn) of C, nn <= 16 * CH.
template <int CH>
void gemm_strip(int64_t M, int64_t n0, int64_t nn, int64_t K, float alpha, const float* a, int64_t sai, int64_t sak,
                const float* B, int64_t ldb, int accumulate, float* C, int64_t ldc) {
  constexpr int MR = RowsPerStep<CH>::value;
  __mmask16 mask[CH];
  for (int c = 0; c < CH; c++) mask[c] = tail_mask(nn - 16 * c);
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t i0 = 0; i0 < M; i0 += MR) {
    // Rows past M repeat the last row (valid memory); their results are not stored.
    const float* ap[MR];
    for (int i = 0; i < MR; i++) ap[i] = a + (i0 + i < M ? i0 + i : M - 1) * sai;
    __m512 acc[MR][CH];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
      for (int c = 0; c < CH; c++) acc[i][c] = _mm512_setzero_ps();
    const float* bk = B + n0;
    for (int64_t k = 0; k < K; k++) {
      __m512 b[CH];
#pragma GCC unroll 4
      for (int c = 0; c < CH; c++) b[c] = _mm512_maskz_loadu_ps(mask[c], bk + 16 * c);
#pragma GCC unroll 16
      for (int i = 0; i < MR; i++) {
        const __m512 x = _mm512_set1_ps(*ap[i]);
#pragma GCC unroll 4
        for (int c = 0; c < CH; c++) acc[i][c] = _mm512_fmadd_ps(x, b[c], acc[i][c]);
        ap[i] += sak;
      }
      bk += ldb;
    }
    // Constant indices into acc only (a loop to M - i0 made GCC keep acc on the stack, stored every k).
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      if (i0 + i < M) {
        float* c_row = C + (i0 + i) * ldc + n0;
#pragma GCC unroll 4
        for (int c = 0; c < CH; c++) {
          __m512 v = _mm512_mul_ps(acc[i][c], va);
          if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask[c], c_row + 16 * c));
          _mm512_mask_storeu_ps(c_row + 16 * c, mask[c], v);
        }
      }
    }
  }
}

// Lanes of key element e (broadcast in ev) that segment s allows: lo <= e < hi.
inline __mmask16 allowed(__m512i ev, const int32_t* lo, const int32_t* hi) {
  return _mm512_cmpge_epi32_mask(ev, _mm512_loadu_si512(lo)) & _mm512_cmplt_epi32_mask(ev, _mm512_loadu_si512(hi));
}

// x[i] = row i of a 16 x 16 block -> x[j] = column j.
inline void transpose16(__m512* x) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {  // 2 x 2 blocks of pairs
    t[2 * i] = _mm512_unpacklo_ps(x[2 * i], x[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(x[2 * i], x[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) {  // 4 x 4 blocks
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    x[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    x[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    x[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    x[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
#pragma GCC unroll 2
  for (int h = 0; h < 2; h++)  // 128-bit lanes: rows 8h + {0..3} with 8h + {4..7}
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
      t[8 * h + i] = _mm512_shuffle_f32x4(x[8 * h + i], x[8 * h + 4 + i], 0x88);
      t[8 * h + 4 + i] = _mm512_shuffle_f32x4(x[8 * h + i], x[8 * h + 4 + i], 0xdd);
    }
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {  // and the two halves
    x[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
    x[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
  }
}

}  // namespace

void sa_bcast_gemm_avx512(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t sai, int64_t sak,
                          const float* B, int64_t ldb, int accumulate, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    const int64_t nn = N - n0 < 64 ? N - n0 : 64;
    switch ((nn + 15) / 16) {
      case 1: gemm_strip<1>(M, n0, nn, K, alpha, a, sai, sak, B, ldb, accumulate, C, ldc); break;
      case 2: gemm_strip<2>(M, n0, nn, K, alpha, a, sai, sak, B, ldb, accumulate, C, ldc); break;
      case 3: gemm_strip<3>(M, n0, nn, K, alpha, a, sai, sak, B, ldb, accumulate, C, ldc); break;
      default: gemm_strip<4>(M, n0, nn, K, alpha, a, sai, sak, B, ldb, accumulate, C, ldc); break;
    }
  }
}

// 16 x 16 blocks, transposed in registers (unpack, then 128-bit lane shuffles). Scalar stores, then gathers, each
// took about a fifth of the forward at D = 32 on Zen 5 (partly waiting on the block's first reads of q); this about
// 6% with the operands in cache.
void sa_transpose_avx512(const float* src, int64_t ld, int64_t R, int64_t D, int64_t L, float* dst) {
  for (int64_t r0 = 0; r0 < L; r0 += 16)
    for (int64_t d0 = 0; d0 < D; d0 += 16) {
      const __mmask16 cols = tail_mask(D - d0);
      __m512 x[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; i++)
        x[i] = r0 + i < R ? _mm512_maskz_loadu_ps(cols, src + (r0 + i) * ld + d0) : _mm512_setzero_ps();
      transpose16(x);
      const int64_t n = D - d0 < 16 ? D - d0 : 16;
#pragma GCC unroll 16
      for (int j = 0; j < 16; j++)
        if (j < n) _mm512_storeu_ps(dst + (d0 + j) * L + r0, x[j]);
    }
}

void sa_softmax_forward_avx512(float* tile, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                               const int32_t* hi, float* lse) {
  for (int64_t v = 0; v < L; v += 16) {  // 16 queries at a time
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int64_t s = 0; s < ns; s++) {
      const float* x = tile + segs[s].off * L + v;
      for (int64_t e = 0; e < segs[s].n; e++, x += L) {
        const __mmask16 k = allowed(_mm512_set1_epi32((int)e), lo + s * L + v, hi + s * L + v);
        m = _mm512_mask_max_ps(m, k, m, _mm512_loadu_ps(x));
      }
    }
    // Lanes with no allowed key keep m = -inf; their exponentials are masked off, so their sum is 0.
    __m512 sum = _mm512_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
      float* x = tile + segs[s].off * L + v;
      for (int64_t e = 0; e < segs[s].n; e++, x += L) {
        const __mmask16 k = allowed(_mm512_set1_epi32((int)e), lo + s * L + v, hi + s * L + v);
        const __m512 p = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_loadu_ps(x), m)));
        sum = _mm512_add_ps(sum, p);
        _mm512_storeu_ps(x, p);
      }
    }
    const __mmask16 any = _mm512_cmp_ps_mask(sum, _mm512_setzero_ps(), _CMP_GT_OQ);
    const __m512 inv = _mm512_maskz_div_ps(any, _mm512_set1_ps(1.0f), sum);
    for (int64_t s = 0; s < ns; s++) {
      float* x = tile + segs[s].off * L + v;
      for (int64_t e = 0; e < segs[s].n; e++, x += L) _mm512_storeu_ps(x, _mm512_mul_ps(_mm512_loadu_ps(x), inv));
    }
    alignas(64) float ms[16], ss[16];
    _mm512_store_ps(ms, m);
    _mm512_store_ps(ss, sum);
    for (int r = 0; r < 16; r++) lse[v + r] = ss[r] > 0.0f ? ms[r] + logf(ss[r]) : -INFINITY;
  }
}

void sa_softmax_backward_avx512(float* p, float* dp, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                                const int32_t* hi, const float* lse) {
  for (int64_t v = 0; v < L; v += 16) {
    const __m512 shift = _mm512_loadu_ps(lse + v);
    __m512 di = _mm512_setzero_ps();  // sum over keys of P dP
    for (int64_t s = 0; s < ns; s++) {
      const int64_t o = segs[s].off * L + v;
      float* x = p + o;
      const float* y = dp + o;
      for (int64_t e = 0; e < segs[s].n; e++, x += L, y += L) {
        const __mmask16 k = allowed(_mm512_set1_epi32((int)e), lo + s * L + v, hi + s * L + v);
        const __m512 pv = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_loadu_ps(x), shift)));
        _mm512_storeu_ps(x, pv);
        di = _mm512_fmadd_ps(pv, _mm512_loadu_ps(y), di);
      }
    }
    for (int64_t s = 0; s < ns; s++) {
      const int64_t o = segs[s].off * L + v;
      const float* x = p + o;
      float* y = dp + o;
      for (int64_t e = 0; e < segs[s].n; e++, x += L, y += L)
        _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_loadu_ps(x), _mm512_sub_ps(_mm512_loadu_ps(y), di)));
    }
  }
}

}  // namespace dalle
