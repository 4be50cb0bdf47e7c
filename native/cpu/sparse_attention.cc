// Sparse attention for the prior's masks (row, column, conv; src/core/models/prior/masks.ts), forward and backward,
// computing only key tiles that hold allowed positions, never the full (T, T) product.
// Keys: B = batch, H = heads, BH = B * H, Tt = text positions, W = image grid side, N = W * W image positions,
// T = Tt + N, D = query/key width, Dv = value width, h = (k - 1) / 2 for the conv kernel k.
//   q (B, H, T, D), k (B, H, T, D), v (B, H, T, Dv) -> out (B, H, T, Dv); lse (B, H, T) saved for the backward.
//   allowed(i, j): j <= i and (j < Tt (text key), or, both image (a = i - Tt, b = j - Tt on the W x W grid):
//     row: a - W <= b; column: b % W == a % W; conv: |row(a) - row(b)| <= h and |col(a) - col(b)| <= h).
//
// The plan (a function of the mask only). Queries are cut into blocks; each block is a set of query positions
// {start + r * stride, r < n} and a short list of key segments {start + e * stride, e < n}, each segment read as a
// GEMM operand with row stride `stride` rows (so strided keys are never gathered):
//   text queries: blocks of 64; one segment, keys [0, end of block) (causal).
//   row:    blocks of 32 image positions [a0, a1) (16 on grids up to 16 wide); segments: the text, the band
//           [a0 - W, a1).
//   column: blocks of 32 rows of one image column (stride W); segments: the text, the column's rows [0, r1)
//           (stride W): the paper's "transposed image states" without transposing anything.
//   conv:   blocks of 32 columns of one image row r; segments: the text, and for each row r' in [r - h, r] the
//           columns [c0 - h, c1 + h) (row r: [c0 - h, c1)).
// Consecutive segments that form one strided range of keys (the conv rows when a block spans the whole image row;
// the text and the first image keys) are one "run", computed by one GEMM.
// Within a segment the keys one query may see form one contiguous run of elements (seg_interval, kept in the plan
// per block and query), so masking compares a key's element index with one interval per segment.
// The forward runs (b, h, query block) tasks: S^T = scale k q^T per run into a transposed (width, lanes) tile (one
// row per key, the block's queries padded to a multiple of 16 lanes; sparse_attention_tiles.h), the softmax down the
// tile over the allowed intervals, out = sum over runs of P v. The backward runs one task per (b, h): for each
// block in plan order it recomputes P from the saved log-sum-exp and dS into two tiles in scratch, writes the block's
// dq, and accumulates dk and dv of the head's keys over the block's runs. Every product is a "broadcast GEMM" that
// reads keys, values and the tiles in place (no packing, no call per row): at the prior's head width 32 and blocks of
// 16..32 queries, packing and per-row calls cost more than the arithmetic. Every output element is written by one task
// in a fixed order of sums: the same bits for any thread count.
// q, k, v and dO may be strided in (b, h, t) with a contiguous last dimension; out, lse and gradients are contiguous.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "allocator.h"
#include "napi_util.h"
#include "sparse_attention_tiles.h"
#include "threadpool.h"

