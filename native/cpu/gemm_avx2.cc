// AVX2 + FMA leaf kernels for GEMM (contracts in gemm_kernels.h; blocking and dispatch in gemm.cc). Compiled with
// -mavx2 -mfma -mf16c: leaf functions only, no std templates (binding.gyp explains why).
//
// Micro-kernel: MR x NR = 6 x 16, 12 ymm accumulators + 2 for B + 1 broadcast (the classic Haswell shape: 16 ymm
// registers). bf16 on AVX2 machines is converted to fp32 while packing (gemm.cc) and runs this kernel.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "gemm_kernels.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace dalle {

namespace {

static inline int64_t mini(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t maxi(int64_t a, int64_t b) { return a > b ? a : b; }

// Lane mask for lanes [0, n) of 8.
static inline __m256i lanes8(int64_t n) {
  int v = n < 0 ? 0 : n > 8 ? 8 : (int)n;
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline float hsum8(__m256 v) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

static inline void store_scalar(float* c, float v, float alpha, float beta) {
  *c = beta == 0.0f ? alpha * v : alpha * v + beta * *c;
}

#define DALLE_TRANSPOSE8(r0, r1, r2, r3, r4, r5, r6, r7)                                          \
  do {                                                                                            \
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);                      \
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);                      \
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);                      \
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);                      \
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);            \
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);            \
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);            \
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);            \
    r0 = _mm256_permute2f128_ps(s0, s4, 0x20);                                                    \
    r1 = _mm256_permute2f128_ps(s1, s5, 0x20);                                                    \
    r2 = _mm256_permute2f128_ps(s2, s6, 0x20);                                                    \
    r3 = _mm256_permute2f128_ps(s3, s7, 0x20);                                                    \
    r4 = _mm256_permute2f128_ps(s0, s4, 0x31);                                                    \
    r5 = _mm256_permute2f128_ps(s1, s5, 0x31);                                                    \
    r6 = _mm256_permute2f128_ps(s2, s6, 0x31);                                                    \
    r7 = _mm256_permute2f128_ps(s3, s7, 0x31);                                                    \
  } while (0)

// elem(i, k) = src[i * ld + k] -> slivers of W; 8 x 8 blocks, the last group of a sliver stored with a lane mask.
static void pack_trans(const float* src, int64_t ld, int64_t len, int64_t kc, int64_t W, float* dst) {
  for (int64_t s0 = 0; s0 < len; s0 += W) {
    float* ds = dst + s0 * kc;
    for (int64_t g = 0; g < W; g += 8) {
      int64_t rows = mini(8, len - s0 - g);
      __m256i sm = lanes8(W - g);
      const float* rp[8];
      for (int r = 0; r < 8; r++) rp[r] = src + (s0 + g + mini(r, maxi(rows - 1, 0))) * ld;
      for (int64_t k = 0; k < kc; k += 8) {
        __m256i km = lanes8(kc - k);
        __m256 z = _mm256_setzero_ps();
        __m256 r0 = rows > 0 ? _mm256_maskload_ps(rp[0] + k, km) : z;
        __m256 r1 = rows > 1 ? _mm256_maskload_ps(rp[1] + k, km) : z;
        __m256 r2 = rows > 2 ? _mm256_maskload_ps(rp[2] + k, km) : z;
        __m256 r3 = rows > 3 ? _mm256_maskload_ps(rp[3] + k, km) : z;
        __m256 r4 = rows > 4 ? _mm256_maskload_ps(rp[4] + k, km) : z;
        __m256 r5 = rows > 5 ? _mm256_maskload_ps(rp[5] + k, km) : z;
        __m256 r6 = rows > 6 ? _mm256_maskload_ps(rp[6] + k, km) : z;
        __m256 r7 = rows > 7 ? _mm256_maskload_ps(rp[7] + k, km) : z;
        DALLE_TRANSPOSE8(r0, r1, r2, r3, r4, r5, r6, r7);
        float* d = ds + k * W + g;
        int64_t kn = mini(8, kc - k);
        _mm256_maskstore_ps(d, sm, r0);
        if (kn > 1) _mm256_maskstore_ps(d + W, sm, r1);
        if (kn > 2) _mm256_maskstore_ps(d + 2 * W, sm, r2);
        if (kn > 3) _mm256_maskstore_ps(d + 3 * W, sm, r3);
        if (kn > 4) _mm256_maskstore_ps(d + 4 * W, sm, r4);
        if (kn > 5) _mm256_maskstore_ps(d + 5 * W, sm, r5);
        if (kn > 6) _mm256_maskstore_ps(d + 6 * W, sm, r6);
        if (kn > 7) _mm256_maskstore_ps(d + 7 * W, sm, r7);
      }
    }
  }
}

