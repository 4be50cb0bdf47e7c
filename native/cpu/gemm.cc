// GEMM driver: argument checks, ISA dispatch, threading, GotoBLAS/BLIS blocking. The leaf kernels (packing and
// micro-kernels per ISA) are in gemm_avx512.cc, gemm_avx2.cc, gemm_portable.cc; gemm_kernels.h has their contracts.
//
// Key: C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C.
// Loops, per thread, over its own block of C (threads split M or N; see choose_grid()):
//   jc (NC columns of C) > pc (KC of K: pack op(B)[pc:, jc:] as NR-wide slivers) > ic (MC rows: pack op(A) as
//   MR-high slivers) > ir (MR) > jr (NR): micro-kernel on an MR x NR tile with kc-long packed slivers.
// The first pc block applies beta, later ones accumulate (beta = 1). Packed buffers are per thread and kept between
// calls (allocated once from the caching allocator, grown when needed): no page faults in steady state.
// Small M (<= kSmallM, e.g. generation with batch 1..8) skips packing B (it would cost as much as the arithmetic)
// and streams B once; small N runs as the transposed problem on the same path.
// bf16: AVX512_BF16 packs k-pairs and runs vdpbf16ps; without it, bf16 is widened to fp32 while packing and runs the
// fp32 kernel of the active ISA (AVX-512, AVX2 or portable).
// Threads: problems under kParallelMinMacs run on the caller; otherwise each pool thread takes a block of C (split
// along M or N in whole tiles, choose_grid) and runs the blocked algorithm on it with its own packed panels.
#include "gemm.h"

#include <cstring>

#include "allocator.h"
#include "cpu_features.h"
#include "error.h"
#include "gemm_kernels.h"
#include "threadpool.h"

#ifndef DALLE_GEMM_STANDALONE
#include "napi_util.h"
#endif