namespace dalle {

namespace {

enum MaskKind { kRow = 0, kColumn = 1, kConv = 2 };

// Query block sizes (tunable for benchmarks through sparseAttentionSetBlocks; results do not depend on them).
int64_t kTextBlock = 64;    // text queries a block
// Row mask: image positions a block; 0 = one image row (16) on grids up to 16 wide, else 32. At prior-emoji (32 text +
// 16x16) blocks of 16 compute 64 keys a query (77% allowed) against 80 (61%) with 32: 5-10% faster (1 thread, busy
// machine); at 256 text + 32x32 blocks of 32 measured faster.
int64_t kRowBlock = 0;
int64_t kColumnBlock = 32;  // column mask: rows of one column a block
int64_t kConvBlock = 32;    // conv mask: columns of one row a block
struct MaskSpec {
  int64_t kind, Tt, W, k;
  int64_t T() const { return Tt + W * W; }
};

// Positions {start + e * stride : e < n}; off = column offset of the segment inside its block's tile.
struct Seg {
  int64_t start, n, stride, off;
};
// A run: consecutive segments of a block that are one strided range of keys (and adjacent in the tile), computed by
// one GEMM (e.g. the conv mask's rows r - h .. r when a block spans the whole image row).
struct Run {
  int64_t start, n, stride, off;
};
struct QBlock {
  int64_t start, n, stride;  // query positions
  int64_t seg0, seg1;        // segments [seg0, seg1) of Plan::segs
  int64_t run0, run1;        // runs [run0, run1) of Plan::runs
  int64_t width;             // keys in the tile: sum of the segments' n
  int64_t lanes;             // n rounded up to 16: the tile's row length (sparse_attention_tiles.h)
  int64_t iv_off;            // offset of its (segments, lanes) intervals in Plan::lo and Plan::hi
};
struct Plan {
  MaskSpec spec;
  std::vector<QBlock> blocks;
  std::vector<Seg> segs;
  std::vector<SaSegment> tile_segs;  // segs as the tile kernels see them (tile rows, element count)
  std::vector<Run> runs;
  std::vector<int32_t> lo, hi;  // per block (segments, lanes): each query's allowed elements [lo, hi) of a segment
  int64_t max_tile = 0;   // floats of the largest tile
  int64_t max_lanes = 0;  // most lanes of a block
  int64_t max_segs = 0;   // most segments in a block
  int64_t computed = 0;   // (query, key) pairs in the tiles: the work done, against the allowed count
};

int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// The elements [*lo, *hi) of segment s that query position i may attend to (allowed keys within one segment are one
// contiguous run of elements for every mask kind; empty: lo = hi = 0).
inline void seg_interval(const MaskSpec& sp, int64_t i, const Seg& s, int64_t* lo, int64_t* hi) {
  int64_t a = 0, b = s.n;
  if (s.start < sp.Tt) {  // text keys (stride 1): every j <= i
    b = min64(b, i - s.start + 1);
  } else if (i < sp.Tt) {  // a text query sees no image key
    b = 0;
  } else {
    const int64_t W = sp.W, qa = i - sp.Tt, r = qa / W, c = qa % W, kb = s.start - sp.Tt;
    if (sp.kind == kRow) {  // stride 1: image keys [qa - W, qa]
      a = qa - W - kb;
      b = min64(b, qa - kb + 1);
    } else if (sp.kind == kColumn) {  // stride W: rows r0.. of column c2; same column, rows <= r
      const int64_t c2 = kb % W, r0 = kb / W;
      if (c2 != c) b = 0;
      else b = min64(b, r - r0 + 1);
    } else {  // conv, stride 1 within one image row r2: columns [c - h, c + h], and <= c in row r
      const int64_t h = (sp.k - 1) / 2, r2 = kb / W, c2 = kb % W;
      if (r2 > r || r - r2 > h) {
        b = 0;
      } else {
        a = c - h - c2;
        b = min64(b, (r2 == r ? c : c + h) - c2 + 1);
      }
    }
  }
  if (a < 0) a = 0;
  if (a >= b) a = b = 0;
  *lo = a, *hi = b;
}

void add_block(Plan& p, int64_t start, int64_t n, int64_t stride, const std::vector<Seg>& segs) {
  if (n <= 0) return;
  const int64_t lanes = (n + 15) / 16 * 16;
  QBlock b{start, n, stride, (int64_t)p.segs.size(), 0, (int64_t)p.runs.size(), 0, 0, lanes, 0};
  for (const Seg& s : segs) {
    if (s.n <= 0) continue;
    p.segs.push_back({s.start, s.n, s.stride, b.width});
    p.tile_segs.push_back({b.width, s.n});
    Run* last = p.runs.size() > (size_t)b.run0 ? &p.runs.back() : nullptr;
    if (last && last->stride == s.stride && last->start + last->n * last->stride == s.start) {
      last->n += s.n;
    } else {
      p.runs.push_back({s.start, s.n, s.stride, b.width});
    }
    b.width += s.n;
  }
  b.seg1 = (int64_t)p.segs.size();
  b.run1 = (int64_t)p.runs.size();
  p.computed += n * b.width;
  if (lanes * b.width > p.max_tile) p.max_tile = lanes * b.width;
  if (lanes > p.max_lanes) p.max_lanes = lanes;
  if (b.seg1 - b.seg0 > p.max_segs) p.max_segs = b.seg1 - b.seg0;
  // The intervals: padding lanes r >= n allow nothing.
  b.iv_off = (int64_t)p.lo.size();
  for (int64_t s = b.seg0; s < b.seg1; s++)
    for (int64_t r = 0; r < lanes; r++) {
      int64_t lo = 0, hi = 0;
      if (r < n) seg_interval(p.spec, start + r * stride, p.segs[s], &lo, &hi);
      p.lo.push_back((int32_t)lo);
      p.hi.push_back((int32_t)hi);
    }
  p.blocks.push_back(b);
}

Plan make_plan(const MaskSpec& sp) {
  Plan p;
  p.spec = sp;
  const int64_t Tt = sp.Tt, W = sp.W, N = W * W;
  for (int64_t i0 = 0; i0 < Tt; i0 += kTextBlock) {
    const int64_t i1 = min64(Tt, i0 + kTextBlock);
    add_block(p, i0, i1 - i0, 1, {{0, i1, 1, 0}});
  }
  const Seg text{0, Tt, 1, 0};
  if (sp.kind == kRow) {
    const int64_t rb = kRowBlock > 0 ? kRowBlock : W <= 16 ? 16 : 32;
    for (int64_t a0 = 0; a0 < N; a0 += rb) {
      const int64_t a1 = min64(N, a0 + rb), b0 = max64(0, a0 - W);
      add_block(p, Tt + a0, a1 - a0, 1, {text, {Tt + b0, a1 - b0, 1, 0}});
    }
  } else if (sp.kind == kColumn) {
    for (int64_t c = 0; c < W; c++)
      for (int64_t r0 = 0; r0 < W; r0 += kColumnBlock) {
        const int64_t r1 = min64(W, r0 + kColumnBlock);
        add_block(p, Tt + r0 * W + c, r1 - r0, W, {text, {Tt + c, r1, W, 0}});
      }
  } else {
    const int64_t h = (sp.k - 1) / 2;
    for (int64_t r = 0; r < W; r++)
      for (int64_t c0 = 0; c0 < W; c0 += kConvBlock) {
        const int64_t c1 = min64(W, c0 + kConvBlock), lo = max64(0, c0 - h);
        std::vector<Seg> segs{text};
        for (int64_t r2 = max64(0, r - h); r2 <= r; r2++) {
          const int64_t hi = r2 == r ? c1 : min64(W, c1 + h);
          segs.push_back({Tt + r2 * W + lo, hi - lo, 1, 0});
        }
        add_block(p, Tt + r * W + c0, c1 - c0, 1, segs);
      }
  }
  return p;
}

struct Strides {
  int64_t b, h, t;
};

Strides arg_strides(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t width) {
  std::vector<int64_t> s = arg_i64_array(info, i, op);
  DALLE_CHECK(s.size() == 3, op, "%s needs 3 strides (batch, head, time), got %zu", name, s.size());
  DALLE_CHECK(s[2] >= width, op, "%s: row stride %lld is below the row width %lld", name, (long long)s[2],
              (long long)width);
  return {s[0], s[1], s[2]};
}

MaskSpec read_spec(const Napi::CallbackInfo& info, size_t i, const char* op) {
  MaskSpec sp{arg_i64(info, i, op), arg_i64(info, i + 1, op), arg_i64(info, i + 2, op), arg_i64(info, i + 3, op)};
  DALLE_CHECK(sp.kind >= 0 && sp.kind <= 2, op, "mask kind %lld is not 0 (row), 1 (column) or 2 (conv)",
              (long long)sp.kind);
  DALLE_CHECK(sp.Tt >= 0 && sp.W >= 1 && sp.T() < (int64_t(1) << 31), op, "bad mask sizes: text %lld, grid side %lld",
              (long long)sp.Tt, (long long)sp.W);
  DALLE_CHECK(sp.kind != kConv || (sp.k >= 1 && sp.k % 2 == 1), op, "conv kernel %lld is not odd and >= 1",
              (long long)sp.k);
  return sp;
}

struct Dims {
  int64_t B, H, T, D, Dv;
  float scale;
};

Dims read_dims(const Napi::CallbackInfo& info, size_t i, const char* op, const MaskSpec& sp) {
  Dims d{arg_i64(info, i, op), arg_i64(info, i + 1, op), sp.T(), arg_i64(info, i + 2, op), arg_i64(info, i + 3, op),
         (float)arg_f64(info, i + 4, op)};
  DALLE_CHECK(d.B >= 0 && d.H >= 0 && d.D >= 1 && d.Dv >= 1, op, "bad sizes B=%lld H=%lld D=%lld Dv=%lld",
              (long long)d.B, (long long)d.H, (long long)d.D, (long long)d.Dv);
  return d;
}

// Zeroes the rows {base + r * ld : r < n} of `width` floats.
inline void zero_rows(float* base, int64_t n, int64_t ld, int64_t width) {
  for (int64_t r = 0; r < n; r++) memset(base + r * ld, 0, width * sizeof(float));
}

// The block's intervals for the backward: the plan's, or where a query's forward saw no key (lse = -inf; not for
// these masks, where a query sees itself), a copy in lo / hi (scratch, (segments, lanes)) where its lane allows none
// (it passes no gradient).
void backward_intervals(const Plan& plan, const QBlock& blk, const float* lse, int32_t* lo, int32_t* hi,
                        const int32_t** lo_out, const int32_t** hi_out) {
  *lo_out = plan.lo.data() + blk.iv_off, *hi_out = plan.hi.data() + blk.iv_off;
  bool empty = false;
  for (int64_t r = 0; r < blk.n; r++) empty |= lse[blk.start + r * blk.stride] == -INFINITY;
  if (!empty) return;
  const int64_t L = blk.lanes, n = (blk.seg1 - blk.seg0) * L;
  memcpy(lo, *lo_out, n * sizeof(int32_t));
  memcpy(hi, *hi_out, n * sizeof(int32_t));
  for (int64_t s = 0; s < blk.seg1 - blk.seg0; s++)
    for (int64_t r = 0; r < blk.n; r++)
      if (lse[blk.start + r * blk.stride] == -INFINITY) lo[s * L + r] = hi[s * L + r] = 0;
  *lo_out = lo, *hi_out = hi;
}

// Prefetches each 64-byte line of [p, p + bytes) once into L2, for reading or writing. x86 uses inline assembly:
// GCC 12 at -O2 / -O3 deleted every __builtin_prefetch of this file as dead code (none was left in the binary).
inline void prefetch_lines(const char* p, int64_t bytes, bool write) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63);
  const uintptr_t last = (reinterpret_cast<uintptr_t>(p) + bytes - 1) & ~uintptr_t(63);
  for (uintptr_t a = first; a <= last; a += 64) {
    const char* line = reinterpret_cast<const char*>(a);
#if defined(__x86_64__) || defined(__i386__)
    (void)write;  // prefetchw needs PRFCHW; a read prefetch brings the line all the same
    asm volatile("prefetcht1 %0" : : "m"(*line));
#else
    if (write) __builtin_prefetch(line, 1, 2);
    else __builtin_prefetch(line, 0, 2);
#endif
  }
}

