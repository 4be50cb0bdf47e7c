// GEMM, row-major: C = alpha * op(A) @ op(B) + beta * C, with op(A) of shape (M, K) and op(B) of shape (K, N).
// A is stored (M, K) with row stride lda, or (K, M) when trans_a; B is (K, N) with row stride ldb, or (N, K) when
// trans_b; C is (M, N) with row stride ldc. beta == 0 means C is write-only (never read, so NaNs in it do not leak).
// Multi-threaded over the pool; run from inside a pool thread it runs on that thread alone.
#pragma once
#include <cstdint>

namespace dalle {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// `batch` independent GEMMs; matrix b starts at A + b * stride_a (and likewise for B, C). stride 0 broadcasts.
void sgemm_batched(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c);

// bf16 inputs (raw uint16 bit patterns), fp32 accumulation and output. Uses AVX512_BF16 vdpbf16ps where present.
// C[b] = alpha * op(A) @ B[b] + beta * C[b] for every b: one op(A) (M, K) shared by the batch, B[b] (K, N) row-major.
// Wide B (a 1x1 convolution's images) streams in L2 strips with op(A) packed once; otherwise as sgemm_batched.
void sgemm_batched_shared_a(int64_t batch, bool trans_a, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                            int64_t lda, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                            int64_t ldc, int64_t stride_c);

// What a 1x1 convolution does around its GEMM, done by the strip path on data still in cache: B read as ReLU(B),
// then C[b][m][n] += bias[m], then C[b][m][n] = gate[b][m][n] > 0 ? C : 0 (gate laid out like C). Each is optional.
struct StripExtras {
  bool relu_b = false;
  const float* bias = nullptr;  // (M) or null
  const float* gate = nullptr;  // like C (ldc, stride_c), or null
};
// sgemm_batched_shared_a with extras when the strip path runs (returns true); returns false without computing
// anything when it would not (the caller then runs sgemm_batched_shared_a and the extras itself).
bool sgemm_batched_shared_a_strips(int64_t batch, bool trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                                   const float* A, int64_t lda, const float* B, int64_t ldb, int64_t stride_b,
                                   float beta, float* C, int64_t ldc, int64_t stride_c, const StripExtras& extras);

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Plain references (gemm_ref.cc): triple loops with double accumulation, for tests. Same contract as above.
void sgemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm_bf16_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                         int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Block sizes of the packed path (KC, MC, NC), for tuning in native/dev/gemm and the benchmark; 0 = default.
void gemm_set_blocking(int64_t kc, int64_t mc, int64_t nc);

}  // namespace dalle