// elem(i, k) = src[k * ld + i]: masked copies.
static void pack_copy(const float* src, int64_t ld, int64_t len, int64_t kc, int64_t W, float* dst) {
  for (int64_t s0 = 0; s0 < len; s0 += W) {
    float* ds = dst + s0 * kc;
    int64_t n = mini(W, len - s0);
    for (int64_t k = 0; k < kc; k++) {
      const float* sp = src + k * ld + s0;
      float* d = ds + k * W;
      for (int64_t j = 0; j < W; j += 8) {
        __m256 v = _mm256_maskload_ps(sp + j, lanes8(n - j));
        if (W - j >= 8) _mm256_storeu_ps(d + j, v);
        else _mm256_maskstore_ps(d + j, lanes8(W - j), v);
      }
    }
  }
}

}  // namespace

static void sgemm_ukernel_avx2_typed(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                                     float beta, int64_t mr, int64_t nr) {
  // Named accumulators: with an acc[6][2] array GCC kept a copy on the stack and stored all 12 every k (47 GFLOP/s
  // at 1024^3 instead of ~100).
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    __m256 av = _mm256_broadcast_ss(a);
    c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01);
    av = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11);
    av = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(av, b0, c20), c21 = _mm256_fmadd_ps(av, b1, c21);
    av = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(av, b0, c30), c31 = _mm256_fmadd_ps(av, b1, c31);
    av = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(av, b0, c40), c41 = _mm256_fmadd_ps(av, b1, c41);
    av = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(av, b0, c50), c51 = _mm256_fmadd_ps(av, b1, c51);
    a += 6;
    b += 16;
  }
  const __m256 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  const __m256i m0 = lanes8(nr), m1 = lanes8(nr - 8);
  for (int64_t i = 0; i < mr; i++) {
    float* p = c + i * ldc;
    __m256 v0 = _mm256_mul_ps(va, acc[i][0]), v1 = _mm256_mul_ps(va, acc[i][1]);
    if (nr == 16) {
      if (beta != 0.0f) {
        v0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(p), v0);
        v1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(p + 8), v1);
      }
      _mm256_storeu_ps(p, v0);
      _mm256_storeu_ps(p + 8, v1);
    } else {
      if (beta != 0.0f) {
        v0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(p, m0), v0);
        v1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(p + 8, m1), v1);
      }
      _mm256_maskstore_ps(p, m0, v0);
      _mm256_maskstore_ps(p + 8, m1, v1);
    }
  }
}

void sgemm_pack_avx2(const void* src, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W, void* dst) {
  if (kmajor) pack_copy(static_cast<const float*>(src), ld, len, kc, W, static_cast<float*>(dst));
  else pack_trans(static_cast<const float*>(src), ld, len, kc, W, static_cast<float*>(dst));
}

// ---------------------------------------------------------------------------------------------------------------
// Small M (see gemm_kernels.h).