// An operand of (b, h, t) rows: base address, strides, and whether the kernel writes it (prefetched for writing).
struct Rows {
  const float* base;
  Strides st;
  int64_t width;
  bool write;
};

// Prefetches slice `slice` of `slices` of head bh's rows of each operand into L2, a slice per block task of the head
// before it. Once B * H * T * D is past the caches the kernels otherwise wait on memory a good part of their time
// (prior-emoji, B = 8, 1 thread, a busy machine: forward 1.9 -> 1.6 ms, backward 3.6 -> 3.2 ms; column 1.8 -> 1.3 and
// 3.4 -> 2.6). Only heads of the task's own range: writes prefetched into another core's heads would pull its lines.
void prefetch_head(const Rows* ops, int nops, int64_t H, int64_t T, int64_t bh, int64_t slice, int64_t slices) {
  const int64_t t0 = slice * T / slices, t1 = (slice + 1) * T / slices;
  for (int o = 0; o < nops; o++) {
    const Rows& x = ops[o];
    if (!x.base) continue;
    const char* head = reinterpret_cast<const char*>(x.base + (bh / H) * x.st.b + (bh % H) * x.st.h);
    for (int64_t t = t0; t < t1; t++)
      prefetch_lines(head + t * x.st.t * (int64_t)sizeof(float), x.width * (int64_t)sizeof(float), x.write);
  }
}

