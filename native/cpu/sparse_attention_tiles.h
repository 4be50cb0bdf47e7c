// Tile kernels of the sparse attention (sparse_attention.cc): one query block's products and softmax, with no
// packing and no call per row. Plain C-style declarations: this header is included by the AVX-512 translation unit.
//
// Tiles are transposed: a query block of R queries is padded to L = round_up(R, 16) lanes, and a tile holds one row
// of L floats per key, (keys, L), so the softmax over keys runs down the rows, 16 queries a vector, with no
// horizontal reduction. Lanes r >= R are padding: their queries allow no key (lo = hi = 0), so P and dS are 0 there.
// Every product is one form, a "broadcast GEMM" whose operand `a` is read one element at a time at any strides:
//   C[i, n] = alpha * sum_k a[i * sai + k * sak] * B[k * ldb + n]  (+ C[i, n] when accumulate), i < M, n < N,
// so S^T = K Q^T reads keys in place (a = key rows) against Q^T (B, L lanes wide), and out = P V, dq = dS K,
// dv = P^T dO, dk = dS^T Q read the tile through a (sai = 1, sak = L, or transposed) against rows of V, K, dO, Q.
// Each element's sum runs k = 0, 1, ... in order in every implementation: the same bits for any thread count.
#pragma once
#include <cstdint>

namespace dalle {

// One key segment of a block: tile rows [off, off + n); a query's allowed keys in it are elements [lo, hi).
struct SaSegment {
  int64_t off, n;
};

typedef void (*SaBcastGemmFn)(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t sai, int64_t sak,
                              const float* B, int64_t ldb, int accumulate, float* C, int64_t ldc);
// Forward softmax in place on a (width, L) tile of scores: P = exp(S - max) / sum over each lane's allowed keys
// (lo[s * L + r] <= e < hi[s * L + r] in segment s), 0 elsewhere; lse[r] = max + log(sum), -inf for a lane with
// no allowed key (its P row is 0).
typedef void (*SaSoftmaxForwardFn)(float* tile, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                                   const int32_t* hi, float* lse);
// Backward, in place: p holds the scores S, dp holds dP = dO V^T, both (width, L); lse[r] from the forward (finite on
// lanes with allowed keys). Out: p = P = exp(S - lse) on allowed keys, 0 elsewhere; dp = dS = P (dP - sum_keys P dP).
typedef void (*SaSoftmaxBackwardFn)(float* p, float* dp, int64_t L, int64_t ns, const SaSegment* segs,
                                    const int32_t* lo, const int32_t* hi, const float* lse);

// dst (D, L) = rows src[r * ld], r < R, transposed (dst[d * L + r] = src[r * ld + d]); lanes [R, L) zero.
typedef void (*SaTransposeFn)(const float* src, int64_t ld, int64_t R, int64_t D, int64_t L, float* dst);

struct SaKernels {
  SaBcastGemmFn gemm;
  SaTransposeFn transpose;
  SaSoftmaxForwardFn softmax_forward;
  SaSoftmaxBackwardFn softmax_backward;
};

// The kernels of the active ISA (AVX-512, AVX2 + FMA, else portable C++).
SaKernels sa_kernels();

// AVX-512 (sparse_attention_avx512.cc).
void sa_bcast_gemm_avx512(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t sai, int64_t sak,
                          const float* B, int64_t ldb, int accumulate, float* C, int64_t ldc);
void sa_transpose_avx512(const float* src, int64_t ld, int64_t R, int64_t D, int64_t L, float* dst);
void sa_softmax_forward_avx512(float* tile, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                               const int32_t* hi, float* lse);
void sa_softmax_backward_avx512(float* p, float* dp, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                                const int32_t* hi, const float* lse);

// AVX2 + FMA (sparse_attention_avx2.cc).
void sa_bcast_gemm_avx2(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t sai, int64_t sak,
                        const float* B, int64_t ldb, int accumulate, float* C, int64_t ldc);
void sa_transpose_avx2(const float* src, int64_t ld, int64_t R, int64_t D, int64_t L, float* dst);
void sa_softmax_forward_avx2(float* tile, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                             const int32_t* hi, float* lse);
void sa_softmax_backward_avx2(float* p, float* dp, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                              const int32_t* hi, const float* lse);

}  // namespace dalle