namespace dalle {

namespace {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// ---------------------------------------------------------------------------------------------------------------
// Kernel sets

struct Impl {
  int mr, nr;
  int64_t kc, mc, nc;       // block sizes (kc a multiple of 8; mc of mr; nc of nr)
  int in_size;              // bytes per input element: 4 (fp32) or 2 (bf16)
  int packed_size;          // bytes per packed element
  int kpad;                 // packed k rounded up to this (2 for bf16 pairs)
  GemmPackFn pack;
  GemmUkernelFn ukernel;
  // small-M kernels (null where there are none: bf16 without AVX512_BF16 takes the packed path)
  GemmSmallFn small_rowb, small_dot;
};

// Block sizes, tuned with native/dev/gemm on this Zen 4 VM (32 KiB L1d, 1 MiB L2 per core, 32 MiB L3), 1 thread:
// KC 256 -> 512 gained 4% at 2048^3 (fewer passes over C), 1024 another 1-3% (1024^3: 107 -> 110 GFLOP/s; bf16
// 212 -> 215); NC below 1000 lost 5-10% (op(A) is packed again for every NC block); MC hardly matters with the A
// sliver in L1 (96..384 within noise).
struct Blocking {
  int64_t kc = 1024, mc = 192, nc = 3072;
};
Blocking g_blocking;

Impl select_impl(bool bf16) {
  Impl im{};
  Isa isa = active_isa();
  const Blocking& b = g_blocking;
  if (isa == Isa::Avx512) {
    im.mr = kMrAvx512, im.nr = kNrAvx512;
    im.ukernel = &sgemm_ukernel_avx512;
    im.pack = &sgemm_pack_avx512;
    im.small_rowb = &sgemm_small_rowb_avx512, im.small_dot = &sgemm_small_dot_avx512;
  } else if (isa == Isa::Avx2) {
    im.mr = kMrAvx2, im.nr = kNrAvx2;
    im.ukernel = &sgemm_ukernel_avx2;
    im.pack = &sgemm_pack_avx2;
    im.small_rowb = &sgemm_small_rowb_avx2, im.small_dot = &sgemm_small_dot_avx2;
  } else {
    im.mr = kMrPortable, im.nr = kNrPortable;
    im.ukernel = &sgemm_ukernel_portable;
    im.pack = &sgemm_pack_portable;
    im.small_rowb = &sgemm_small_rowb_portable, im.small_dot = &sgemm_small_dot_portable;
  }
  im.in_size = 4, im.packed_size = 4, im.kpad = 1;
  if (bf16) {
    im.in_size = 2;
    im.small_rowb = nullptr, im.small_dot = nullptr;
    if (isa == Isa::Avx512 && cpu_features().avx512_bf16) {
      im.ukernel = &gemm_bf16_ukernel_avx512;
      im.pack = &gemm_bf16_pack_avx512;
      im.packed_size = 2, im.kpad = 2;
      im.small_rowb = &gemm_bf16_small_rowb_avx512, im.small_dot = &gemm_bf16_small_dot_avx512;
    } else {
      im.pack = &bf16_to_f32_pack_portable;  // convert while packing, then the fp32 kernel of this ISA
    }
  }
  im.kc = b.kc;
  im.mc = max64(im.mr, b.mc / im.mr * im.mr);
  im.nc = max64(im.nr, b.nc / im.nr * im.nr);
  return im;
}

// ---------------------------------------------------------------------------------------------------------------
// Per-thread packing buffers, kept for the life of the thread.

struct ThreadBuf {
  void* p = nullptr;
  size_t bytes = 0;
  void* get(size_t need) {
    if (need > bytes) {
      if (p) cache_free(p, bytes);
      size_t want = need + need / 4;  // some headroom so a slowly growing size does not realloc every call
      p = cache_alloc(want);
      bytes = want;
    }
    return p;
  }
};
thread_local ThreadBuf tl_abuf, tl_bbuf, tl_wbuf;

// ---------------------------------------------------------------------------------------------------------------
// One problem: everything a thread needs to compute its block of C.

struct Problem {
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
  const char* A;  // bytes
  int64_t lda;
  const char* B;
  int64_t ldb;
  float* C;
  int64_t ldc;
};

// C = beta * C on rows [m0, m1), cols [n0, n1) (used when K == 0 or alpha == 0).
void scale_c(const Problem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  for (int64_t i = m0; i < m1; i++) {
    float* c = p.C + i * p.ldc;
    if (p.beta == 0.0f) {
      for (int64_t j = n0; j < n1; j++) c[j] = 0.0f;
    } else if (p.beta != 1.0f) {
      for (int64_t j = n0; j < n1; j++) c[j] *= p.beta;
    }
  }
}

// The blocked algorithm on C[m0:m1, n0:n1].
void gemm_block(const Impl& im, const Problem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m0 >= m1 || n0 >= n1) return;
  if (p.K == 0 || p.alpha == 0.0f) {
    scale_c(p, m0, m1, n0, n1);
    return;
  }
  const int64_t Mt = m1 - m0, Nt = n1 - n0, K = p.K;
  // Balanced blocks: as few as the maximum sizes allow, of equal size (no thin last block).
  const int64_t kblocks = ceil_div(K, im.kc);
  const int64_t kc_max = round_up(ceil_div(K, kblocks), 8);
  const int64_t mblocks = ceil_div(Mt, im.mc);
  const int64_t mc_max = round_up(ceil_div(Mt, mblocks), im.mr);
  const int64_t nblocks = ceil_div(Nt, im.nc);
  const int64_t nc_max = round_up(ceil_div(Nt, nblocks), im.nr);
  const int64_t kc_pad_max = round_up(kc_max, im.kpad);
  char* abuf = static_cast<char*>(tl_abuf.get((size_t)(mc_max * kc_pad_max * im.packed_size) + 64));
  char* bbuf = static_cast<char*>(tl_bbuf.get((size_t)(nc_max * kc_pad_max * im.packed_size) + 64));
  const int64_t es = im.in_size;

