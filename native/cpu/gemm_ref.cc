// Reference GEMM: the definition, with double accumulation, no blocking, no threads. Tests compare every fast path
// (each ISA, each thread count) with it; it checks its arguments like the fast version.
#include <cstring>

#include "error.h"
#include "gemm.h"

namespace dalle {

namespace {

inline float bf16_value(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float value(float x) { return x; }
inline float value(uint16_t x) { return bf16_value(x); }

template <class T>
void reference(const char* op, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A,
               int64_t lda, const T* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  DALLE_CHECK(M >= 0 && N >= 0 && K >= 0, op, "negative size: M=%lld N=%lld K=%lld", (long long)M, (long long)N,
              (long long)K);
  DALLE_CHECK(lda >= (ta ? M : K) && lda >= 1 && ldb >= (tb ? K : N) && ldb >= 1 && ldc >= N && ldc >= 1, op,
              "leading dimensions (%lld, %lld, %lld) too small for M=%lld N=%lld K=%lld", (long long)lda,
              (long long)ldb, (long long)ldc, (long long)M, (long long)N, (long long)K);
  DALLE_CHECK((A || M == 0 || K == 0) && (B || K == 0 || N == 0) && (C || M == 0 || N == 0), op,
              "null operand for M=%lld N=%lld K=%lld", (long long)M, (long long)N, (long long)K);
  for (int64_t i = 0; i < M; i++) {
    for (int64_t j = 0; j < N; j++) {
      double s = 0.0;
      if (alpha != 0.0f) {
        for (int64_t k = 0; k < K; k++) {
          double a = value(ta ? A[k * lda + i] : A[i * lda + k]);
          double b = value(tb ? B[j * ldb + k] : B[k * ldb + j]);
          s += a * b;
        }
      }
      double c = (double)alpha * s;
      if (beta != 0.0f) c += (double)beta * C[i * ldc + j];
      C[i * ldc + j] = (float)c;
    }
  }
}

}  // namespace

void sgemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  reference("sgemmReference", trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_bf16_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                         int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  reference("gemmBf16Reference", trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace dalle