namespace {

static inline __attribute__((always_inline)) void dot_block(int MM, int64_t nn, int64_t K, float alpha,
                                                            const float* a, const float* B, int64_t ldb, float beta,
                                                            float* c, int64_t rsc, int64_t csc) {
  __m256 acc[4][4];
  for (int i = 0; i < MM; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = _mm256_setzero_ps();
  const float* bp[4];
  for (int j = 0; j < 4; j++) bp[j] = B + (j < nn ? j : 0) * ldb;
  for (int64_t k = 0; k < K; k += 8) {
    __m256i m = lanes8(K - k);
    bool full = K - k >= 8;
    __m256 b0 = full ? _mm256_loadu_ps(bp[0] + k) : _mm256_maskload_ps(bp[0] + k, m);
    __m256 b1 = full ? _mm256_loadu_ps(bp[1] + k) : _mm256_maskload_ps(bp[1] + k, m);
    __m256 b2 = full ? _mm256_loadu_ps(bp[2] + k) : _mm256_maskload_ps(bp[2] + k, m);
    __m256 b3 = full ? _mm256_loadu_ps(bp[3] + k) : _mm256_maskload_ps(bp[3] + k, m);
    for (int i = 0; i < MM; i++) {
      __m256 av = full ? _mm256_loadu_ps(a + i * K + k) : _mm256_maskload_ps(a + i * K + k, m);
      acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
      acc[i][2] = _mm256_fmadd_ps(av, b2, acc[i][2]);
      acc[i][3] = _mm256_fmadd_ps(av, b3, acc[i][3]);
    }
  }
  for (int i = 0; i < MM; i++)
    for (int j = 0; j < 4; j++)
      if (j < nn) store_scalar(c + i * rsc + j * csc, hsum8(acc[i][j]), alpha, beta);
}

}  // namespace

// B (K, N) row-major: k outer, whole rows of B streamed into accumulators in `work` (see gemm_avx512.cc).
static void sgemm_small_rowb_avx2_typed(int64_t M, int64_t N, int64_t K, float alpha, const float* a, const float* B, int64_t ldb,
                           float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  // Columns per pass: as many as keep M rows of accumulators in kRowbWork floats (16 KiB, L1): M = 1 streams rows
  // of 4096 columns, M = 8 of 512 (twice that thrashed L1 and halved the speed, native/dev/gemm).
  const int64_t chunk = (kRowbWork / (M > 0 ? M : 1)) / 16 * 16;
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t nn = mini(chunk, N - n0);
    const int64_t nv = (nn + 7) / 8;
    const __m256i tail = lanes8(nn - (nv - 1) * 8), full = lanes8(8);
    for (int64_t i = 0; i < M * chunk; i += 8) _mm256_storeu_ps(work + i, _mm256_setzero_ps());
    for (int64_t k = 0; k < K; k += 2) {
      const bool two = k + 1 < K;
      const float* b0 = B + k * ldb + n0;
      const float* b1 = two ? b0 + ldb : b0;
      for (int64_t v = 0; v < nv; v++) {
        const __m256i m = v == nv - 1 ? tail : full;
        const __m256 x0 = _mm256_maskload_ps(b0 + 8 * v, m);
        const __m256 x1 = two ? _mm256_maskload_ps(b1 + 8 * v, m) : _mm256_setzero_ps();
        for (int64_t i = 0; i < M; i++) {
          const float* ai = a + i * K + k;
          float* w = work + i * chunk + 8 * v;
          __m256 acc = _mm256_fmadd_ps(_mm256_broadcast_ss(ai), x0, _mm256_loadu_ps(w));
          if (two) acc = _mm256_fmadd_ps(_mm256_broadcast_ss(ai + 1), x1, acc);
          _mm256_storeu_ps(w, acc);
        }
      }
    }
    for (int64_t i = 0; i < M; i++) {
      const float* w = work + i * chunk;
      float* ci = c + i * rsc + n0 * csc;
      for (int64_t j = 0; j < nn; j++) store_scalar(ci + j * csc, w[j], alpha, beta);
    }
  }
}

static void sgemm_small_dot_avx2_typed(int64_t M, int64_t N, int64_t K, float alpha, const float* a, const float* B, int64_t ldb,
                          float beta, float* c, int64_t rsc, int64_t csc) {
  for (int64_t n0 = 0; n0 < N; n0 += 4) {
    int64_t nn = mini(4, N - n0);
    // Rows in pairs: 2 x 4 accumulators + 4 B vectors fit the 16 ymm registers (4 x 4 spilled).
    for (int64_t m0 = 0; m0 < M; m0 += 2) {
      const float* am = a + m0 * K;
      float* cm = c + m0 * rsc + n0 * csc;
      const float* bn = B + n0 * ldb;
      if (M - m0 >= 2) dot_block(2, nn, K, alpha, am, bn, ldb, beta, cm, rsc, csc);
      else dot_block(1, nn, K, alpha, am, bn, ldb, beta, cm, rsc, csc);
    }
  }
}

// Uniform signatures (gemm_kernels.h) over the typed versions above.
void sgemm_ukernel_avx2(int64_t kc, const void* a, const void* b, float* c, int64_t ldc, float alpha, float beta,
                        int64_t mr, int64_t nr) {
  sgemm_ukernel_avx2_typed(kc, static_cast<const float*>(a), static_cast<const float*>(b), c, ldc, alpha, beta, mr, nr);
}

void sgemm_small_rowb_avx2(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                           int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  sgemm_small_rowb_avx2_typed(M, N, K, alpha, static_cast<const float*>(a), static_cast<const float*>(B), ldb, beta, c, rsc, csc, work);
}

void sgemm_small_dot_avx2(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                          int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  (void)work;
  sgemm_small_dot_avx2_typed(M, N, K, alpha, static_cast<const float*>(a), static_cast<const float*>(B), ldb, beta, c, rsc, csc);
}

}  // namespace dalle