  for (int64_t jc = n0; jc < n1; jc += nc_max) {
    const int64_t nc = min64(nc_max, n1 - jc);
    for (int64_t pc = 0; pc < K; pc += kc_max) {
      const int64_t kc = min64(kc_max, K - pc);
      const int64_t kcp = round_up(kc, im.kpad);
      // op(B)[pc:pc+kc, jc:jc+nc] as nc "rows" of the panel: element (n, k) = B[k * ldb + n] (kmajor) or B[n * ldb + k]
      const char* bsrc = p.tb ? p.B + (jc * p.ldb + pc) * es : p.B + (pc * p.ldb + jc) * es;
      im.pack(bsrc, p.ldb, p.tb ? 0 : 1, nc, kc, im.nr, bbuf);
      const float beta = pc == 0 ? p.beta : 1.0f;
      for (int64_t ic = m0; ic < m1; ic += mc_max) {
        const int64_t mc = min64(mc_max, m1 - ic);
        // op(A)[ic:ic+mc, pc:pc+kc]: element (m, k) = A[m * lda + k], or A[k * lda + m] (kmajor) when transposed
        const char* asrc = p.ta ? p.A + (pc * p.lda + ic) * es : p.A + (ic * p.lda + pc) * es;
        im.pack(asrc, p.lda, p.ta ? 1 : 0, mc, kc, im.mr, abuf);
        // ir outer: the A sliver (MR x kc: 8 x 1024 floats, 32 KiB at most) stays in L1 / L2 while the B panel
        // streams from L2 / L3 (hardware prefetch). Measured 2-5% faster than jr outer (GotoBLAS's order: a B sliver
        // of kc x 48 floats does not fit the 32 KiB L1 at kc >= 256).
        for (int64_t ir = 0; ir < mc; ir += im.mr) {
          const int64_t mr = min64(im.mr, mc - ir);
          const char* as = abuf + ir * kcp * im.packed_size;
          float* crow = p.C + (ic + ir) * p.ldc + jc;
          for (int64_t jr = 0; jr < nc; jr += im.nr) {
            im.ukernel(kc, as, bbuf + jr * kcp * im.packed_size, crow + jr, p.ldc, p.alpha, beta, mr,
                       min64(im.nr, nc - jr));
          }
        }
      }
    }
  }
}

// Copies rows [0, rows) x [0, K) of a matrix whose element (r, k) is at src[r * rs + k * cs] into a contiguous
// (rows, K) block, element size es (4 or 2).
void gather_rows(const char* src, int64_t rs, int64_t cs, int64_t rows, int64_t K, int es, void* dst) {
  if (es == 4) {
    const float* s = reinterpret_cast<const float*>(src);
    float* d = static_cast<float*>(dst);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t k = 0; k < K; k++) d[r * K + k] = s[r * rs + k * cs];
  } else {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t k = 0; k < K; k++) d[r * K + k] = s[r * rs + k * cs];
  }
}

// Small M: op(A) rows copied contiguous, B streamed unpacked. Columns [n0, n1).
void gemm_small_m(const Impl& im, const Problem& p, int64_t n0, int64_t n1) {
  if (n0 >= n1) return;
  if (p.K == 0 || p.alpha == 0.0f) {
    scale_c(p, 0, p.M, n0, n1);
    return;
  }
  const int es = im.in_size;
  void* a = tl_abuf.get((size_t)(p.M * p.K) * es + 64);
  // op(A)(m, k) = A[m * lda + k], or A[k * lda + m] when transposed
  gather_rows(p.A, p.ta ? 1 : p.lda, p.ta ? p.lda : 1, p.M, p.K, es, a);
  float* work = static_cast<float*>(tl_wbuf.get(sizeof(float) * kRowbWork));
  if (p.tb) {
    im.small_dot(p.M, n1 - n0, p.K, p.alpha, a, p.B + n0 * p.ldb * es, p.ldb, p.beta, p.C + n0, p.ldc, 1, work);
  } else {
    im.small_rowb(p.M, n1 - n0, p.K, p.alpha, a, p.B + n0 * es, p.ldb, p.beta, p.C + n0, p.ldc, 1, work);
  }
}

