// GEMM development harness (llm.c style): every version checked against the double-accumulation reference on odd
// shapes (all transposes, alpha/beta, beta = 0 with NaN in C, padded leading dimensions, 1 and 2 threads), then
// benchmarked. Versions:
//   1  naive i-k-j loops (what the compiler makes of the definition)
//   2  packed + blocked, portable micro-kernel 4 x 16 (ISA cap "portable")
//   3  packed + blocked, AVX2 6 x 16
//   4  packed + blocked, AVX-512 8 x 48 (+ small-M / small-N paths that skip packing)
//   5  bf16 inputs: vdpbf16ps 8 x 48 on k-pairs (or converted to fp32 without AVX512_BF16)
// What was tried (this Zen 4 VM, 1 thread, CPUTIME=1; see also microkernel.cc):
//   - micro-kernel shape: 4x64 .. 14x32 all reach the FMA peak on packed data (1 zmm FMA a cycle): kept 8 x 48.
//   - loop order: jr > ir (B sliver reused from L1, as GotoBLAS) 99-108 GFLOP/s at 2048^3; ir > jr (A sliver in L1,
//     B panel streamed from L2/L3) 105-111: kept ir > jr.
//   - KC 128 / 192 / 256 / 384 / 512 / 768 / 1024: 89 / 95 / 99 / 104 / 109 / 110 / 109 (2048^3); after the edge
//     kernels below, 512 vs 1024: 107 vs 110 (1024^3), 111 vs 112 (2048^3), bf16 212 vs 215: KC = 1024.
//   - N edge: 1024 = 21 x 48 + 16; the last tile at full 48 width wasted 3%: 8 x 32 and 8 x 16 kernels for the edge
//     (1024^3: 105.5 -> 107.6).
//   - NC 240 / 480 / 960 / 3072: 98 / 102 / 106 / 109 (op(A) is re-packed per NC block): NC = 3072. MC: no effect.
//   - small M, B (K, N): a 64-column strip in registers walking down K ran 9 GFLOP/s at M = 1 (strided, one page per
//     row); k outer with accumulators in a 16 KiB L1 buffer 17-19; its chunk must keep M x chunk in L1 (M = 8 with a
//     32 KiB chunk fell from 60 to 29).
//   - bf16 small M: packing B cost as much as the arithmetic (15 GFLOP/s at M = 1); vdpbf16ps dot products on the
//     unpacked (N, K) weight: 67.
// Usage: gemm_dev                 check all, then benchmark the standard shapes on 1 and 2 threads
//        gemm_dev M N K [T] [ta tb] [version]   benchmark one shape
// Env: KC, MC, NC override the block sizes (gemm_set_blocking) for tuning; CPUTIME=1 times with the thread's CPU clock.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

#include "cpu_features.h"
#include "gemm.h"
#include "threadpool.h"

using namespace dalle;

// CPUTIME=1: time with this thread's CPU clock (single-thread tuning on a busy machine: time spent descheduled by
// other processes does not count).
static double now() {
  static const bool cpu = getenv("CPUTIME") && atoi(getenv("CPUTIME"));
  timespec t;
  clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

// version 1: naive
static void gemm_naive(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                       const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++) {
    float* c = C + i * ldc;
    for (int64_t j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
    for (int64_t k = 0; k < K; k++) {
      float a = alpha * (ta ? A[k * lda + i] : A[i * lda + k]);
      if (!tb) {
        const float* b = B + k * ldb;
        for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
      } else {
        for (int64_t j = 0; j < N; j++) c[j] += a * B[j * ldb + k];
      }
    }
  }
}

struct Version {
  const char* name;
  Isa isa;
  bool bf16;
  bool naive;
};
static const Version kVersions[] = {
    {"1 naive", Isa::Avx512, false, true},      {"2 portable", Isa::Portable, false, false},
    {"3 avx2", Isa::Avx2, false, false},         {"4 avx512", Isa::Avx512, false, false},
    {"5 bf16", Isa::Avx512, true, false},
};

struct Mats {
  std::vector<float> A, B, C;
  std::vector<uint16_t> Ah, Bh;
};

static void run_version(const Version& v, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, Mats& m,
                        int64_t lda, int64_t ldb, float beta, float* C, int64_t ldc) {
  set_isa_cap(v.isa);
  if (v.naive) gemm_naive(ta, tb, M, N, K, alpha, m.A.data(), lda, m.B.data(), ldb, beta, C, ldc);
  else if (v.bf16) gemm_bf16(ta, tb, M, N, K, alpha, m.Ah.data(), lda, m.Bh.data(), ldb, beta, C, ldc);
  else sgemm(ta, tb, M, N, K, alpha, m.A.data(), lda, m.B.data(), ldb, beta, C, ldc);
}

static int check_all() {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> U(-1.0f, 1.0f);
  const int64_t shapes[][3] = {{1, 1, 1},    {7, 7, 7},     {33, 33, 33},   {129, 129, 129}, {257, 257, 257},
                               {13, 1, 300}, {1, 517, 64},  {300, 5, 17},   {9, 100, 1000},  {100, 3, 64},
                               {64, 64, 0},  {5, 250, 513}, {400, 777, 65}, {2, 3, 4},       {600, 50, 520},
                               {20, 30, 1100}, {9, 3100, 20}};
  int fails = 0, checks = 0;
  // Threads outermost: the pool is resized twice, not for every call.
  for (int threads : {1, 2}) {
  set_num_threads(threads);
  for (auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    for (int t = 0; t < 4; t++) {
      const bool ta = t & 1, tb = t & 2;
      const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
      Mats m;
      m.A.resize((ta ? K : M) * lda + 1), m.B.resize((tb ? N : K) * ldb + 1);
      for (auto& x : m.A) x = U(rng);
      for (auto& x : m.B) x = U(rng);
      m.Ah.resize(m.A.size()), m.Bh.resize(m.B.size());
      for (size_t i = 0; i < m.A.size(); i++) m.Ah[i] = to_bf16(m.A[i]);
      for (size_t i = 0; i < m.B.size(); i++) m.Bh[i] = to_bf16(m.B[i]);
      std::vector<float> C0(M * ldc);
      for (auto& x : C0) x = U(rng);
      const float alphas[] = {1.0f, -0.5f}, betas[] = {0.0f, 1.0f, 0.25f};
      for (float alpha : alphas)
        for (float beta : betas) {
          std::vector<float> ref32 = C0, ref16 = C0;
          sgemm_reference(ta, tb, M, N, K, alpha, m.A.data(), lda, m.B.data(), ldb, beta, ref32.data(), ldc);
          gemm_bf16_reference(ta, tb, M, N, K, alpha, m.Ah.data(), lda, m.Bh.data(), ldb, beta, ref16.data(), ldc);
          for (const Version& v : kVersions) {
              const std::vector<float>& ref = v.bf16 ? ref16 : ref32;
              std::vector<float> out = C0;
              if (beta == 0.0f)
                for (auto& x : out) x = NAN;  // C must be write-only
              run_version(v, ta, tb, M, N, K, alpha, m, lda, ldb, beta, out.data(), ldc);
              // fp32 rounding of a K-term dot product of values in [-1, 1]: error grows ~ sqrt(K) * eps * |terms|
              const double tol = 1e-5 * std::sqrt((double)K + 1) * 4;
              double worst = 0;
              for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                  double d = std::fabs((double)out[i * ldc + j] - ref[i * ldc + j]);
                  if (!(d <= tol)) d = std::isnan(d) ? 1e30 : d;
                  if (d > worst) worst = d;
                }
              checks++;
              if (worst > tol) {
                if (fails < 20)
                  printf("FAIL %-10s M=%lld N=%lld K=%lld ta=%d tb=%d alpha=%g beta=%g T=%d: max err %g (tol %g)\n",
                         v.name, (long long)M, (long long)N, (long long)K, ta, tb, alpha, beta, threads, worst, tol);
                fails++;
              }
            }
        }
    }
  }
  }
  set_isa_cap(Isa::Avx512);
  set_num_threads(2);
  printf("check: %d passed, %d failed\n", checks - fails, fails);
  return fails;
}

