// OpenBLAS reference for bench/gemm.ts: cblas_sgemm GFLOP/s for given shapes, and the machine's measured FMA peak.
// Built by bench/setup.sh against Debian's OpenBLAS (OpenMP build). Run with OPENBLAS_CORETYPE / OMP_NUM_THREADS /
// OPENBLAS_NUM_THREADS set by the caller (bench/gemm.ts sets them explicitly).
//   openblas_gemm gemm M N K [ta tb] ...   one line per shape: "gemm M N K ta tb GFLOPS"
//                                          (ta/tb: 0 or 1; repeat groups of 5 for several shapes)
//   openblas_gemm peak THREADS             "peak fp32 GFLOPS" and "peak bf16 GFLOPS": an FMA / vdpbf16ps loop with
//                                          12 independent accumulators on THREADS threads (needs AVX-512 / BF16)
//   openblas_gemm config                   what OpenBLAS says about itself (core type, threads)
#define _GNU_SOURCE
#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern char* openblas_get_config(void);
extern char* openblas_get_corename(void);
extern int openblas_get_num_threads(void);

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void* alloc_touch(size_t n, float v) {
  float* p = NULL;
  if (posix_memalign((void**)&p, 64, n * sizeof(float) + 64)) exit(2);
  for (size_t i = 0; i < n; i++) p[i] = v;
  return p;
}

// Best time over 7 rounds of >= 50 ms each, after a warm-up call (OpenBLAS's own buffers, page faults).
static double bench_gemm(int M, int N, int K, int ta, int tb) {
  float* A = alloc_touch((size_t)M * K, 0.5f);
  float* B = alloc_touch((size_t)K * N, 0.25f);
  float* C = alloc_touch((size_t)M * N, 0.0f);
  const int lda = ta ? M : K, ldb = tb ? K : N;
  const enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
  double best = 1e30;
  for (int r = 0; r < 7; r++) {
    int reps = 0;
    double t = now(), dt;
    do {
      cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
      reps++;
      dt = now() - t;
    } while (dt < 0.05);
    if (dt / reps < best) best = dt / reps;
  }
  free(A), free(B), free(C);
  return 2.0 * M * N * K / best / 1e9;
}

// ---- peak: independent chains of vfmadd231ps zmm / vdpbf16ps zmm, in inline asm so no compiler folds them.
#define F1(r) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #r "\n\t"
#define B1(r) "vdpbf16ps %%zmm30, %%zmm31, %%zmm" #r "\n\t"
#define F12 F1(0) F1(1) F1(2) F1(3) F1(4) F1(5) F1(6) F1(7) F1(8) F1(9) F1(10) F1(11)
#define B12 B1(0) B1(1) B1(2) B1(3) B1(4) B1(5) B1(6) B1(7) B1(8) B1(9) B1(10) B1(11)

struct PeakArg {
  int bf16;
  long iters;
  double seconds;
};

__attribute__((target("avx512f,avx512bf16"))) static void* peak_thread(void* p) {
  struct PeakArg* a = (struct PeakArg*)p;
  __asm__ volatile("vxorps %%xmm30, %%xmm30, %%xmm30\n\tvxorps %%xmm31, %%xmm31, %%xmm31" ::: "xmm30", "xmm31");
  double t = now();
  if (a->bf16) {
    for (long i = 0; i < a->iters; i++)
      __asm__ volatile(B12 ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
                       "xmm10", "xmm11");
  } else {
    for (long i = 0; i < a->iters; i++)
      __asm__ volatile(F12 ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
                       "xmm10", "xmm11");
  }
  a->seconds = now() - t;
  return NULL;
}

// GFLOP/s of all threads together; best of 3 runs of ~0.3 s.
static double peak(int threads, int bf16) {
  const long iters = 30000000;
  double best = 0;
  for (int r = 0; r < 3; r++) {
    pthread_t th[64];
    struct PeakArg args[64];
    for (int i = 0; i < threads; i++) {
      args[i].bf16 = bf16, args[i].iters = iters, args[i].seconds = 0;
      pthread_create(&th[i], NULL, peak_thread, &args[i]);
    }
    double slowest = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(th[i], NULL);
      if (args[i].seconds > slowest) slowest = args[i].seconds;
    }
    const double flops_per_insn = bf16 ? 64.0 : 32.0;  // 16 lanes x (2 products x 2 | 1 FMA x 2)
    double g = threads * (double)iters * 12 * flops_per_insn / slowest / 1e9;
    if (g > best) best = g;
  }
  return best;
}

static int has_avx512_bf16(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
}

int main(int argc, char** argv) {
  if (argc >= 2 && !strcmp(argv[1], "config")) {
    printf("config %s\ncore %s\nthreads %d\n", openblas_get_config(), openblas_get_corename(),
           openblas_get_num_threads());
    return 0;
  }
  if (argc >= 3 && !strcmp(argv[1], "peak")) {
    int threads = atoi(argv[2]);
    if (threads < 1 || threads > 64) threads = 1;
    if (!__builtin_cpu_supports("avx512f")) {
      printf("peak fp32 0\npeak bf16 0\n");
      return 0;
    }
    printf("peak fp32 %.1f\n", peak(threads, 0));
    printf("peak bf16 %.1f\n", has_avx512_bf16() ? peak(threads, 1) : 0.0);
    return 0;
  }
  if (argc >= 5 && !strcmp(argv[1], "gemm")) {
    for (int i = 2; i + 2 < argc; i += 5) {
      int M = atoi(argv[i]), N = atoi(argv[i + 1]), K = atoi(argv[i + 2]);
      int ta = i + 3 < argc ? atoi(argv[i + 3]) : 0, tb = i + 4 < argc ? atoi(argv[i + 4]) : 0;
      printf("gemm %d %d %d %d %d %.2f\n", M, N, K, ta, tb, bench_gemm(M, N, K, ta, tb));
      fflush(stdout);
    }
    return 0;
  }
  fprintf(stderr, "usage: %s gemm M N K [ta tb] ... | peak THREADS | config\n", argv[0]);
  return 2;
}
