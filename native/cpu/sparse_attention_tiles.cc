// Portable tile kernels of the sparse attention (contracts in sparse_attention_tiles.h) and the choice between them
// and the AVX-512 and AVX2 ones (sparse_attention_avx512.cc, sparse_attention_avx2.cc). Same order of every sum as
// the vector kernels (k ascending, keys in tile order), without fused multiply-adds.
#include "sparse_attention_tiles.h"

#include <cmath>

#include "cpu_features.h"

namespace dalle {

namespace {

void bcast_gemm_portable(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t sai, int64_t sak,
                         const float* B, int64_t ldb, int accumulate, float* C, int64_t ldc) {
  constexpr int64_t kCols = 64;  // a row's accumulators
  float acc[kCols];
  for (int64_t i = 0; i < M; i++)
    for (int64_t n0 = 0; n0 < N; n0 += kCols) {
      const int64_t nn = N - n0 < kCols ? N - n0 : kCols;
      for (int64_t n = 0; n < nn; n++) acc[n] = 0.0f;
      for (int64_t k = 0; k < K; k++) {
        const float x = a[i * sai + k * sak];
        const float* b = B + k * ldb + n0;
        for (int64_t n = 0; n < nn; n++) acc[n] += x * b[n];
      }
      float* c = C + i * ldc + n0;
      for (int64_t n = 0; n < nn; n++) c[n] = accumulate ? acc[n] * alpha + c[n] : acc[n] * alpha;
    }
}

void transpose_portable(const float* src, int64_t ld, int64_t R, int64_t D, int64_t L, float* dst) {
  for (int64_t d = 0; d < D; d++)
    for (int64_t r = R; r < L; r++) dst[d * L + r] = 0.0f;
  for (int64_t r = 0; r < R; r++)
    for (int64_t d = 0; d < D; d++) dst[d * L + r] = src[r * ld + d];
}

inline bool allowed(int64_t e, int64_t lane, const int32_t* lo, const int32_t* hi) {
  return e >= lo[lane] && e < hi[lane];
}

void softmax_forward_portable(float* tile, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                              const int32_t* hi, float* lse) {
  for (int64_t r = 0; r < L; r++) {
    float m = -INFINITY;
    for (int64_t s = 0; s < ns; s++)
      for (int64_t e = 0; e < segs[s].n; e++) {
        const float x = tile[(segs[s].off + e) * L + r];
        if (allowed(e, s * L + r, lo, hi) && x > m) m = x;
      }
    float sum = 0.0f;
    for (int64_t s = 0; s < ns; s++)
      for (int64_t e = 0; e < segs[s].n; e++) {
        float& x = tile[(segs[s].off + e) * L + r];
        x = allowed(e, s * L + r, lo, hi) ? std::exp(x - m) : 0.0f;
        sum += x;
      }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int64_t s = 0; s < ns; s++)
      for (int64_t e = 0; e < segs[s].n; e++) tile[(segs[s].off + e) * L + r] *= inv;
    lse[r] = sum > 0.0f ? m + std::log(sum) : -INFINITY;
  }
}

void softmax_backward_portable(float* p, float* dp, int64_t L, int64_t ns, const SaSegment* segs, const int32_t* lo,
                               const int32_t* hi, const float* lse) {
  for (int64_t r = 0; r < L; r++) {
    float di = 0.0f;
    for (int64_t s = 0; s < ns; s++)
      for (int64_t e = 0; e < segs[s].n; e++) {
        const int64_t x = (segs[s].off + e) * L + r;
        p[x] = allowed(e, s * L + r, lo, hi) ? std::exp(p[x] - lse[r]) : 0.0f;
        di += p[x] * dp[x];
      }
    for (int64_t s = 0; s < ns; s++)
      for (int64_t e = 0; e < segs[s].n; e++) {
        const int64_t x = (segs[s].off + e) * L + r;
        dp[x] = p[x] * (dp[x] - di);
      }
  }
}

}  // namespace

SaKernels sa_kernels() {
#if defined(DALLE_X86)
  if (active_isa() == Isa::Avx512)
    return {&sa_bcast_gemm_avx512, &sa_transpose_avx512, &sa_softmax_forward_avx512, &sa_softmax_backward_avx512};
  if (active_isa() == Isa::Avx2)
    return {&sa_bcast_gemm_avx2, &sa_transpose_avx2, &sa_softmax_forward_avx2, &sa_softmax_backward_avx2};
#endif
  return {&bcast_gemm_portable, &transpose_portable, &softmax_forward_portable, &softmax_backward_portable};
}

}  // namespace dalle
