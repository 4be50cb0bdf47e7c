// Portable GEMM leaf kernels (contracts in gemm_kernels.h): plain C++ that compilers vectorize for the baseline ISA
// (SSE2 on x86-64, NEON on arm64). Correct everywhere; the fallback when neither AVX2 nor AVX-512 is usable.
#include <cstdint>
#include <cstring>

#include "gemm_kernels.h"

namespace dalle {

namespace {
inline int64_t mini(int64_t a, int64_t b) { return a < b ? a : b; }

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

static void sgemm_ukernel_portable_typed(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                            float beta, int64_t mr, int64_t nr) {
  constexpr int MR = kMrPortable, NR = kNrPortable;
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; k++) {
    for (int i = 0; i < MR; i++) {
      const float av = a[i];
      for (int j = 0; j < NR; j++) acc[i][j] += av * b[j];
    }
    a += MR;
    b += NR;
  }
  for (int64_t i = 0; i < mr; i++) {
    float* p = c + i * ldc;
    if (beta == 0.0f) {
      for (int64_t j = 0; j < nr; j++) p[j] = alpha * acc[i][j];
    } else {
      for (int64_t j = 0; j < nr; j++) p[j] = alpha * acc[i][j] + beta * p[j];
    }
  }
}

void sgemm_pack_portable(const void* src_, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W, void* dst_) {
  const float* src = static_cast<const float*>(src_);
  float* dst = static_cast<float*>(dst_);
  for (int64_t s0 = 0; s0 < len; s0 += W) {
    float* ds = dst + s0 * kc;
    const int64_t n = mini(W, len - s0);
    if (kmajor) {
      for (int64_t k = 0; k < kc; k++) {
        const float* sp = src + k * ld + s0;
        float* d = ds + k * W;
        for (int64_t i = 0; i < n; i++) d[i] = sp[i];
        for (int64_t i = n; i < W; i++) d[i] = 0.0f;
      }
    } else {
      for (int64_t i = 0; i < n; i++) {
        const float* sp = src + (s0 + i) * ld;
        for (int64_t k = 0; k < kc; k++) ds[k * W + i] = sp[k];
      }
      for (int64_t i = n; i < W; i++)
        for (int64_t k = 0; k < kc; k++) ds[k * W + i] = 0.0f;
    }
  }
}

void bf16_to_f32_pack_portable(const void* src_, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W,
                               void* dst_) {
  const uint16_t* src = static_cast<const uint16_t*>(src_);
  float* dst = static_cast<float*>(dst_);
  for (int64_t s0 = 0; s0 < len; s0 += W) {
    float* ds = dst + s0 * kc;
    const int64_t n = mini(W, len - s0);
    if (kmajor) {
      for (int64_t k = 0; k < kc; k++) {
        const uint16_t* sp = src + k * ld + s0;
        float* d = ds + k * W;
        for (int64_t i = 0; i < n; i++) d[i] = bf16_to_f32(sp[i]);
        for (int64_t i = n; i < W; i++) d[i] = 0.0f;
      }
    } else {
      for (int64_t i = 0; i < n; i++) {
        const uint16_t* sp = src + (s0 + i) * ld;
        for (int64_t k = 0; k < kc; k++) ds[k * W + i] = bf16_to_f32(sp[k]);
      }
      for (int64_t i = n; i < W; i++)
        for (int64_t k = 0; k < kc; k++) ds[k * W + i] = 0.0f;
    }
  }
}

static void sgemm_small_rowb_portable_typed(int64_t M, int64_t N, int64_t K, float alpha, const float* a, const float* B,
                               int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  // Columns per pass: as many as keep M rows of accumulators in kRowbWork floats (16 KiB, L1): M = 1 streams rows
  // of 4096 columns, M = 8 of 512 (twice that thrashed L1 and halved the speed, native/dev/gemm).
  const int64_t chunk = (kRowbWork / (M > 0 ? M : 1)) / 16 * 16;
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t nn = mini(chunk, N - n0);
    for (int64_t i = 0; i < M * chunk; i++) work[i] = 0.0f;
    for (int64_t k = 0; k < K; k++) {
      const float* br = B + k * ldb + n0;
      for (int64_t m = 0; m < M; m++) {
        const float av = a[m * K + k];
        float* w = work + m * chunk;
        for (int64_t j = 0; j < nn; j++) w[j] += av * br[j];
      }
    }
    for (int64_t m = 0; m < M; m++) {
      for (int64_t j = 0; j < nn; j++) {
        float* p = c + m * rsc + (n0 + j) * csc;
        const float v = work[m * chunk + j];
        *p = beta == 0.0f ? alpha * v : alpha * v + beta * *p;
      }
    }
  }
}

static void sgemm_small_dot_portable_typed(int64_t M, int64_t N, int64_t K, float alpha, const float* a, const float* B,
                              int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc) {
  for (int64_t n = 0; n < N; n++) {
    const float* br = B + n * ldb;
    for (int64_t m = 0; m < M; m++) {
      const float* ar = a + m * K;
      float s[8] = {};
      int64_t k = 0;
      for (; k + 8 <= K; k += 8)
        for (int t = 0; t < 8; t++) s[t] += ar[k + t] * br[k + t];
      float v = 0.0f;
      for (; k < K; k++) v += ar[k] * br[k];
      v += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
      float* p = c + m * rsc + n * csc;
      *p = beta == 0.0f ? alpha * v : alpha * v + beta * *p;
    }
  }
}

// Uniform signatures (gemm_kernels.h) over the typed versions above.
void sgemm_ukernel_portable(int64_t kc, const void* a, const void* b, float* c, int64_t ldc, float alpha, float beta,
                            int64_t mr, int64_t nr) {
  sgemm_ukernel_portable_typed(kc, static_cast<const float*>(a), static_cast<const float*>(b), c, ldc, alpha, beta, mr, nr);
}

void sgemm_small_rowb_portable(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                               int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  sgemm_small_rowb_portable_typed(M, N, K, alpha, static_cast<const float*>(a), static_cast<const float*>(B), ldb, beta, c, rsc, csc, work);
}

void sgemm_small_dot_portable(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                              int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work) {
  (void)work;
  sgemm_small_dot_portable_typed(M, N, K, alpha, static_cast<const float*>(a), static_cast<const float*>(B), ldb, beta, c, rsc, csc);
}

}  // namespace dalle