static double bench(const Version& v, int64_t M, int64_t N, int64_t K, bool ta, bool tb, int threads) {
  set_num_threads(threads);
  Mats m;
  m.A.assign(M * K, 0.5f), m.B.assign(K * N, 0.25f), m.Ah.assign(M * K, to_bf16(0.5f)),
      m.Bh.assign(K * N, to_bf16(0.25f));
  std::vector<float> C(M * N, 0.0f);
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  const double flops = 2.0 * M * N * K;
  run_version(v, ta, tb, M, N, K, 1.0f, m, lda, ldb, 0.0f, C.data(), N);  // warm-up: buffers, pages
  double best = 1e30;
  for (int r = 0; r < 7; r++) {
    int reps = 0;
    double t = now(), dt;
    do {
      run_version(v, ta, tb, M, N, K, 1.0f, m, lda, ldb, 0.0f, C.data(), N);
      reps++;
      dt = now() - t;
    } while (dt < 0.05);
    if (dt / reps < best) best = dt / reps;
  }
  set_isa_cap(Isa::Avx512);
  return flops / best / 1e9;
}

int main(int argc, char** argv) {
  if (getenv("KC") || getenv("MC") || getenv("NC"))
    gemm_set_blocking(getenv("KC") ? atoi(getenv("KC")) : 0, getenv("MC") ? atoi(getenv("MC")) : 0,
                      getenv("NC") ? atoi(getenv("NC")) : 0);
  printf("cpu: avx2 %d avx512 %d avx512_bf16 %d\n", cpu_features().avx2_fma, cpu_features().avx512,
         cpu_features().avx512_bf16);
  if (argc >= 4) {
    int64_t M = atoll(argv[1]), N = atoll(argv[2]), K = atoll(argv[3]);
    int T = argc > 4 ? atoi(argv[4]) : 1;
    bool ta = argc > 5 && atoi(argv[5]), tb = argc > 6 && atoi(argv[6]);
    int only = argc > 7 ? atoi(argv[7]) : 0;
    for (const Version& v : kVersions) {
      if (only ? v.name[0] - '0' != only : (v.naive && M * N * K > (1LL << 30))) continue;
      printf("%-10s M=%lld N=%lld K=%lld ta=%d tb=%d T=%d: %7.1f GFLOP/s\n", v.name, (long long)M, (long long)N,
             (long long)K, ta, tb, T, bench(v, M, N, K, ta, tb, T));
    }
    return 0;
  }
  if (check_all()) return 1;
  const int64_t shapes[][3] = {{256, 256, 256},    {512, 512, 512},    {1024, 1024, 1024}, {2048, 2048, 2048},
                               {2048, 1024, 256},  {2048, 4096, 256},  {2048, 1024, 512},  {2048, 4096, 512},
                               {1, 4096, 1024},    {8, 4096, 1024}};
  for (auto& s : shapes)
    for (int T : {1, 2}) {
      printf("M=%5lld N=%5lld K=%5lld T=%d:", (long long)s[0], (long long)s[1], (long long)s[2], T);
      for (int vi = 1; vi < 5; vi++) printf("  %s %7.1f", kVersions[vi].name, bench(kVersions[vi], s[0], s[1], s[2],
                                                                                      false, false, T));
      printf("\n");
    }
  return 0;
}