// Small N: C^T (N, M) = op(B)^T (N, K) @ op(A)^T (K, M), with C^T written through strides (1, ldc). Rows [m0, m1)
// of C (columns of C^T).
void gemm_small_n(const Impl& im, const Problem& p, int64_t m0, int64_t m1) {
  if (m0 >= m1) return;
  if (p.K == 0 || p.alpha == 0.0f) {
    scale_c(p, m0, m1, 0, p.N);
    return;
  }
  const int es = im.in_size;
  void* b = tl_bbuf.get((size_t)(p.N * p.K) * es + 64);
  // op(B)^T (n, k) = B[n * ldb + k] when transposed, else B[k * ldb + n]
  gather_rows(p.B, p.tb ? p.ldb : 1, p.tb ? 1 : p.ldb, p.N, p.K, es, b);
  float* work = static_cast<float*>(tl_wbuf.get(sizeof(float) * kRowbWork));
  // op(A)^T (k, m) = A[k * lda + m] (transposed A: row-major (K, M), "rowb") or A[m * lda + k] ("dot" form).
  if (p.ta) {
    im.small_rowb(p.N, m1 - m0, p.K, p.alpha, b, p.A + m0 * es, p.lda, p.beta, p.C + m0 * p.ldc, 1, p.ldc, work);
  } else {
    im.small_dot(p.N, m1 - m0, p.K, p.alpha, b, p.A + m0 * p.lda * es, p.lda, p.beta, p.C + m0 * p.ldc, 1, p.ldc,
                 work);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Threading

// Below this many multiply-adds a GEMM runs on the calling thread (waking the pool costs a few microseconds).
constexpr double kParallelMinMacs = 1 << 19;

// Splits `tiles` tiles of size `tile` over `parts`; returns [begin, end) of part i, clamped to len.
void split_range(int64_t len, int64_t tile, int parts, int i, int64_t* b, int64_t* e) {
  const int64_t tiles = ceil_div(len, tile);
  const int64_t q = tiles / parts, r = tiles % parts;
  const int64_t t0 = i * q + min64(i, r), t1 = t0 + q + (i < r ? 1 : 0);
  *b = min64(t0 * tile, len);
  *e = min64(t1 * tile, len);
}

// Chooses a tm x tn grid of threads for C (tm * tn = T): the most even split in whole tiles, then the least
// packing (each thread packs its own rows of op(A) and columns of op(B)).
void choose_grid(const Impl& im, int64_t M, int64_t N, int64_t K, int T, int* tm_out, int* tn_out) {
  double best = 1e300;
  for (int tm = 1; tm <= T; tm++) {
    if (T % tm) continue;
    const int tn = T / tm;
    const int64_t mt = ceil_div(ceil_div(M, im.mr), tm) * im.mr, nt = ceil_div(ceil_div(N, im.nr), tn) * im.nr;
    const double cost = (double)min64(mt, round_up(M, im.mr)) * (double)min64(nt, round_up(N, im.nr)) * K / 16.0 +
                        2.0 * (double)(min64(mt, M) + min64(nt, N)) * K;
    if (cost < best) best = cost, *tm_out = tm, *tn_out = tn;
  }
}

bool use_small_m(const Impl& im, const Problem& p) { return im.small_rowb && p.M <= kSmallM; }
bool use_small_n(const Impl& im, const Problem& p) { return im.small_rowb && p.N <= kSmallM && p.M > p.N; }

// Runs one problem on thread `t` of `T` (T = 1: all of it).
void run_part(const Impl& im, const Problem& p, int t, int T) {
  if (use_small_m(im, p)) {
    int64_t b, e;
    split_range(p.N, 64, T, t, &b, &e);
    gemm_small_m(im, p, b, e);
  } else if (use_small_n(im, p)) {
    int64_t b, e;
    split_range(p.M, 64, T, t, &b, &e);
    gemm_small_n(im, p, b, e);
  } else {
    int tm = 1, tn = 1;
    choose_grid(im, p.M, p.N, p.K, T, &tm, &tn);
    int64_t mb, me, nb, ne;
    split_range(p.M, im.mr, tm, t / tn, &mb, &me);
    split_range(p.N, im.nr, tn, t % tn, &nb, &ne);
    gemm_block(im, p, mb, me, nb, ne);
  }
}

void run_problem(const Impl& im, const Problem& p) {
  if (p.M == 0 || p.N == 0) return;
  const double macs = (double)p.M * p.N * (p.K ? p.K : 1);
  if (num_threads() <= 1 || macs < kParallelMinMacs) {
    run_part(im, p, 0, 1);
    return;
  }
  parallel_run([&](int t, int T) { run_part(im, p, t, T); });
}

// ---------------------------------------------------------------------------------------------------------------
// Argument checks: a bad call throws (naming the shapes), never reads out of bounds.

void check_args(const char* op, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
                const void* B, int64_t ldb, const void* C, int64_t ldc, bool need_data = true) {
  DALLE_CHECK(M >= 0 && N >= 0 && K >= 0, op, "negative size: M=%lld N=%lld K=%lld", (long long)M, (long long)N,
              (long long)K);
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K;
  const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N;
  DALLE_CHECK(lda >= max64(1, a_cols), op, "lda=%lld is less than the row length of A, stored (%lld, %lld)%s",
              (long long)lda, (long long)a_rows, (long long)a_cols, ta ? " (transposed)" : "");
  DALLE_CHECK(ldb >= max64(1, b_cols), op, "ldb=%lld is less than the row length of B, stored (%lld, %lld)%s",
              (long long)ldb, (long long)b_rows, (long long)b_cols, tb ? " (transposed)" : "");
  DALLE_CHECK(ldc >= max64(1, N), op, "ldc=%lld is less than the row length of C (%lld, %lld)", (long long)ldc,
              (long long)M, (long long)N);
  if (!need_data) return;
  DALLE_CHECK(A || M == 0 || K == 0, op, "A is null for a (%lld, %lld) operand", (long long)a_rows,
              (long long)a_cols);
  DALLE_CHECK(B || K == 0 || N == 0, op, "B is null for a (%lld, %lld) operand", (long long)b_rows,
              (long long)b_cols);
  DALLE_CHECK(C || M == 0 || N == 0, op, "C is null for a (%lld, %lld) result", (long long)M, (long long)N);
}

Problem make_problem(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
                     const void* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  return Problem{ta, tb, M, N, K, alpha, beta, static_cast<const char*>(A), lda, static_cast<const char*>(B), ldb,
                 C, ldc};
}

// ---------------------------------------------------------------------------------------------------------------
// Shared op(A) over wide row-major B (a 1x1 convolution: W (Co, C) @ x[b] (C, HW) for every image b): the path of
// sgemm_batched_shared_a, which conv.cc calls. (Chosen automatically for every batched GEMM with a shared A, it made
// the prior's x @ W products, which matmul runs as W^T-shared batches of 288 columns, 13-27% slower: it stays opt-in.)
//
// The blocked path packs each B in NC-wide panels (1.5 MiB at K = 128) that spill to L3, streams the panel once per
// MR rows of A, and packs op(A) again for every problem of the batch. Here op(A) is packed once for the batch, and
// each B is read once, in strips packed into L2, each consumed by every MR sliver of A before the next strip.
// Measured on the dVAE's 1x1 convolutions (forward and dx, 2 threads, rounds interleaved): 256->1024 at 16 px
// 6.9 / 7.4 -> 6.4 / 6.5 ms, 1024->128 at 16 px 4.0 / 3.6 -> 3.7 / 3.3 ms, 32 and 64 px shapes 0-3% faster. At
// M <= kSmallM the small-M path (B streamed unpacked) stays faster.
// Each element of C is one micro-kernel call over all of K (K <= KC, as one pc block of the blocked path), so the
// result never depends on how strips are split between threads.

// Strips of about 256 KiB of packed B (at least one sliver), which stay in L2 (1 MiB) while every A sliver passes over
// them; each source row is read as a long run. Measured against 24, 96 and 1024 KiB with native/dev/conv (rounds
// interleaved): 24 KiB strips read B as 192-byte pieces of 128 rows 16 KiB apart and ran 7-20% slower at 64 px.
constexpr int64_t kStripBytes = 256 * 1024;

// Prefetches, into L2, the rows of B a thread will pack for its next strip, a few lines before each micro-kernel call
// of the current strip, so that reading B from memory overlaps the arithmetic instead of stalling the next pack.
struct StripPrefetch {
  struct Region {
    const char* base = nullptr;
    int64_t row_bytes = 0, ld_bytes = 0, rows = 0, r = 0, off = 0, per_call = 0;
    void start(const float* src, int64_t ld, int64_t ns, int64_t n_rows, int64_t calls) {
      base = reinterpret_cast<const char*>(src);
      row_bytes = ns * (int64_t)sizeof(float), ld_bytes = ld * (int64_t)sizeof(float), rows = n_rows, r = 0, off = 0;
      per_call = ceil_div(ceil_div(row_bytes, 64) * n_rows, calls > 0 ? calls : 1);
    }
    template <int RW>
    void step() {
      for (int64_t i = 0; i < per_call && r < rows; i++) {
        __builtin_prefetch(base + r * ld_bytes + off, RW, 2);
        off += 64;
        if (off >= row_bytes) off = 0, r++;
      }
    }
  } b, c;
  void start(const float* src, int64_t ld, int64_t ns, int64_t K, const float* dst, int64_t ldc, int64_t M, int64_t calls) {
    b.start(src, ld, ns, K, calls);
    c.start(dst, ldc, ns, M, calls);
  }
  void stop() { b.rows = 0, c.rows = 0; }
  void step() {
    b.step<0>();
    c.step<1>();
  }
};

bool use_strips(const Impl& im, bool tb, int64_t sa, int64_t M, int64_t N, int64_t K, float alpha) {
  return im.in_size == 4 && im.packed_size == 4 && !tb && sa == 0 && K > 0 && alpha != 0.0f && K <= g_blocking.kc &&
         N >= 2 * im.nr && M > kSmallM;
}

void batched_strips(const Impl& im, int64_t batch, bool ta, int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, const float* B, int64_t ldb, int64_t sb, float beta, float* C,
                    int64_t ldc, int64_t sc, const StripExtras& ex = StripExtras()) {
  const int64_t mr = im.mr, nr = im.nr, slivers_m = ceil_div(M, mr);
  // op(A), packed once: sliver s (mr rows) at apack + s * mr * K.
  const size_t abytes = (size_t)(slivers_m * mr * K) * sizeof(float) + 64;
  float* apack = static_cast<float*>(cache_alloc(abytes));
  parallel_for(slivers_m, 1, [&](int64_t s0, int64_t s1) {
    const int64_t r0 = s0 * mr, rows = min64(s1 * mr, M) - r0;
    // op(A)(m, k) = A[m * lda + k], or A[k * lda + m] (kmajor) when transposed
    im.pack(ta ? A + r0 : A + r0 * lda, lda, ta ? 1 : 0, rows, K, mr, apack + s0 * mr * K);
  });
  int64_t per_strip = kStripBytes / (nr * K * (int64_t)sizeof(float));
  if (per_strip < 1) per_strip = 1;
  const int64_t ns_max = min64(per_strip * nr, round_up(N, nr));
  const int64_t strips = ceil_div(N, ns_max), items = batch * strips;
  auto run = [&](int64_t i0, int64_t i1) {
    float* bpack = static_cast<float*>(tl_bbuf.get((size_t)(ns_max * K) * sizeof(float) + 64));
    StripPrefetch next;
    for (int64_t it = i0; it < i1; it++) {
      const int64_t b = it / strips, n0 = (it % strips) * ns_max, ns = min64(ns_max, N - n0);
      im.pack(B + b * sb + n0, ldb, 1, ns, K, nr, bpack);  // op(B)^T (n, k) = B[k * ldb + n]
      if (ex.relu_b) {  // ReLU of the packed strip, in L2: the same values a ReLU copy of B would give
        const int64_t n_packed = round_up(ns, nr) * K;
        for (int64_t i = 0; i < n_packed; i++) bpack[i] = bpack[i] > 0.0f ? bpack[i] : 0.0f;
      }
      if (it + 1 < i1) {
        const int64_t nb = (it + 1) / strips, nn0 = ((it + 1) % strips) * ns_max;
        next.start(B + nb * sb + nn0, ldb, min64(ns_max, N - nn0), K, C + nb * sc + nn0, ldc, M,
                   slivers_m * ceil_div(ns, nr));
      } else {
        next.stop();
      }
      float* cb = C + b * sc + n0;
      for (int64_t s = 0; s < slivers_m; s++) {
        const float* as = apack + s * mr * K;
        const int64_t rows = min64(mr, M - s * mr);
        for (int64_t j = 0; j < ns; j += nr) {
          next.step();
          im.ukernel(K, as, bpack + j * K, cb + s * mr * ldc + j, ldc, alpha, beta, rows, min64(nr, ns - j));
        }
      }
      if (ex.bias || ex.gate) {  // the strip's C, just written: bias, then the gate
        const float* gb = ex.gate ? ex.gate + b * sc + n0 : nullptr;
        for (int64_t m = 0; m < M; m++) {
          float* c = cb + m * ldc;
          if (ex.bias) {
            const float bv = ex.bias[m];
            for (int64_t j = 0; j < ns; j++) c[j] += bv;
          }
          if (gb) {
            const float* g = gb + m * ldc;
            for (int64_t j = 0; j < ns; j++) c[j] = g[j] > 0.0f ? c[j] : 0.0f;
          }
        }
      }
    }
  };
  const double macs = (double)batch * M * N * K;
  if (num_threads() <= 1 || macs < kParallelMinMacs) {
    run(0, items);
  } else {
    parallel_run([&](int t, int T) {
      int64_t i0, i1;
      split_range(items, 1, T, t, &i0, &i1);
      run(i0, i1);
    });
  }
  cache_free(apack, abytes);
}

// Checks a batched call's arguments (throws naming the shapes); returns whether there is anything to compute.
bool check_batched(const char* op, int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A,
                   int64_t lda, int64_t sa, const void* B, int64_t ldb, int64_t sb, const float* C, int64_t ldc,
                   int64_t sc) {
  DALLE_CHECK(batch >= 0, op, "negative batch %lld", (long long)batch);
  check_args(op, ta, tb, M, N, K, A, lda, B, ldb, C, ldc, batch > 0);
  DALLE_CHECK(sa >= 0 && sb >= 0 && sc >= 0, op, "negative batch stride (A %lld, B %lld, C %lld)", (long long)sa,
              (long long)sb, (long long)sc);
  if (batch > 1 && M > 0 && N > 0) {
    DALLE_CHECK(sc >= (M - 1) * ldc + N, op,
                "stride of C (%lld) makes the (%lld, %lld) results of the batch overlap (ldc %lld)", (long long)sc,
                (long long)M, (long long)N, (long long)ldc);
  }
  return batch > 0 && M > 0 && N > 0;
}

void batched(const char* op, bool bf16, int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
             float alpha, const void* A, int64_t lda, int64_t sa, const void* B, int64_t ldb, int64_t sb, float beta,
             float* C, int64_t ldc, int64_t sc) {
  if (!check_batched(op, batch, ta, tb, M, N, K, A, lda, sa, B, ldb, sb, C, ldc, sc)) return;
  const Impl im = select_impl(bf16);
  const int es = im.in_size;
  auto prob = [&](int64_t i) {
    return make_problem(ta, tb, M, N, K, alpha, static_cast<const char*>(A) + i * sa * es, lda,
                        static_cast<const char*>(B) + i * sb * es, ldb, beta, C + i * sc, ldc);
  };
  const int T = num_threads();
  const double macs = (double)M * N * (K ? K : 1);
  // Whole GEMMs per thread when that balances (and each is small); otherwise one threaded GEMM after another.
  if (T > 1 && batch >= T && (batch % T == 0 || batch >= 4 * T || macs * T < kParallelMinMacs * 8)) {
    parallel_for(batch, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) run_part(im, prob(i), 0, 1);
    });
  } else {
    for (int64_t i = 0; i < batch; i++) run_problem(im, prob(i));
  }
}

}  // namespace