// A task's scratch: `tiles` (width, L) tiles (forward: S / P; backward: P and dS), Q^T and dO^T of its block (D, L)
// and (Dv, L), lo and hi (segments, L), and L log-sum-exps. One cache_alloc per task range, a few KB to tens of KB,
// so that a block's tiles stay in L1 / L2; nothing may throw inside a pool thread.
struct Scratch {
  float *tile = nullptr, *tile2 = nullptr, *qt = nullptr, *ot = nullptr, *lse = nullptr;
  int32_t *lo = nullptr, *hi = nullptr;
  void* mem = nullptr;
  size_t bytes = 0;
  bool alloc(const Plan& p, int64_t D, int64_t Dv, int tiles) {
    const int64_t L = p.max_lanes, nt = tiles * p.max_tile;
    const int64_t floats = nt + (D + Dv + 1) * L, ints = 2 * p.max_segs * L;
    bytes = (size_t)(floats + ints) * 4 + 64;
    try {
      mem = cache_alloc(bytes);
    } catch (...) {
      return false;
    }
    float* f = static_cast<float*>(mem);
    tile = f, tile2 = tiles > 1 ? f + p.max_tile : nullptr, qt = f + nt, ot = qt + D * L, lse = ot + Dv * L;
    lo = reinterpret_cast<int32_t*>(lse + L), hi = lo + p.max_segs * L;
    return true;
  }
  ~Scratch() {
    if (mem) cache_free(mem, bytes);
  }
};

