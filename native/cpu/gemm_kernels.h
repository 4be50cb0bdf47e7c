// GEMM leaf kernels, one set per ISA (gemm_avx512.cc, gemm_avx2.cc, gemm_portable.cc), driven by gemm.cc.
// Plain C-style declarations only: this header is included by the ISA translation units.
//
// Packed layouts (GotoBLAS / BLIS style). A panel of `len` rows (of op(A): M rows; of op(B)^T: N columns) by kc is
// stored as slivers of W rows (W = MR for A, NR for B), the last zero-padded to W:
//   fp32:      sliver s at dst + s * W * kc;       element (i, k) at [k][i - s W]       ([kc][W] floats)
//   bf16 pair: sliver s at dst + s * W * 2 * kp;   element (i, k) at [k / 2][i - s W][k % 2] ([kp][W][2] bf16),
//              kp = ceil(kc / 2), an odd kc padded with a zero k.
// Pack functions read element (i, k) of the panel from src at src[k * ld + i] when kmajor (rows of the source run
// along the panel: A transposed, B not), else at src[i * ld + k].
//
// Micro-kernels: C[0:mr, 0:nr] = alpha * (packed A sliver) @ (packed B sliver) + beta * C, mr <= MR, nr <= NR; with
// beta == 0 C is only written. kc counts k (not pairs) for every kernel.
#pragma once
#include <cstdint>

namespace dalle {

// Tile shapes, per ISA. Portable 4 x 8: 8 accumulators of 4 floats fit the 16 SSE registers (4 x 16 spilled and ran
// at 9 GFLOP/s, 4 x 8 at 32).
enum : int { kMrAvx512 = 8, kNrAvx512 = 48, kMrAvx2 = 6, kNrAvx2 = 16, kMrPortable = 4, kNrPortable = 8 };

typedef void (*GemmPackFn)(const void* src, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W, void* dst);
typedef void (*GemmUkernelFn)(int64_t kc, const void* a, const void* b, float* c, int64_t ldc, float alpha,
                              float beta, int64_t mr, int64_t nr);
typedef void (*GemmSmallFn)(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B, int64_t ldb,
                            float beta, float* c, int64_t rsc, int64_t csc, float* work);

// AVX-512 (gemm_avx512.cc)
void sgemm_ukernel_avx512(int64_t kc, const void* a, const void* b, float* c, int64_t ldc, float alpha, float beta,
                          int64_t mr, int64_t nr);
void sgemm_pack_avx512(const void* src, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W, void* dst);
// bf16 pair format; needs AVX512_BF16.
void gemm_bf16_ukernel_avx512(int64_t kc, const void* a, const void* b, float* c, int64_t ldc, float alpha, float beta,
                              int64_t mr, int64_t nr);
void gemm_bf16_pack_avx512(const void* src, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W, void* dst);

// Small M (<= kSmallM rows of op(A)): no packing of B. C[m, n] (at c[m * rsc + n * csc]) = alpha * sum_k a[m * K + k]
// * op(B)(k, n) + beta * C; `a` is op(A) copied into a contiguous (M, K) block. B is (K, N) with row stride ldb
// (rowb; `work` holds kRowbWork floats of accumulators: 16 KiB, L1-resident) or (N, K) (dot).
enum : int { kSmallM = 8, kRowbWork = 4096 };
void sgemm_small_rowb_avx512(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                             int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work);
void sgemm_small_dot_avx512(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                            int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work);
// bf16 small M (needs AVX512_BF16): `a` is op(A) as contiguous bf16 (M, K); dot runs vdpbf16ps on 32 k at a time,
// rowb widens B rows to fp32.
void gemm_bf16_small_rowb_avx512(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                                 int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work);
void gemm_bf16_small_dot_avx512(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                                int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work);

// AVX2 + FMA (gemm_avx2.cc)
void sgemm_ukernel_avx2(int64_t kc, const void* a, const void* b, float* c, int64_t ldc, float alpha, float beta,
                        int64_t mr, int64_t nr);
void sgemm_pack_avx2(const void* src, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W, void* dst);
void sgemm_small_rowb_avx2(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                           int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work);
void sgemm_small_dot_avx2(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                          int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work);

// Portable C++ (gemm_portable.cc): correct everywhere, arm64 included.
void sgemm_ukernel_portable(int64_t kc, const void* a, const void* b, float* c, int64_t ldc, float alpha, float beta,
                            int64_t mr, int64_t nr);
void sgemm_pack_portable(const void* src, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W, void* dst);
// bf16 source packed into the fp32 layout (every ISA's fp32 kernel runs bf16 this way without AVX512_BF16).
void bf16_to_f32_pack_portable(const void* src, int64_t ld, int kmajor, int64_t len, int64_t kc, int64_t W,
                               void* dst);
void sgemm_small_rowb_portable(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                               int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work);
void sgemm_small_dot_portable(int64_t M, int64_t N, int64_t K, float alpha, const void* a, const void* B,
                              int64_t ldb, float beta, float* c, int64_t rsc, int64_t csc, float* work);

}  // namespace dalle