void gemm_set_blocking(int64_t kc, int64_t mc, int64_t nc) {
  const Blocking d;
  g_blocking.kc = kc > 0 ? round_up(kc, 8) : d.kc;
  g_blocking.mc = mc > 0 ? mc : d.mc;
  g_blocking.nc = nc > 0 ? nc : d.nc;
}

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_args("sgemm", trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
  run_problem(select_impl(false), make_problem(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc));
}

void sgemm_batched(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c) {
  batched("sgemmBatched", false, batch, trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta,
          C, ldc, stride_c);
}

void sgemm_batched_shared_a(int64_t batch, bool trans_a, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                            int64_t lda, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                            int64_t ldc, int64_t stride_c) {
  const char* op = "sgemmBatchedSharedA";
  const Impl im = select_impl(false);
  if (use_strips(im, false, 0, M, N, K, alpha)) {
    if (!check_batched(op, batch, trans_a, false, M, N, K, A, lda, 0, B, ldb, stride_b, C, ldc, stride_c)) return;
    batched_strips(im, batch, trans_a, M, N, K, alpha, A, lda, B, ldb, stride_b, beta, C, ldc, stride_c);
  } else {
    batched(op, false, batch, trans_a, false, M, N, K, alpha, A, lda, 0, B, ldb, stride_b, beta, C, ldc, stride_c);
  }
}

