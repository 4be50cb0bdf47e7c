// Micro-kernel shapes on packed, cache-resident data: which MR x NR (NR = 16 * NV) tile reaches the FMA peak.
// Result on this Zen 4 VM (1 zmm FMA a cycle): every shape from 4x64 to 14x32 measured 112-116 GFLOP/s on one core
// (= peak), so the library picks 8 x 48 for its reuse and for MR = 8 (A packing is an 8 x 8 transpose).
#include <immintrin.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <initializer_list>

static double now() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

template <int MR, int NV>
__attribute__((noinline)) void uk(int64_t K, const float* a, const float* b, float* c, int64_t ldc) {
  __m512 acc[MR][NV];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k++) {
    __m512 bv[NV];
    for (int j = 0; j < NV; j++) bv[j] = _mm512_loadu_ps(b + j * 16);
    for (int i = 0; i < MR; i++) {
      __m512 av = _mm512_set1_ps(a[i]);
      for (int j = 0; j < NV; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
    }
    a += MR;
    b += NV * 16;
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NV; j++)
      _mm512_storeu_ps(c + i * ldc + j * 16, _mm512_add_ps(acc[i][j], _mm512_loadu_ps(c + i * ldc + j * 16)));
}

// nsl A slivers share one B sliver (the jr > ir loop order of the library).
template <int MR, int NV>
void run(int KC, int nsl) {
  const int NR = NV * 16;
  float* a = (float*)aligned_alloc(64, sizeof(float) * KC * MR * nsl);
  float* b = (float*)aligned_alloc(64, sizeof(float) * KC * NR);
  float* c = (float*)aligned_alloc(64, sizeof(float) * MR * NR * nsl);
  for (long i = 0; i < (long)KC * MR * nsl; i++) a[i] = 1e-3f;
  for (long i = 0; i < (long)KC * NR; i++) b[i] = 1e-3f;
  for (long i = 0; i < (long)MR * NR * nsl; i++) c[i] = 0;
  double best = 0;
  for (int r = 0; r < 5; r++) {
    long it = 0, iters = (long)(2e9 / (2.0 * KC * MR * NR) / nsl) + 1;
    double t = now();
    for (; it < iters; it++)
      for (int s = 0; s < nsl; s++) uk<MR, NV>(KC, a + (long)s * KC * MR, b, c + s * MR * NR, NR);
    double g = 2.0 * KC * MR * NR * nsl * it / (now() - t) / 1e9;
    if (g > best) best = g;
  }
  printf("%2dx%2d KC=%4d A slivers=%3d: %6.1f GFLOP/s\n", MR, NR, KC, nsl, best);
  free(a), free(b), free(c);
}

int main() {
  for (int KC : {128, 256, 384})
    for (int nsl : {1, 16}) {
      run<14, 2>(KC, nsl), run<12, 2>(KC, nsl), run<8, 3>(KC, nsl), run<6, 4>(KC, nsl), run<8, 2>(KC, nsl);
      run<4, 4>(KC, nsl);
    }
}