// sparseAttentionForward(q, qStrides, k, kStrides, v, vStrides, out, lse, kind, Tt, W, convKernel, B, H, D, Dv, scale)
Napi::Value SparseAttentionForward(const Napi::CallbackInfo& info) {
  const char* op = "sparseAttention";
  const float* q = arg_data<const float>(info, 0, op);
  const float* k = arg_data<const float>(info, 2, op);
  const float* v = arg_data<const float>(info, 4, op);
  float* out = arg_data<float>(info, 6, op);
  float* lse = arg_data<float>(info, 7, op);
  const MaskSpec sp = read_spec(info, 8, op);
  const Dims G = read_dims(info, 12, op, sp);
  const Strides qs = arg_strides(info, 1, op, "q", G.D), ks = arg_strides(info, 3, op, "k", G.D),
                vs = arg_strides(info, 5, op, "v", G.Dv);
  const int64_t BH = G.B * G.H, T = G.T, D = G.D, Dv = G.Dv;
  if (BH == 0) return info.Env().Undefined();
  DALLE_CHECK(q && k && v && out && lse, op, "null address (B=%lld H=%lld T=%lld)", (long long)G.B, (long long)G.H,
              (long long)T);
  const Plan plan = make_plan(sp);
  const SaKernels kern = sa_kernels();
  const int64_t nb = (int64_t)plan.blocks.size();
  const Rows operands[4] = {
      {q, qs, D, false}, {k, ks, D, false}, {v, vs, Dv, false}, {out, {G.H * T * Dv, T * Dv, Dv}, Dv, true}};
  std::atomic<bool> out_of_memory{false};
  parallel_for(BH * nb, 1, [&](int64_t t0, int64_t t1) {
    Scratch w;
    if (!w.alloc(plan, D, Dv, 1)) {
      out_of_memory = true;
      return;
    }
    for (int64_t t = t0; t < t1; t++) {
      const int64_t bh = t / nb, b = bh / G.H, h = bh % G.H;
      if ((bh + 1) * nb < t1) prefetch_head(operands, 4, G.H, T, bh + 1, t % nb, nb);  // this range's heads only
      const QBlock& blk = plan.blocks[t % nb];
      const int64_t R = blk.n, L = blk.lanes;
      const float* kb = k + b * ks.b + h * ks.h;
      const float* vb = v + b * vs.b + h * vs.h;
      float* ob = out + (bh * T + blk.start) * Dv;
      float* lb = lse + bh * T;
      const Run* runs = plan.runs.data() + blk.run0;
      const int64_t nr = blk.run1 - blk.run0;
      // S^T (width, L) = scale K Q^T over the block's key runs, then P in place.
      kern.transpose(q + b * qs.b + h * qs.h + blk.start * qs.t, blk.stride * qs.t, R, D, L, w.qt);
      for (int64_t u = 0; u < nr; u++)
        kern.gemm(runs[u].n, L, D, G.scale, kb + runs[u].start * ks.t, runs[u].stride * ks.t, 1, w.qt, L, 0,
                  w.tile + runs[u].off * L, L);
      kern.softmax_forward(w.tile, L, blk.seg1 - blk.seg0, plan.tile_segs.data() + blk.seg0,
                           plan.lo.data() + blk.iv_off, plan.hi.data() + blk.iv_off, w.lse);
      for (int64_t r = 0; r < R; r++) lb[blk.start + r * blk.stride] = w.lse[r];
      // out (R, Dv) = P V: the tile read transposed (a(r, key) at key * L + r).
      if (nr == 0) zero_rows(ob, R, blk.stride * Dv, Dv);
      for (int64_t u = 0; u < nr; u++)
        kern.gemm(R, Dv, runs[u].n, 1.0f, w.tile + runs[u].off * L, 1, L, vb + runs[u].start * vs.t,
                  runs[u].stride * vs.t, u > 0, ob, blk.stride * Dv);
    }
  });
  DALLE_CHECK(!out_of_memory, op, "out of memory for a task's workspace (B=%lld H=%lld T=%lld)", (long long)G.B,
              (long long)G.H, (long long)T);
  return info.Env().Undefined();
}

