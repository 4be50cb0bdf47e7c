// AVX-512 leaf kernels for GEMM (see gemm.cc for the blocking, threading and dispatch; gemm_kernels.h for the
// contracts). Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16: leaf functions only, no std
// templates (binding.gyp explains why).
//
// Micro-kernel: an MR x NR = 8 x 48 tile of C in 24 zmm accumulators. Per k: 3 vector loads of packed B, 8 broadcasts
// of packed A, 24 FMAs. On Zen 4 (1 zmm FMA a cycle) every 8 x 16n shape measured the same in the micro-benchmark
// (native/dev/gemm); 8 x 48 has the most reuse that fits the 32 registers and MR = 8 makes A-packing an 8 x 8
// transpose. bf16: the same tile with vdpbf16ps on k-pairs (A and B packed as [k/2][W][2] bf16).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "gemm_kernels.h"

// GCC 12 reports its own _mm512_undefined_ps() inside intrinsics as "maybe uninitialized" (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace dalle {

namespace {

static inline int64_t mini(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t maxi(int64_t a, int64_t b) { return a > b ? a : b; }

// Lanes [0, n) of a 16-lane mask, n clamped to [0, 16].
static inline __mmask16 mask16(int64_t n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}
static inline __mmask8 mask8(int64_t n) {
  return n >= 8 ? (__mmask8)0xFF : n <= 0 ? (__mmask8)0 : (__mmask8)((1u << n) - 1);
}

// C tile <- alpha * acc + beta * C (beta == 0: C is not read). Rows >= mr and columns >= nr are left alone.
#define DALLE_STORE_TILE(acc, MR_, NV_)                                                   \
  do {                                                                                    \
    const __m512 va = _mm512_set1_ps(alpha);                                              \
    __mmask16 mk[NV_];                                                                    \
    for (int j = 0; j < NV_; j++) mk[j] = mask16(nr - 16 * j);                            \
    if (beta == 0.0f) {                                                                   \
      for (int i = 0; i < MR_; i++) {                                                     \
        if (i < mr) {                                                                     \
          for (int j = 0; j < NV_; j++)                                                   \
            _mm512_mask_storeu_ps(c + i * ldc + 16 * j, mk[j], _mm512_mul_ps(va, acc[i][j])); \
        }                                                                                 \
      }                                                                                   \
    } else {                                                                              \
      const __m512 vb = _mm512_set1_ps(beta);                                             \
      for (int i = 0; i < MR_; i++) {                                                     \
        if (i < mr) {                                                                     \
          for (int j = 0; j < NV_; j++) {                                                 \
            float* p = c + i * ldc + 16 * j;                                              \
            __m512 old = _mm512_maskz_loadu_ps(mk[j], p);                                 \
            _mm512_mask_storeu_ps(p, mk[j], _mm512_fmadd_ps(va, acc[i][j], _mm512_mul_ps(vb, old))); \
          }                                                                               \
        }                                                                                 \
      }                                                                                   \
    }                                                                                     \
  } while (0)

// 8 x 8 transpose of r0..r7 (rows) into r0..r7 (columns), AVX.
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

// Packs 32-bit elements elem(i, k) = *(src + i * ld_bytes + 4 k), i < len, k < kc, into slivers of W rows:
// dst[(s * kc + k) * W + (i - s W)], rows past len zero. Works on 8 x 8 blocks.
static void pack_trans32(const char* src, int64_t ld_bytes, int64_t len, int64_t kc, int64_t W, float* dst) {
  for (int64_t s0 = 0; s0 < len; s0 += W) {
    float* ds = dst + s0 * kc;  // sliver s0 / W starts at (s0 / W) * kc * W
    for (int64_t g = 0; g < W; g += 8) {
      int64_t rows = mini(8, len - s0 - g);  // may be <= 0: the group is all padding
      __mmask8 store_mask = mask8(W - g);
      const char* rp[8];
      for (int r = 0; r < 8; r++) rp[r] = src + (s0 + g + mini(r, maxi(rows - 1, 0))) * ld_bytes;
      for (int64_t k = 0; k < kc; k += 8) {
        __mmask8 km = mask8(kc - k);
        __m256 r0 = rows > 0 ? _mm256_maskz_loadu_ps(km, (const float*)rp[0] + k) : _mm256_setzero_ps();
        __m256 r1 = rows > 1 ? _mm256_maskz_loadu_ps(km, (const float*)rp[1] + k) : _mm256_setzero_ps();
        __m256 r2 = rows > 2 ? _mm256_maskz_loadu_ps(km, (const float*)rp[2] + k) : _mm256_setzero_ps();
        __m256 r3 = rows > 3 ? _mm256_maskz_loadu_ps(km, (const float*)rp[3] + k) : _mm256_setzero_ps();
        __m256 r4 = rows > 4 ? _mm256_maskz_loadu_ps(km, (const float*)rp[4] + k) : _mm256_setzero_ps();
        __m256 r5 = rows > 5 ? _mm256_maskz_loadu_ps(km, (const float*)rp[5] + k) : _mm256_setzero_ps();
        __m256 r6 = rows > 6 ? _mm256_maskz_loadu_ps(km, (const float*)rp[6] + k) : _mm256_setzero_ps();
        __m256 r7 = rows > 7 ? _mm256_maskz_loadu_ps(km, (const float*)rp[7] + k) : _mm256_setzero_ps();
        DALLE_TRANSPOSE8(r0, r1, r2, r3, r4, r5, r6, r7);
        float* d = ds + k * W + g;
        int64_t kn = mini(8, kc - k);
        _mm256_mask_storeu_ps(d, store_mask, r0);
        if (kn > 1) _mm256_mask_storeu_ps(d + W, store_mask, r1);
        if (kn > 2) _mm256_mask_storeu_ps(d + 2 * W, store_mask, r2);
        if (kn > 3) _mm256_mask_storeu_ps(d + 3 * W, store_mask, r3);
        if (kn > 4) _mm256_mask_storeu_ps(d + 4 * W, store_mask, r4);
        if (kn > 5) _mm256_mask_storeu_ps(d + 5 * W, store_mask, r5);
        if (kn > 6) _mm256_mask_storeu_ps(d + 6 * W, store_mask, r6);
        if (kn > 7) _mm256_mask_storeu_ps(d + 7 * W, store_mask, r7);
      }
    }
  }
}

// Packs elem(i, k) = src[k * ld + i] (rows of the source run along the panel): a masked copy per k.
static void pack_copy32(const float* src, int64_t ld, int64_t len, int64_t kc, int64_t W, float* dst) {
  for (int64_t s0 = 0; s0 < len; s0 += W) {
    float* ds = dst + s0 * kc;
    int64_t n = mini(W, len - s0);
    for (int64_t k = 0; k < kc; k++) {
      const float* sp = src + k * ld + s0;
      float* d = ds + k * W;
      for (int64_t j = 0; j < W; j += 16) {
        if (W - j >= 16) {
          _mm512_storeu_ps(d + j, _mm512_maskz_loadu_ps(mask16(n - j), sp + j));
        } else {
          _mm512_mask_storeu_ps(d + j, mask16(W - j), _mm512_maskz_loadu_ps(mask16(n - j), sp + j));
        }
      }
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// fp32

// One kernel body per width: NV = 3 for full 48-column tiles, NV = 1 or 2 for the last tile of a row of C when it
// is 16 or 32 wide (1024 = 21 x 48 + 16: computing that tile at full width wasted 3% at 1024^3). The packed B sliver
// keeps its 48-float row stride.
#define DALLE_SGEMM_UK(NAME, NV_)                                                                                 \
  static void NAME(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta,   \
                   int64_t mr, int64_t nr) {                                                                     \
    enum { MR = 8, NV = NV_ };                                                                                   \
    __m512 acc[MR][NV];                                                                                          \
    for (int i = 0; i < MR; i++)                                                                                 \
      for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_ps();                                             \
    for (int64_t k = 0; k < kc; k++) {                                                                           \
      __m512 bv[NV];                                                                                             \
      for (int j = 0; j < NV; j++) bv[j] = _mm512_loadu_ps(b + 16 * j);                                          \
      for (int i = 0; i < MR; i++) {                                                                             \
        __m512 av = _mm512_set1_ps(a[i]);                                                                        \
        for (int j = 0; j < NV; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);                          \
      }                                                                                                          \
      a += MR;                                                                                                   \
      b += kNrAvx512;                                                                                            \
    }                                                                                                            \
    DALLE_STORE_TILE(acc, MR, NV);                                                                               \
  }
DALLE_SGEMM_UK(sgemm_uk_8x48, 3)
DALLE_SGEMM_UK(sgemm_uk_8x32, 2)
DALLE_SGEMM_UK(sgemm_uk_8x16, 1)

static void sgemm_ukernel_avx512_typed(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                                       float beta, int64_t mr, int64_t nr) {
  if (nr > 32) sgemm_uk_8x48(kc, a, b, c, ldc, alpha, beta, mr, nr);
  else if (nr > 16) sgemm_uk_8x32(kc, a, b, c, ldc, alpha, beta, mr, nr);
  else sgemm_uk_8x16(kc, a, b, c, ldc, alpha, beta, mr, nr);
}

void sgemm_pack_avx512(const void* src, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W, void* dst) {
  if (kmajor) {
    pack_copy32(static_cast<const float*>(src), ld, len, kc, W, static_cast<float*>(dst));
  } else {
    pack_trans32(static_cast<const char*>(src), ld * 4, len, kc, W, static_cast<float*>(dst));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// bf16 with vdpbf16ps: A and B packed as k-pairs, [kp][W][2] bf16 per sliver, kp = ceil(kc / 2).

#define DALLE_BF16_UK(NAME, NV_)                                                                                  \
  static void NAME(int64_t kc, const uint16_t* a, const uint16_t* b, float* c, int64_t ldc, float alpha,          \
                   float beta, int64_t mr, int64_t nr) {                                                          \
    enum { MR = 8, NV = NV_ };                                                                                    \
    const int64_t kp = (kc + 1) / 2;                                                                              \
    __m512 acc[MR][NV];                                                                                           \
    for (int i = 0; i < MR; i++)                                                                                  \
      for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_ps();                                              \
    const uint32_t* a32 = reinterpret_cast<const uint32_t*>(a);                                                   \
    for (int64_t k = 0; k < kp; k++) {                                                                            \
      __m512bh bv[NV];                                                                                            \
      for (int j = 0; j < NV; j++) bv[j] = (__m512bh)_mm512_loadu_si512(b + 32 * j);                              \
      for (int i = 0; i < MR; i++) {                                                                              \
        __m512bh av = (__m512bh)_mm512_set1_epi32((int)a32[i]);                                                   \
        for (int j = 0; j < NV; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);                          \
      }                                                                                                           \
      a32 += MR;                                                                                                  \
      b += 2 * kNrAvx512;                                                                                         \
    }                                                                                                             \
    DALLE_STORE_TILE(acc, MR, NV);                                                                                \
  }
DALLE_BF16_UK(bf16_uk_8x48, 3)
DALLE_BF16_UK(bf16_uk_8x32, 2)
DALLE_BF16_UK(bf16_uk_8x16, 1)

static void gemm_bf16_ukernel_avx512_typed(int64_t kc, const uint16_t* a, const uint16_t* b, float* c, int64_t ldc,
                                           float alpha, float beta, int64_t mr, int64_t nr) {
  if (nr > 32) bf16_uk_8x48(kc, a, b, c, ldc, alpha, beta, mr, nr);
  else if (nr > 16) bf16_uk_8x32(kc, a, b, c, ldc, alpha, beta, mr, nr);
  else bf16_uk_8x16(kc, a, b, c, ldc, alpha, beta, mr, nr);
}

void gemm_bf16_pack_avx512(const void* src_, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W,
                           void* dst_) {
  const uint16_t* src = static_cast<const uint16_t*>(src_);
  uint16_t* dst = static_cast<uint16_t*>(dst_);
  const int64_t kp = (kc + 1) / 2;
  if (kmajor) {
    // elem(i, k) = src[k * ld + i]: interleave rows k and k + 1, 8 columns at a time.
    for (int64_t s0 = 0; s0 < len; s0 += W) {
      uint16_t* ds = dst + s0 * kp * 2;
      int64_t n = mini(W, len - s0);
      for (int64_t p = 0; p < kp; p++) {
        const uint16_t* r0 = src + (2 * p) * ld + s0;
        const uint16_t* r1 = r0 + ld;
        bool has1 = 2 * p + 1 < kc;
        uint16_t* d = ds + p * W * 2;
        for (int64_t j = 0; j < W; j += 8) {
          __mmask8 m = mask8(n - j);
          __m128i x0 = _mm_maskz_loadu_epi16(m, r0 + j);
          __m128i x1 = has1 ? _mm_maskz_loadu_epi16(m, r1 + j) : _mm_setzero_si128();
          _mm_storeu_si128((__m128i*)(d + 2 * j), _mm_unpacklo_epi16(x0, x1));
          _mm_storeu_si128((__m128i*)(d + 2 * j + 8), _mm_unpackhi_epi16(x0, x1));
        }
      }
    }
  } else {
    // elem(i, k) = src[i * ld + k]: k-pairs are adjacent, so this is a 32-bit transpose of kc / 2 pairs, then the
    // odd last k (paired with zero) by hand.
    const int64_t full = kc / 2;
    if (full > 0) {
      // pack_trans32 writes slivers of W x full pairs; we need W x kp, so pack sliver by sliver.
      for (int64_t s0 = 0; s0 < len; s0 += W) {
        pack_trans32(reinterpret_cast<const char*>(src + s0 * ld), ld * 2, mini(W, len - s0), full, W,
                     reinterpret_cast<float*>(dst + s0 * kp * 2));
      }
    }
    if (kc & 1) {
      for (int64_t s0 = 0; s0 < len; s0 += W) {
        uint16_t* d = dst + s0 * kp * 2 + full * W * 2;
        for (int64_t i = 0; i < W; i++) {
          d[2 * i] = s0 + i < len ? src[(s0 + i) * ld + kc - 1] : 0;
          d[2 * i + 1] = 0;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Small M: B streamed once from memory, unpacked (generation, M = batch = 1..8). Rows in chunks of up to 4.

namespace {

// Horizontal sum (GCC 12's _mm512_reduce_add_ps warns about an uninitialized temporary).
static inline float hsum(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
  return _mm512_cvtss_f32(v);
}

static inline void store_scalar(float* c, float v, float alpha, float beta) {
  *c = beta == 0.0f ? alpha * v : alpha * v + beta * *c;
}

// C[0:MM, n0:n0+4) for B (N, K): 4 x MM dot products of length K.
static inline __attribute__((always_inline)) void dot_block(int MM, int64_t nn, int64_t K, float alpha,
                                                            const float* a, const float* B, int64_t ldb, float beta,
                                                            float* c, int64_t rsc, int64_t csc) {
  __m512 acc[4][4];
  for (int i = 0; i < MM; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
  const float* b0p = B;
  const float* b1p = B + (nn > 1 ? 1 : 0) * ldb;
  const float* b2p = B + (nn > 2 ? 2 : 0) * ldb;
  const float* b3p = B + (nn > 3 ? 3 : 0) * ldb;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 b0 = _mm512_loadu_ps(b0p + k), b1 = _mm512_loadu_ps(b1p + k), b2 = _mm512_loadu_ps(b2p + k),
           b3 = _mm512_loadu_ps(b3p + k);
    for (int i = 0; i < MM; i++) {
      __m512 av = _mm512_loadu_ps(a + i * K + k);
      acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(av, b2, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(av, b3, acc[i][3]);
    }
  }
  if (k < K) {
    __mmask16 m = mask16(K - k);
    __m512 b0 = _mm512_maskz_loadu_ps(m, b0p + k), b1 = _mm512_maskz_loadu_ps(m, b1p + k),
           b2 = _mm512_maskz_loadu_ps(m, b2p + k), b3 = _mm512_maskz_loadu_ps(m, b3p + k);
    for (int i = 0; i < MM; i++) {
      __m512 av = _mm512_maskz_loadu_ps(m, a + i * K + k);
      acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(av, b2, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(av, b3, acc[i][3]);
    }
  }
  for (int i = 0; i < MM; i++) {
    for (int j = 0; j < 4; j++) {
      if (j < nn) store_scalar(c + i * rsc + j * csc, hsum(acc[i][j]), alpha, beta);
    }
  }
}

}  // namespace

// B (K, N) row-major: k outer, streaming whole rows of B (4 at a time) into accumulators kept in `work` (MM rows x
// a chunk of columns, L1-resident), so B is read once, sequentially. (A first version held a 64-column strip in
// registers and walked down K: a strided pattern that ran 3x slower than the dot kernel, native/dev/gemm.)
static void sgemm_small_rowb_avx512_typed(int64_t M, int64_t N, int64_t K, float alpha, const float* a, const float* B,
                             int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  // Columns per pass: as many as keep M rows of accumulators in kRowbWork floats (16 KiB, L1): M = 1 streams rows
  // of 4096 columns, M = 8 of 512 (twice that thrashed L1 and halved the speed, native/dev/gemm).
  const int64_t chunk = (kRowbWork / (M > 0 ? M : 1)) / 16 * 16;
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t nn = mini(chunk, N - n0);
    const int64_t nv = (nn + 15) / 16;
    const __mmask16 tail = mask16(nn - (nv - 1) * 16);
    for (int64_t i = 0; i < M * chunk; i += 16) _mm512_storeu_ps(work + i, _mm512_setzero_ps());
    for (int64_t k = 0; k < K; k += 4) {
      const int64_t kk = mini(4, K - k);
      const float* b0 = B + k * ldb + n0;
      const float* b1 = kk > 1 ? b0 + ldb : b0;
      const float* b2 = kk > 2 ? b0 + 2 * ldb : b0;
      const float* b3 = kk > 3 ? b0 + 3 * ldb : b0;
      for (int64_t v = 0; v < nv; v++) {
        const __mmask16 m = v == nv - 1 ? tail : (__mmask16)0xFFFF;
        const __m512 x0 = _mm512_maskz_loadu_ps(m, b0 + 16 * v);
        const __m512 x1 = kk > 1 ? _mm512_maskz_loadu_ps(m, b1 + 16 * v) : _mm512_setzero_ps();
        const __m512 x2 = kk > 2 ? _mm512_maskz_loadu_ps(m, b2 + 16 * v) : _mm512_setzero_ps();
        const __m512 x3 = kk > 3 ? _mm512_maskz_loadu_ps(m, b3 + 16 * v) : _mm512_setzero_ps();
        for (int64_t i = 0; i < M; i++) {
          const float* ai = a + i * K + k;
          float* w = work + i * chunk + 16 * v;
          __m512 acc = _mm512_loadu_ps(w);
          acc = _mm512_fmadd_ps(_mm512_set1_ps(ai[0]), x0, acc);
          if (kk > 1) acc = _mm512_fmadd_ps(_mm512_set1_ps(ai[1]), x1, acc);
          if (kk > 2) acc = _mm512_fmadd_ps(_mm512_set1_ps(ai[2]), x2, acc);
          if (kk > 3) acc = _mm512_fmadd_ps(_mm512_set1_ps(ai[3]), x3, acc);
          _mm512_storeu_ps(w, acc);
        }
      }
    }
    for (int64_t i = 0; i < M; i++) {
      const float* w = work + i * chunk;
      float* ci = c + i * rsc + n0 * csc;
      if (csc == 1) {
        const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
        for (int64_t v = 0; v < nv; v++) {
          const __mmask16 m = v == nv - 1 ? tail : (__mmask16)0xFFFF;
          __m512 r = _mm512_mul_ps(va, _mm512_loadu_ps(w + 16 * v));
          if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, ci + 16 * v), r);
          _mm512_mask_storeu_ps(ci + 16 * v, m, r);
        }
      } else {
        for (int64_t j = 0; j < nn; j++) store_scalar(ci + j * csc, w[j], alpha, beta);
      }
    }
  }
}

static void sgemm_small_dot_avx512_typed(int64_t M, int64_t N, int64_t K, float alpha, const float* a, const float* B,
                            int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc) {
  for (int64_t n0 = 0; n0 < N; n0 += 4) {
    int64_t nn = mini(4, N - n0);
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      int64_t mm = mini(4, M - m0);
      const float* am = a + m0 * K;
      float* cm = c + m0 * rsc + n0 * csc;
      const float* bn = B + n0 * ldb;
      if (mm == 4) dot_block(4, nn, K, alpha, am, bn, ldb, beta, cm, rsc, csc);
      else if (mm == 3) dot_block(3, nn, K, alpha, am, bn, ldb, beta, cm, rsc, csc);
      else if (mm == 2) dot_block(2, nn, K, alpha, am, bn, ldb, beta, cm, rsc, csc);
      else dot_block(1, nn, K, alpha, am, bn, ldb, beta, cm, rsc, csc);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// bf16 small M (AVX512_BF16).

namespace {

static inline float bf16_scalar(uint16_t h) {
  union {
    uint32_t u;
    float f;
  } v;
  v.u = (uint32_t)h << 16;
  return v.f;
}

// 16 bf16 -> 16 fp32 (lanes past the mask are zero).
static inline __m512 load_bf16x16(__mmask16 m, const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

static inline __mmask32 mask32(int64_t n) {
  return n >= 32 ? (__mmask32)0xFFFFFFFFu : n <= 0 ? (__mmask32)0 : (__mmask32)((1u << n) - 1);
}

static inline __attribute__((always_inline)) void dot_block_bf16(int MM, int64_t nn, int64_t K, float alpha,
                                                                 const uint16_t* a, const uint16_t* B, int64_t ldb,
                                                                 float beta, float* c, int64_t rsc, int64_t csc) {
  __m512 acc[4][4];
  for (int i = 0; i < MM; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
  const uint16_t* bp[4];
  for (int j = 0; j < 4; j++) bp[j] = B + (j < nn ? j : 0) * ldb;
  for (int64_t k = 0; k < K; k += 32) {
    const __mmask32 m = mask32(K - k);
    __m512bh b0 = (__m512bh)_mm512_maskz_loadu_epi16(m, bp[0] + k), b1 = (__m512bh)_mm512_maskz_loadu_epi16(m, bp[1] + k),
             b2 = (__m512bh)_mm512_maskz_loadu_epi16(m, bp[2] + k), b3 = (__m512bh)_mm512_maskz_loadu_epi16(m, bp[3] + k);
    for (int i = 0; i < MM; i++) {
      __m512bh av = (__m512bh)_mm512_maskz_loadu_epi16(m, a + i * K + k);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
      acc[i][2] = _mm512_dpbf16_ps(acc[i][2], av, b2);
      acc[i][3] = _mm512_dpbf16_ps(acc[i][3], av, b3);
    }
  }
  for (int i = 0; i < MM; i++)
    for (int j = 0; j < 4; j++)
      if (j < nn) store_scalar(c + i * rsc + j * csc, hsum(acc[i][j]), alpha, beta);
}

}  // namespace

void gemm_bf16_small_dot_avx512(int64_t M, int64_t N, int64_t K, float alpha, const void* a_, const void* B_,
                                int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  (void)work;
  const uint16_t* a = static_cast<const uint16_t*>(a_);
  const uint16_t* B = static_cast<const uint16_t*>(B_);
  for (int64_t n0 = 0; n0 < N; n0 += 4) {
    const int64_t nn = mini(4, N - n0);
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const int64_t mm = mini(4, M - m0);
      const uint16_t* am = a + m0 * K;
      float* cm = c + m0 * rsc + n0 * csc;
      const uint16_t* bn = B + n0 * ldb;
      if (mm == 4) dot_block_bf16(4, nn, K, alpha, am, bn, ldb, beta, cm, rsc, csc);
      else if (mm == 3) dot_block_bf16(3, nn, K, alpha, am, bn, ldb, beta, cm, rsc, csc);
      else if (mm == 2) dot_block_bf16(2, nn, K, alpha, am, bn, ldb, beta, cm, rsc, csc);
      else dot_block_bf16(1, nn, K, alpha, am, bn, ldb, beta, cm, rsc, csc);
    }
  }
}

// As the fp32 rowb (k outer, accumulators in `work`), B rows widened to fp32 as they stream in.
void gemm_bf16_small_rowb_avx512(int64_t M, int64_t N, int64_t K, float alpha, const void* a_, const void* B_,
                                 int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  const uint16_t* a = static_cast<const uint16_t*>(a_);
  const uint16_t* B = static_cast<const uint16_t*>(B_);
  const int64_t chunk = (kRowbWork / (M > 0 ? M : 1)) / 16 * 16;
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t nn = mini(chunk, N - n0);
    const int64_t nv = (nn + 15) / 16;
    const __mmask16 tail = mask16(nn - (nv - 1) * 16);
    for (int64_t i = 0; i < M * chunk; i += 16) _mm512_storeu_ps(work + i, _mm512_setzero_ps());
    for (int64_t k = 0; k < K; k += 2) {
      const bool two = k + 1 < K;
      const uint16_t* b0 = B + k * ldb + n0;
      const uint16_t* b1 = two ? b0 + ldb : b0;
      for (int64_t v = 0; v < nv; v++) {
        const __mmask16 m = v == nv - 1 ? tail : (__mmask16)0xFFFF;
        const __m512 x0 = load_bf16x16(m, b0 + 16 * v);
        const __m512 x1 = two ? load_bf16x16(m, b1 + 16 * v) : _mm512_setzero_ps();
        for (int64_t i = 0; i < M; i++) {
          const uint16_t* ai = a + i * K + k;
          float* w = work + i * chunk + 16 * v;
          __m512 acc = _mm512_fmadd_ps(_mm512_set1_ps(bf16_scalar(ai[0])), x0, _mm512_loadu_ps(w));
          if (two) acc = _mm512_fmadd_ps(_mm512_set1_ps(bf16_scalar(ai[1])), x1, acc);
          _mm512_storeu_ps(w, acc);
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

// Uniform signatures (gemm_kernels.h) over the typed versions above.
void sgemm_ukernel_avx512(int64_t kc, const void* a, const void* b, float* c, int64_t ldc, float alpha, float beta,
                          int64_t mr, int64_t nr) {
  sgemm_ukernel_avx512_typed(kc, static_cast<const float*>(a), static_cast<const float*>(b), c, ldc, alpha, beta, mr, nr);
}

void gemm_bf16_ukernel_avx512(int64_t kc, const void* a, const void* b, float* c, int64_t ldc, float alpha, float beta,
                              int64_t mr, int64_t nr) {
  gemm_bf16_ukernel_avx512_typed(kc, static_cast<const uint16_t*>(a), static_cast<const uint16_t*>(b), c, ldc, alpha, beta, mr, nr);
}

void sgemm_small_rowb_avx512(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                             int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  sgemm_small_rowb_avx512_typed(M, N, K, alpha, static_cast<const float*>(a), static_cast<const float*>(B), ldb, beta, c, rsc, csc, work);
}

void sgemm_small_dot_avx512(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                            int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  (void)work;
  sgemm_small_dot_avx512_typed(M, N, K, alpha, static_cast<const float*>(a), static_cast<const float*>(B), ldb, beta, c, rsc, csc);
}

}  // namespace dalle
