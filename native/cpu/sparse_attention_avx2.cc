// AVX2 + FMA tile kernels of the sparse attention: the AVX-512 kernels' algorithm (sparse_attention_avx512.cc;
// contracts in sparse_attention_tiles.h) with 8-lane vectors, so a 16-lane tile row is two vectors. Broadcast GEMM
// strips of up to 32 columns, MR * CH <= 12 accumulators of the 16 ymm registers (4 columns x 3 rows spills a few
// registers but measured faster than 4 x 2).
#include <immintrin.h>
#include <math.h>

#include "simd_math_avx2.h"
#include "sparse_attention_tiles.h"

namespace dalle {

namespace {

using simd256::exp8;

// All-ones in lanes [0, n).
inline __m256i tail8(int64_t n) {
  const int k = n >= 8 ? 8 : n <= 0 ? 0 : (int)n;
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <int CH>
struct RowsPerStep {
  static constexpr int value = CH == 1 ? 8 : CH == 2 ? 6 : CH == 3 ? 4 : 3;
};

// Columns [n0, n0 + nn) of C, nn <= 8 * CH.
template <int CH>
void gemm_strip(int64_t M, int64_t n0, int64_t nn, int64_t K, float alpha, const float* a, int64_t sai, int64_t sak,
                const float* B, int64_t ldb, int accumulate, float* C, int64_t ldc) {
  constexpr int MR = RowsPerStep<CH>::value;
  __m256i mask[CH];
  for (int c = 0; c < CH; c++) mask[c] = tail8(nn - 8 * c);
  const bool full = nn == 8 * CH;
  const __m256 va = _mm256_set1_ps(alpha);
  for (int64_t i0 = 0; i0 < M; i0 += MR) {
    // Rows past M repeat the last row (valid memory); their results are not stored.
    const float* ap[MR];
    for (int i = 0; i < MR; i++) ap[i] = a + (i0 + i < M ? i0 + i : M - 1) * sai;
    __m256 acc[MR][CH];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
      for (int c = 0; c < CH; c++) acc[i][c] = _mm256_setzero_ps();
    const float* bk = B + n0;
    for (int64_t k = 0; k < K; k++) {
      __m256 b[CH];
#pragma GCC unroll 4
      for (int c = 0; c < CH; c++)
        b[c] = full ? _mm256_loadu_ps(bk + 8 * c) : _mm256_maskload_ps(bk + 8 * c, mask[c]);
#pragma GCC unroll 8
      for (int i = 0; i < MR; i++) {
        const __m256 x = _mm256_broadcast_ss(ap[i]);
#pragma GCC unroll 4
        for (int c = 0; c < CH; c++) acc[i][c] = _mm256_fmadd_ps(x, b[c], acc[i][c]);
        ap[i] += sak;
      }
      bk += ldb;
    }
    // Constant indices into acc only (a loop to M - i0 made GCC keep acc on the stack).
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      if (i0 + i < M) {
        float* c_row = C + (i0 + i) * ldc + n0;
#pragma GCC unroll 4
        for (int c = 0; c < CH; c++) {
          __m256 v = _mm256_mul_ps(acc[i][c], va);
          if (accumulate) v = _mm256_add_ps(v, _mm256_maskload_ps(c_row + 8 * c, mask[c]));
          _mm256_maskstore_ps(c_row + 8 * c, mask[c], v);
        }
      }
    }
  }
}

// Lanes of key element e (broadcast in ev) that segment s allows: lo <= e < hi, as a float mask.
inline __m256 allowed(__m256i ev, const int32_t* lo, const int32_t* hi) {
  const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo));
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi));
  return _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(l, ev), _mm256_cmpgt_epi32(h, ev)));
}

}  // namespace

void sa_bcast_gemm_avx2(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t sai, int64_t sak,
                        const float* B, int64_t ldb, int accumulate, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  for (int64_t n0 = 0; n0 < N; n0 += 32) {
    const int64_t nn = N - n0 < 32 ? N - n0 : 32;
    switch ((nn + 7) / 8) {
      case 1: gemm_strip<1>(M, n0, nn, K, alpha, a, sai, sak, B, ldb, accumulate, C, ldc); break;
      case 2: gemm_strip<2>(M, n0, nn, K, alpha, a, sai, sak, B, ldb, accumulate, C, ldc); break;
      case 3: gemm_strip<3>(M, n0, nn, K, alpha, a, sai, sak, B, ldb, accumulate, C, ldc); break;
      default: gemm_strip<4>(M, n0, nn, K, alpha, a, sai, sak, B, ldb, accumulate, C, ldc); break;
    }
  }
}