// sparseAttentionBackward(q, qStrides, k, kStrides, v, vStrides, dO, dOStrides, lse, dq|null, dk|null, dv|null,
//                         kind, Tt, W, convKernel, B, H, D, Dv, scale)
Napi::Value SparseAttentionBackward(const Napi::CallbackInfo& info) {
  const char* op = "sparseAttention backward";
  const float* q = arg_data<const float>(info, 0, op);
  const float* k = arg_data<const float>(info, 2, op);
  const float* v = arg_data<const float>(info, 4, op);
  const float* dO = arg_data<const float>(info, 6, op);
  const float* lse = arg_data<const float>(info, 8, op);
  float* dq = arg_data<float>(info, 9, op);
  float* dk = arg_data<float>(info, 10, op);
  float* dv = arg_data<float>(info, 11, op);
  const MaskSpec sp = read_spec(info, 12, op);
  const Dims G = read_dims(info, 16, op, sp);
  const Strides qs = arg_strides(info, 1, op, "q", G.D), ks = arg_strides(info, 3, op, "k", G.D),
                vs = arg_strides(info, 5, op, "v", G.Dv), os = arg_strides(info, 7, op, "dOut", G.Dv);
  const int64_t BH = G.B * G.H, T = G.T, D = G.D, Dv = G.Dv;
  if (BH == 0) return info.Env().Undefined();
  DALLE_CHECK(q && k && v && dO && lse, op, "null address (B=%lld H=%lld T=%lld)", (long long)G.B, (long long)G.H,
              (long long)T);
  const Plan plan = make_plan(sp);
  const SaKernels kern = sa_kernels();
  const int64_t nb = (int64_t)plan.blocks.size();
  const Rows operands[7] = {{q, qs, D, false},
                            {k, ks, D, false},
                            {v, vs, Dv, false},
                            {dO, os, Dv, false},
                            {dq, {G.H * T * D, T * D, D}, D, true},
                            {dk, {G.H * T * D, T * D, D}, D, true},
                            {dv, {G.H * T * Dv, T * Dv, Dv}, Dv, true}};
  std::atomic<bool> out_of_memory{false};
  // A task per head: its blocks in plan order, each block's P and dS tiles in scratch, dq of the block, and dk, dv of
  // the head's keys accumulated block after block (a key's sum runs over the blocks in plan order, whatever the
  // thread count). Tiles never leave L1 / L2: a two-phase backward (tiles of a group of heads kept in a workspace,
  // then dk and dv per key group) spent a third of its time re-reading them and two pool dispatches a group.
  parallel_for(BH, 1, [&](int64_t h0, int64_t h1) {
    Scratch w;
    if (!w.alloc(plan, D, Dv, 2)) {
      out_of_memory = true;
      return;
    }
    float* P = w.tile;    // (width, L)
    float* dS = w.tile2;  // (width, L)
    for (int64_t bh = h0; bh < h1; bh++) {
      const int64_t b = bh / G.H, h = bh % G.H;
      const float* qh = q + b * qs.b + h * qs.h;
      const float* kh = k + b * ks.b + h * ks.h;
      const float* vh = v + b * vs.b + h * vs.h;
      const float* oh = dO + b * os.b + h * os.h;
      const float* lb = lse + bh * T;
      if (dk) memset(dk + bh * T * D, 0, T * D * sizeof(float));
      if (dv) memset(dv + bh * T * Dv, 0, T * Dv * sizeof(float));
      for (int64_t bi = 0; bi < nb; bi++) {
        if (bh + 1 < h1) prefetch_head(operands, 7, G.H, T, bh + 1, bi, nb);  // this range's heads only
        const QBlock& blk = plan.blocks[bi];
        const int64_t R = blk.n, L = blk.lanes;
        const Run* runs = plan.runs.data() + blk.run0;
        const int64_t nr = blk.run1 - blk.run0;
        const float* qb = qh + blk.start * qs.t;  // the block's rows of q and dO, row stride blk.stride rows
        const float* ob = oh + blk.start * os.t;
        kern.transpose(qb, blk.stride * qs.t, R, D, L, w.qt);
        kern.transpose(ob, blk.stride * os.t, R, Dv, L, w.ot);
        // S^T = scale K Q^T into P, dP^T = V dO^T into dS.
        for (int64_t u = 0; u < nr; u++) {
          kern.gemm(runs[u].n, L, D, G.scale, kh + runs[u].start * ks.t, runs[u].stride * ks.t, 1, w.qt, L, 0,
                    P + runs[u].off * L, L);
          kern.gemm(runs[u].n, L, Dv, 1.0f, vh + runs[u].start * vs.t, runs[u].stride * vs.t, 1, w.ot, L, 0,
                    dS + runs[u].off * L, L);
        }
        const int32_t *lo, *hi;
        backward_intervals(plan, blk, lb, w.lo, w.hi, &lo, &hi);
        for (int64_t r = 0; r < L; r++) {  // padding lanes and empty rows allow no key: any finite shift
          const float x = r < R ? lb[blk.start + r * blk.stride] : 0.0f;
          w.lse[r] = x == -INFINITY ? 0.0f : x;
        }
        kern.softmax_backward(P, dS, L, blk.seg1 - blk.seg0, plan.tile_segs.data() + blk.seg0, lo, hi, w.lse);
        if (dq) {  // dq (R, D) = scale dS K
          float* dqb = dq + (bh * T + blk.start) * D;
          if (nr == 0) zero_rows(dqb, R, blk.stride * D, D);
          for (int64_t u = 0; u < nr; u++)
            kern.gemm(R, D, runs[u].n, G.scale, dS + runs[u].off * L, 1, L, kh + runs[u].start * ks.t,
                      runs[u].stride * ks.t, u > 0, dqb, blk.stride * D);
        }
        // dv (keys, Dv) += P^T dO and dk (keys, D) += scale dS^T q, over each run's keys: the tile read by key rows.
        for (int64_t u = 0; u < nr; u++) {
          const Run& run = runs[u];
          if (dv)
            kern.gemm(run.n, Dv, R, 1.0f, P + run.off * L, L, 1, ob, blk.stride * os.t, 1,
                      dv + (bh * T + run.start) * Dv, run.stride * Dv);
          if (dk)
            kern.gemm(run.n, D, R, G.scale, dS + run.off * L, L, 1, qb, blk.stride * qs.t, 1,
                      dk + (bh * T + run.start) * D, run.stride * D);
        }
      }
    }
  });
  DALLE_CHECK(!out_of_memory, op, "out of memory for a task's workspace (B=%lld H=%lld T=%lld)", (long long)G.B,
              (long long)G.H, (long long)T);
  return info.Env().Undefined();
}