bool sgemm_batched_shared_a_strips(int64_t batch, bool trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                                   const float* A, int64_t lda, const float* B, int64_t ldb, int64_t stride_b,
                                   float beta, float* C, int64_t ldc, int64_t stride_c, const StripExtras& extras) {
  const Impl im = select_impl(false);
  if (!use_strips(im, false, 0, M, N, K, alpha)) return false;
  if (check_batched("sgemmBatchedSharedA", batch, trans_a, false, M, N, K, A, lda, 0, B, ldb, stride_b, C, ldc,
                    stride_c)) {
    batched_strips(im, batch, trans_a, M, N, K, alpha, A, lda, B, ldb, stride_b, beta, C, ldc, stride_c, extras);
  }
  return true;
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_args("gemmBf16", trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
  run_problem(select_impl(true), make_problem(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc));
}

// ---------------------------------------------------------------------------------------------------------------
// JavaScript bindings

#ifndef DALLE_GEMM_STANDALONE
namespace {

bool arg_flag(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i < info.Length() && info[i].IsNumber()) return arg_i64(info, i, op) != 0;
  return arg_bool(info, i, op);
}

// sgemm(transA, transB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc)
template <class T, void (*Fn)(bool, bool, int64_t, int64_t, int64_t, float, const T*, int64_t, const T*, int64_t,
                              float, float*, int64_t)>
Napi::Value GemmExport(const Napi::CallbackInfo& info, const char* op) {
  bool ta = arg_flag(info, 0, op), tb = arg_flag(info, 1, op);
  int64_t M = arg_i64(info, 2, op), N = arg_i64(info, 3, op), K = arg_i64(info, 4, op);
  float alpha = (float)arg_f64(info, 5, op);
  const T* a = arg_data<const T>(info, 6, op);
  int64_t lda = arg_i64(info, 7, op);
  const T* b = arg_data<const T>(info, 8, op);
  int64_t ldb = arg_i64(info, 9, op);
  float beta = (float)arg_f64(info, 10, op);
  float* c = arg_data<float>(info, 11, op);
  int64_t ldc = arg_i64(info, 12, op);
  Fn(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
  return info.Env().Undefined();
}

Napi::Value Sgemm(const Napi::CallbackInfo& info) { return GemmExport<float, &sgemm>(info, "sgemm"); }
Napi::Value GemmBf16(const Napi::CallbackInfo& info) { return GemmExport<uint16_t, &gemm_bf16>(info, "gemmBf16"); }
Napi::Value SgemmReference(const Napi::CallbackInfo& info) {
  return GemmExport<float, &sgemm_reference>(info, "sgemmReference");
}
Napi::Value GemmBf16Reference(const Napi::CallbackInfo& info) {
  return GemmExport<uint16_t, &gemm_bf16_reference>(info, "gemmBf16Reference");
}

// sgemmBatched(batch, transA, transB, M, N, K, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC)
Napi::Value SgemmBatched(const Napi::CallbackInfo& info) {
  const char* op = "sgemmBatched";
  int64_t batch = arg_i64(info, 0, op);
  bool ta = arg_flag(info, 1, op), tb = arg_flag(info, 2, op);
  int64_t M = arg_i64(info, 3, op), N = arg_i64(info, 4, op), K = arg_i64(info, 5, op);
  float alpha = (float)arg_f64(info, 6, op);
  const float* a = arg_data<const float>(info, 7, op);
  int64_t lda = arg_i64(info, 8, op), sa = arg_i64(info, 9, op);
  const float* b = arg_data<const float>(info, 10, op);
  int64_t ldb = arg_i64(info, 11, op), sb = arg_i64(info, 12, op);
  float beta = (float)arg_f64(info, 13, op);
  float* c = arg_data<float>(info, 14, op);
  int64_t ldc = arg_i64(info, 15, op), sc = arg_i64(info, 16, op);
  sgemm_batched(batch, ta, tb, M, N, K, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc);
  return info.Env().Undefined();
}

// sgemmBatchedSharedA(batch, transA, M, N, K, alpha, a, lda, b, ldb, strideB, beta, c, ldc, strideC): what the 1x1
// convolutions call (A shared by the batch, B row-major), exported for its tests.
Napi::Value SgemmBatchedSharedA(const Napi::CallbackInfo& info) {
  const char* op = "sgemmBatchedSharedA";
  int64_t batch = arg_i64(info, 0, op);
  bool ta = arg_flag(info, 1, op);
  int64_t M = arg_i64(info, 2, op), N = arg_i64(info, 3, op), K = arg_i64(info, 4, op);
  float alpha = (float)arg_f64(info, 5, op);
  const float* a = arg_data<const float>(info, 6, op);
  int64_t lda = arg_i64(info, 7, op);
  const float* b = arg_data<const float>(info, 8, op);
  int64_t ldb = arg_i64(info, 9, op), sb = arg_i64(info, 10, op);
  float beta = (float)arg_f64(info, 11, op);
  float* c = arg_data<float>(info, 12, op);
  int64_t ldc = arg_i64(info, 13, op), sc = arg_i64(info, 14, op);
  sgemm_batched_shared_a(batch, ta, M, N, K, alpha, a, lda, b, ldb, sb, beta, c, ldc, sc);
  return info.Env().Undefined();
}

// gemmSetBlocking(kc, mc, nc): block sizes for tuning (0 restores the default). Not synchronized with GEMMs running
// on other threads: call it between benchmark runs only.
Napi::Value GemmSetBlocking(const Napi::CallbackInfo& info) {
  gemm_set_blocking(arg_i64(info, 0, "gemmSetBlocking"), arg_i64(info, 1, "gemmSetBlocking"),
                    arg_i64(info, 2, "gemmSetBlocking"));
  return info.Env().Undefined();
}

DALLE_EXPORT("sgemm", Sgemm);
DALLE_EXPORT("sgemmBatched", SgemmBatched);
DALLE_EXPORT("sgemmBatchedSharedA", SgemmBatchedSharedA);
DALLE_EXPORT("gemmBf16", GemmBf16);
DALLE_EXPORT("sgemmReference", SgemmReference);
DALLE_EXPORT("gemmBf16Reference", GemmBf16Reference);
DALLE_EXPORT("gemmSetBlocking", GemmSetBlocking);

}  // namespace
#endif

}  // namespace dalle
