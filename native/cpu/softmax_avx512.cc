// AVX-512 leaf kernels for the row-wise softmax family (softmax.cc dispatches to them; loss.cc and attention.cc use
// them through softmax.cc's row_* functions). Compiled with -mavx512f ...: leaf C-style functions only (binding.gyp).
//
// exp: Cephes expf scheme. n = round(x log2 e), r = x - n ln2 (ln2 split in two for exactness), exp(r) by a degree-7
// polynomial on |r| <= ln2 / 2 (max relative error about 2e-7, i.e. 1-2 ulp), 2^n applied with vscalefps (which
// also underflows smoothly to 0). x is clamped to [-127, 88.5], so exp(-inf) is exactly 0 (2^-183 underflows);
// NaN propagates. Sums use 16-lane accumulators and a fixed lane-reduction order, so a row's result never depends on
// how rows are split among threads.
#include <immintrin.h>

#include "simd_math_avx512.h"

#include <cstddef>
#include <cstdint>

// GCC 12 reports its own _mm512_undefined_ps() inside _mm512_reduce_* as uninitialized (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace dalle {

namespace {

static inline __mmask16 tail_mask(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

using simd512::exp16;

}  // namespace

float row_max_avx512(const float* x, int64_t n) {
  __m512 m0 = _mm512_set1_ps(-__builtin_inff()), m1 = m0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + i));
    m1 = _mm512_max_ps(m1, _mm512_loadu_ps(x + i + 16));
  }
  for (; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    m0 = _mm512_mask_max_ps(m0, k, m0, _mm512_maskz_loadu_ps(k, x + i));
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

// y = mul * exp(x - shift) (y may be null: sum only; y may equal x); returns sum of exp(x - shift).
float row_exp_avx512(const float* x, float* y, int64_t n, float shift, float mul) {
  const __m512 vs = _mm512_set1_ps(shift), vm = _mm512_set1_ps(mul);
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 e0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
    __m512 e1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), vs));
    s0 = _mm512_add_ps(s0, e0);
    s1 = _mm512_add_ps(s1, e1);
    if (y) {
      _mm512_storeu_ps(y + i, _mm512_mul_ps(e0, vm));
      _mm512_storeu_ps(y + i + 16, _mm512_mul_ps(e1, vm));
    }
  }
  for (; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vs));
    s0 = _mm512_mask_add_ps(s0, k, s0, e);
    if (y) _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(e, vm));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

// y = x * s + c
void row_affine_avx512(const float* x, float* y, int64_t n, float s, float c) {
  const __m512 vs = _mm512_set1_ps(s), vc = _mm512_set1_ps(c);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, x + i), vs, vc));
  }
}

float row_dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

float row_sum_avx512(const float* a, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_add_ps(s0, _mm512_loadu_ps(a + i));
    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(a + i + 16));
  }
  for (; i < n; i += 16) s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(tail_mask(n - i), a + i));
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

// dx = y * (g - s)   (softmax backward; dx may alias g)
void row_softmax_bwd_avx512(const float* y, const float* g, float* dx, int64_t n, float s) {
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, g + i), vs);
    _mm512_mask_storeu_ps(dx + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, y + i), d));
  }
}

// dx = g - exp(y) * s   (log-softmax backward; y = log-probabilities)
void row_logsoftmax_bwd_avx512(const float* y, const float* g, float* dx, int64_t n, float s) {
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    __m512 e = exp16(_mm512_maskz_loadu_ps(k, y + i));
    _mm512_mask_storeu_ps(dx + i, k, _mm512_fnmadd_ps(e, vs, _mm512_maskz_loadu_ps(k, g + i)));
  }
}

// s[j] = -inf where allowed[j] == 0 (attention masks, i32 0/1).
void row_mask_avx512(float* s, const int32_t* allowed, int64_t n) {
  const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    __mmask16 off = _mm512_mask_cmpeq_epi32_mask(k, _mm512_maskz_loadu_epi32(k, allowed + i), _mm512_setzero_si512());
    _mm512_mask_storeu_ps(s + i, off, ninf);
  }
}

}  // namespace dalle