// sparseAttentionPlan(kind, Tt, W, convKernel, forwardCover, backwardCover) -> { blocks, runs, computedPairs }
// For tests: counts into two (T, T) i32 arrays how often the plan covers each allowed (query, key) pair, through the
// forward's segments and intervals and through the runs the backward accumulates dk and dv over, each run element
// mapped back to its segment (each must be the mask exactly, 0 / 1).
Napi::Value SparseAttentionPlan(const Napi::CallbackInfo& info) {
  const char* op = "sparseAttentionPlan";
  const MaskSpec sp = read_spec(info, 0, op);
  int32_t* fwd = arg_data<int32_t>(info, 4, op);
  int32_t* bwd = arg_data<int32_t>(info, 5, op);
  const Plan plan = make_plan(sp);
  const int64_t T = sp.T();
  DALLE_CHECK(fwd && bwd, op, "null address for the coverage arrays (T=%lld)", (long long)T);
  memset(fwd, 0, T * T * sizeof(int32_t));
  memset(bwd, 0, T * T * sizeof(int32_t));
  for (const QBlock& blk : plan.blocks)
    for (int64_t r = 0; r < blk.n; r++) {
      const int64_t i = blk.start + r * blk.stride;
      for (int64_t s = blk.seg0; s < blk.seg1; s++) {
        const Seg& g = plan.segs[s];
        const int64_t x = blk.iv_off + (s - blk.seg0) * blk.lanes + r;  // the intervals the kernels use
        for (int64_t e = plan.lo[x]; e < plan.hi[x]; e++) fwd[i * T + g.start + e * g.stride]++;
      }
    }
  for (const QBlock& blk : plan.blocks)
    for (int64_t u = blk.run0; u < blk.run1; u++) {
      const Run& run = plan.runs[u];
      for (int64_t r = 0; r < blk.n; r++) {
        const int64_t i = blk.start + r * blk.stride;
        for (int64_t e = 0; e < run.n; e++) {
          const int64_t j = run.start + e * run.stride, col = run.off + e;  // key and tile row
          // The segment holding that tile row must hold that key and allow it for query i.
          for (int64_t si = blk.seg0; si < blk.seg1; si++) {
            const Seg& g = plan.segs[si];
            if (col < g.off || col >= g.off + g.n) continue;
            const int64_t x = blk.iv_off + (si - blk.seg0) * blk.lanes + r, eg = col - g.off;
            if (g.start + eg * g.stride == j && eg >= plan.lo[x] && eg < plan.hi[x]) bwd[i * T + j]++;
          }
        }
      }
    }
  Napi::Object res = Napi::Object::New(info.Env());
  res.Set("blocks", Napi::Number::New(info.Env(), (double)plan.blocks.size()));
  res.Set("runs", Napi::Number::New(info.Env(), (double)plan.runs.size()));
  res.Set("computedPairs", Napi::Number::New(info.Env(), (double)plan.computed));
  return res;
}

