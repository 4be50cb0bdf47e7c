// Stand-in for native/cpu/gemm.cc while it does not exist: a naive, single-threaded sgemm with the same interface.
// Only the dev build links it (build.sh picks it when native/cpu/gemm.cc is missing).
#include "gemm.h"

namespace dalle {

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++) {
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      for (int64_t j = 0; j < N; j++) c[j] = 0.0f;
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < N; j++) c[j] *= beta;
    }
    for (int64_t kk = 0; kk < K; kk++) {
      const float a = alpha * (ta ? A[kk * lda + i] : A[i * lda + kk]);
      if (!tb) {
        const float* b = B + kk * ldb;
        for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
      } else {
        for (int64_t j = 0; j < N; j++) c[j] += a * B[j * ldb + kk];
      }
    }
  }
}

void sgemm_batched(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, int64_t sa, const float* B, int64_t ldb, int64_t sb, float beta, float* C,
                   int64_t ldc, int64_t sc) {
  for (int64_t b = 0; b < batch; b++)
    sgemm(ta, tb, M, N, K, alpha, A + b * sa, lda, B + b * sb, ldb, beta, C + b * sc, ldc);
}

}  // namespace dalle