void sa_transpose_avx2(const float* src, int64_t ld, int64_t R, int64_t D, int64_t L, float* dst) {
  for (int64_t d = 0; d < D; d++)
    for (int64_t r = R; r < L; r++) dst[d * L + r] = 0.0f;
  for (int64_t r = 0; r < R; r++)
    for (int64_t d = 0; d < D; d++) dst[d * L + r] = src[r * ld + d];
}

void sa_softmax_forward_avx2(float* tile, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                             const int32_t* hi, float* lse) {
  for (int64_t v = 0; v < L; v += 8) {  // 8 queries at a time
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (int64_t s = 0; s < ns; s++) {
      const float* x = tile + segs[s].off * L + v;
      for (int64_t e = 0; e < segs[s].n; e++, x += L) {
        const __m256 k = allowed(_mm256_set1_epi32((int)e), lo + s * L + v, hi + s * L + v);
        m = _mm256_blendv_ps(m, _mm256_max_ps(m, _mm256_loadu_ps(x)), k);
      }
    }
    // Lanes with no allowed key keep m = -inf; their exponentials are masked off, so their sum is 0.
    __m256 sum = _mm256_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
      float* x = tile + segs[s].off * L + v;
      for (int64_t e = 0; e < segs[s].n; e++, x += L) {
        const __m256 k = allowed(_mm256_set1_epi32((int)e), lo + s * L + v, hi + s * L + v);
        const __m256 p = _mm256_and_ps(k, exp8(_mm256_sub_ps(_mm256_loadu_ps(x), m)));
        sum = _mm256_add_ps(sum, p);
        _mm256_storeu_ps(x, p);
      }
    }
    const __m256 any = _mm256_cmp_ps(sum, _mm256_setzero_ps(), _CMP_GT_OQ);
    const __m256 inv = _mm256_and_ps(any, _mm256_div_ps(_mm256_set1_ps(1.0f), sum));
    for (int64_t s = 0; s < ns; s++) {
      float* x = tile + segs[s].off * L + v;
      for (int64_t e = 0; e < segs[s].n; e++, x += L) _mm256_storeu_ps(x, _mm256_mul_ps(_mm256_loadu_ps(x), inv));
    }
    alignas(32) float ms[8], ss[8];
    _mm256_store_ps(ms, m);
    _mm256_store_ps(ss, sum);
    for (int r = 0; r < 8; r++) lse[v + r] = ss[r] > 0.0f ? ms[r] + logf(ss[r]) : -INFINITY;
  }
}

void sa_softmax_backward_avx2(float* p, float* dp, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                              const int32_t* hi, const float* lse) {
  for (int64_t v = 0; v < L; v += 8) {
    const __m256 shift = _mm256_loadu_ps(lse + v);
    __m256 di = _mm256_setzero_ps();  // sum over keys of P dP
    for (int64_t s = 0; s < ns; s++) {
      const int64_t o = segs[s].off * L + v;
      float* x = p + o;
      const float* y = dp + o;
      for (int64_t e = 0; e < segs[s].n; e++, x += L, y += L) {
        const __m256 k = allowed(_mm256_set1_epi32((int)e), lo + s * L + v, hi + s * L + v);
        const __m256 pv = _mm256_and_ps(k, exp8(_mm256_sub_ps(_mm256_loadu_ps(x), shift)));
        _mm256_storeu_ps(x, pv);
        di = _mm256_fmadd_ps(pv, _mm256_loadu_ps(y), di);
      }
    }
    for (int64_t s = 0; s < ns; s++) {
      const int64_t o = segs[s].off * L + v;
      const float* x = p + o;
      float* y = dp + o;
      for (int64_t e = 0; e < segs[s].n; e++, x += L, y += L)
        _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_loadu_ps(x), _mm256_sub_ps(_mm256_loadu_ps(y), di)));
    }
  }
}

}  // namespace dalle