// sparseAttentionSetBlocks(text, row, column, conv): query block sizes (0 = keep), for tuning in benchmarks. Returns
// the sizes in effect as [text, row, column, conv] (row 0: chosen by the grid side, see kRowBlock). Not thread-safe
// against a running kernel: call between calls.
Napi::Value SparseAttentionSetBlocks(const Napi::CallbackInfo& info) {
  const char* op = "sparseAttentionSetBlocks";
  int64_t* sizes[4] = {&kTextBlock, &kRowBlock, &kColumnBlock, &kConvBlock};
  for (int i = 0; i < 4; i++) {
    const int64_t v = arg_i64(info, i, op);
    DALLE_CHECK(v >= 0 && v <= 4096, op, "block size %lld is outside 0..4096", (long long)v);
    if (v > 0) *sizes[i] = v;
  }
  Napi::Array out = Napi::Array::New(info.Env(), 4);
  for (int i = 0; i < 4; i++) out.Set((uint32_t)i, Napi::Number::New(info.Env(), (double)*sizes[i]));
  return out;
}

DALLE_EXPORT("sparseAttentionForward", SparseAttentionForward);
DALLE_EXPORT("sparseAttentionSetBlocks", SparseAttentionSetBlocks);
DALLE_EXPORT("sparseAttentionBackward", SparseAttentionBackward);
DALLE_EXPORT("sparseAttentionPlan", SparseAttentionPlan);

}  // namespace
}  // namespace dalle
