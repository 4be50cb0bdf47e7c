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
//   row:    blocks of 32 image positions [a0, a1); segments: the text, the band [a0 - W, a1).
//   column: blocks of 32 rows of one image column (stride W); segments: the text, the column's rows [0, r1)
//           (stride W): the paper's "transposed image states" without transposing anything.
//   conv:   blocks of 32 columns of one image row r; segments: the text, and for each row r' in [r - h, r] the
//           columns [c0 - h, c1 + h) (row r: [c0 - h, c1)).
// Consecutive segments that form one strided range of keys (the conv rows when a block spans the whole image row;
// the text and the first image keys) are one "run", computed by one GEMM.
// Within a segment the keys one query may see form one contiguous run of elements (seg_interval), so masking is
// zeroing outside one interval per segment and the softmax runs over the intervals only.
// The forward runs (b, h, query block) tasks: S = scale q k^T per segment into a (rows, width) tile, softmax over the
// allowed intervals, out = sum over segments of P v (accumulating GEMMs). The backward recomputes P from the saved
// log-sum-exp: phase 1, per (b, h, query block), P and dS tiles into a workspace (their compact layout is the plan's)
// and dq; phase 2, per (b, h, key group) (64 text keys, 64 image positions, or one image column for the column mask),
// dk and dv accumulated over the (block, segment) pieces that touch the group, in plan order. Every output element is
// written by one task in a fixed order of GEMMs: the same bits for any thread count.
// q, k, v and dO may be strided in (b, h, t) with a contiguous last dimension; out, lse and gradients are contiguous.
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "allocator.h"
#include "gemm.h"
#include "napi_util.h"
#include "threadpool.h"

namespace dalle {

// Row kernels (softmax.cc).
float row_max(const float* x, int64_t n);
float row_exp(const float* x, float* y, int64_t n, float shift, float mul);
void row_affine(const float* x, float* y, int64_t n, float s, float c);
float row_dot(const float* a, const float* b, int64_t n);
void row_softmax_bwd(const float* y, const float* g, float* dx, int64_t n, float s);

namespace {

enum MaskKind { kRow = 0, kColumn = 1, kConv = 2 };

// Query block sizes (tunable for benchmarks through sparseAttentionSetBlocks; results do not depend on them).
int64_t kTextBlock = 64;    // text queries a block
int64_t kRowBlock = 32;     // row mask: image positions a block
int64_t kColumnBlock = 32;  // column mask: rows of one column a block
int64_t kConvBlock = 32;    // conv mask: columns of one row a block
constexpr int64_t kKeyGroup = 64;     // backward phase 2: keys a task (contiguous groups)
// Backward: P and dS of this many bytes of heads at once. Small enough that phase 2 reads the tiles phase 1 wrote
// from cache (the conv mask at 256 + 32x32 takes 3.9 MB a head: 2 heads a group); 64 MiB (all 8 heads, 31 MB
// streamed through memory) measured 11% slower for conv and row fwd+bwd on 2 threads, 4 MiB (1 head) slower too.
constexpr int64_t kWorkspaceBytes = int64_t(8) << 20;

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
  int64_t width;             // tile width: sum of the segments' n
  int64_t ws_off;            // offset of the (n, width) tile in a head's backward workspace
};
struct Piece {  // run `run` of block `block`, elements [e0, e1), inside one key group
  int64_t block, run, e0, e1;
};
struct KGroup {
  int64_t start, n, stride;  // key positions
  int64_t p0, p1;            // pieces [p0, p1) of Plan::pieces, in block order
};

struct Plan {
  MaskSpec spec;
  std::vector<QBlock> blocks;
  std::vector<Seg> segs;
  std::vector<Run> runs;
  std::vector<KGroup> groups;
  std::vector<Piece> pieces;
  int64_t ws = 0;         // floats of all tiles of one head
  int64_t max_tile = 0;   // floats of the largest tile
  int64_t max_segs = 0;   // most segments in a block
  int64_t computed = 0;   // (query, key) pairs in the tiles: the work done, against the allowed count
};

void add_block(Plan& p, int64_t start, int64_t n, int64_t stride, const std::vector<Seg>& segs) {
  if (n <= 0) return;
  QBlock b{start, n, stride, (int64_t)p.segs.size(), 0, (int64_t)p.runs.size(), 0, 0, p.ws};
  for (const Seg& s : segs) {
    if (s.n <= 0) continue;
    p.segs.push_back({s.start, s.n, s.stride, b.width});
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
  p.ws += n * b.width;
  p.computed += n * b.width;
  if (n * b.width > p.max_tile) p.max_tile = n * b.width;
  if (b.seg1 - b.seg0 > p.max_segs) p.max_segs = b.seg1 - b.seg0;
  p.blocks.push_back(b);
}

int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

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
    for (int64_t a0 = 0; a0 < N; a0 += kRowBlock) {
      const int64_t a1 = min64(N, a0 + kRowBlock), b0 = max64(0, a0 - W);
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
  // Key groups for the backward's dk / dv: contiguous runs, or (column mask) one image column each.
  for (int64_t j0 = 0; j0 < Tt; j0 += kKeyGroup) p.groups.push_back({j0, min64(kKeyGroup, Tt - j0), 1, 0, 0});
  if (sp.kind == kColumn) {
    for (int64_t c = 0; c < W; c++) p.groups.push_back({Tt + c, W, W, 0, 0});
  } else {
    for (int64_t a0 = 0; a0 < N; a0 += kKeyGroup) p.groups.push_back({Tt + a0, min64(kKeyGroup, N - a0), 1, 0, 0});
  }
  for (KGroup& g : p.groups) {
    g.p0 = (int64_t)p.pieces.size();
    const int64_t g_last = g.start + (g.n - 1) * g.stride;
    for (int64_t bi = 0; bi < (int64_t)p.blocks.size(); bi++) {
      const QBlock& b = p.blocks[bi];
      for (int64_t si = b.run0; si < b.run1; si++) {
        const Run& s = p.runs[si];
        const int64_t s_last = s.start + (s.n - 1) * s.stride;
        if (s_last < g.start || g_last < s.start) continue;  // disjoint spans
        if (s.stride == g.stride && (s.start - g.start) % s.stride != 0) continue;  // other image columns
        // Overlapping spans: the plan only makes segments that run along their groups (same stride and residue).
        DALLE_CHECK(s.stride == g.stride, "sparseAttention",
                    "internal: segment (%lld, %lld, %lld) crosses key group (%lld, %lld, %lld)", (long long)s.start,
                    (long long)s.n, (long long)s.stride, (long long)g.start, (long long)g.n, (long long)g.stride);
        const int64_t e0 = max64(0, (g.start - s.start) / s.stride);
        const int64_t e1 = min64(s.n, (g_last - s.start) / s.stride + 1);
        if (e0 < e1) p.pieces.push_back({bi, si, e0, e1});
      }
    }
    g.p1 = (int64_t)p.pieces.size();
  }
  return p;
}

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
  const int64_t nb = (int64_t)plan.blocks.size();
  // Per task: the S / P tile, then lo and hi of each segment.
  const size_t ws_bytes = (size_t)(plan.max_tile > 0 ? plan.max_tile : 1) * sizeof(float) +
                          (size_t)(2 * plan.max_segs + 2) * sizeof(int64_t);
  std::atomic<bool> out_of_memory{false};
  parallel_for(BH * nb, 1, [&](int64_t t0, int64_t t1) {
    void* mem;
    try {  // nothing may throw inside a pool thread: report after the parallel region
      mem = cache_alloc(ws_bytes);
    } catch (...) {
      out_of_memory = true;
      return;
    }
    float* S = static_cast<float*>(mem);
    int64_t* lo = reinterpret_cast<int64_t*>(static_cast<char*>(mem) + (size_t)plan.max_tile * sizeof(float));
    int64_t* hi = lo + plan.max_segs + 1;
    for (int64_t t = t0; t < t1; t++) {
      const int64_t bh = t / nb, b = bh / G.H, h = bh % G.H;
      const QBlock& blk = plan.blocks[t % nb];
      const int64_t R = blk.n, Wt = blk.width, ns = blk.seg1 - blk.seg0;
      const Seg* segs = plan.segs.data() + blk.seg0;
      const float* qb = q + b * qs.b + h * qs.h + blk.start * qs.t;
      const float* kb = k + b * ks.b + h * ks.h;
      const float* vb = v + b * vs.b + h * vs.h;
      float* ob = out + (bh * T + blk.start) * Dv;
      float* lb = lse + bh * T;
      const Run* runs = plan.runs.data() + blk.run0;
      const int64_t nr = blk.run1 - blk.run0;
      for (int64_t u = 0; u < nr; u++)
        sgemm(false, true, R, runs[u].n, D, G.scale, qb, blk.stride * qs.t, kb + runs[u].start * ks.t,
              runs[u].stride * ks.t, 0.0f, S + runs[u].off, Wt);
      for (int64_t r = 0; r < R; r++) {
        const int64_t i = blk.start + r * blk.stride;
        float* row = S + r * Wt;
        float m = -INFINITY;
        for (int64_t s = 0; s < ns; s++) {
          seg_interval(sp, i, segs[s], &lo[s], &hi[s]);
          if (hi[s] > lo[s]) m = fmaxf(m, row_max(row + segs[s].off + lo[s], hi[s] - lo[s]));
        }
        if (m == -INFINITY) {  // no allowed key (cannot happen for these masks: a query sees itself)
          memset(row, 0, Wt * sizeof(float));
          lb[i] = -INFINITY;
          continue;
        }
        float sum = 0.0f;
        for (int64_t s = 0; s < ns; s++) {
          float* x = row + segs[s].off;
          if (hi[s] > lo[s]) sum += row_exp(x + lo[s], x + lo[s], hi[s] - lo[s], m, 1.0f);
        }
        const float inv = 1.0f / sum;
        for (int64_t s = 0; s < ns; s++) {
          float* x = row + segs[s].off;
          memset(x, 0, lo[s] * sizeof(float));
          if (hi[s] > lo[s]) row_affine(x + lo[s], x + lo[s], hi[s] - lo[s], inv, 0.0f);
          memset(x + hi[s], 0, (segs[s].n - hi[s]) * sizeof(float));
        }
        lb[i] = m + std::log(sum);
      }
      if (ns == 0) zero_rows(ob, R, blk.stride * Dv, Dv);
      for (int64_t u = 0; u < nr; u++)
        sgemm(false, false, R, Dv, runs[u].n, 1.0f, S + runs[u].off, Wt, vb + runs[u].start * vs.t,
              runs[u].stride * vs.t, u == 0 ? 0.0f : 1.0f, ob, blk.stride * Dv);
    }
    cache_free(mem, ws_bytes);
  });
  DALLE_CHECK(!out_of_memory, op, "out of memory for a %zu-byte workspace (B=%lld H=%lld T=%lld)", ws_bytes,
              (long long)G.B, (long long)G.H, (long long)T);
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
  const int64_t nb = (int64_t)plan.blocks.size(), ng = (int64_t)plan.groups.size();
  // Heads per group: the P and dS tiles of a group of heads fit the workspace budget (a function of the shapes only).
  const int64_t per_head = 2 * (plan.ws > 0 ? plan.ws : 1);
  int64_t group = kWorkspaceBytes / (int64_t)(per_head * sizeof(float));
  if (group < 1) group = 1;
  if (group > BH) group = BH;
  const size_t ws_bytes = (size_t)(group * per_head) * sizeof(float);
  float* ws = static_cast<float*>(cache_alloc(ws_bytes));
  const size_t iv_bytes = (size_t)(2 * plan.max_segs + 2) * sizeof(int64_t);
  std::atomic<bool> out_of_memory{false};

  for (int64_t g0 = 0; g0 < BH; g0 += group) {
    const int64_t gn = g0 + group < BH ? group : BH - g0;
    // Phase 1: per (head, query block): the P and dS tiles, and dq.
    parallel_for(gn * nb, 1, [&](int64_t t0, int64_t t1) {
      int64_t* lo;
      try {
        lo = static_cast<int64_t*>(cache_alloc(iv_bytes));
      } catch (...) {
        out_of_memory = true;
        return;
      }
      int64_t* hi = lo + plan.max_segs + 1;
      for (int64_t t = t0; t < t1; t++) {
        const int64_t bh = g0 + t / nb, b = bh / G.H, h = bh % G.H;
        const QBlock& blk = plan.blocks[t % nb];
        const int64_t R = blk.n, Wt = blk.width, ns = blk.seg1 - blk.seg0;
        const Seg* segs = plan.segs.data() + blk.seg0;
        float* P = ws + (bh - g0) * per_head + blk.ws_off;  // (R, Wt)
        float* dS = P + per_head / 2;                        // (R, Wt)
        const float* qb = q + b * qs.b + h * qs.h + blk.start * qs.t;
        const float* ob = dO + b * os.b + h * os.h + blk.start * os.t;
        const float* kb = k + b * ks.b + h * ks.h;
        const float* vb = v + b * vs.b + h * vs.h;
        const float* lb = lse + bh * T;
        const Run* runs = plan.runs.data() + blk.run0;
        const int64_t nr = blk.run1 - blk.run0;
        for (int64_t u = 0; u < nr; u++) {
          sgemm(false, true, R, runs[u].n, D, G.scale, qb, blk.stride * qs.t, kb + runs[u].start * ks.t,
                runs[u].stride * ks.t, 0.0f, P + runs[u].off, Wt);
          sgemm(false, true, R, runs[u].n, Dv, 1.0f, ob, blk.stride * os.t, vb + runs[u].start * vs.t,
                runs[u].stride * vs.t, 0.0f, dS + runs[u].off, Wt);
        }
        for (int64_t r = 0; r < R; r++) {
          const int64_t i = blk.start + r * blk.stride;
          float* pr = P + r * Wt;
          float* dr = dS + r * Wt;
          float di = 0.0f;
          for (int64_t s = 0; s < ns; s++) {
            seg_interval(sp, i, segs[s], &lo[s], &hi[s]);
            if (lb[i] == -INFINITY) lo[s] = hi[s] = 0;  // a row that saw nothing passes no gradient
            float* x = pr + segs[s].off;
            float* y = dr + segs[s].off;
            memset(x, 0, lo[s] * sizeof(float));
            memset(x + hi[s], 0, (segs[s].n - hi[s]) * sizeof(float));
            memset(y, 0, lo[s] * sizeof(float));
            memset(y + hi[s], 0, (segs[s].n - hi[s]) * sizeof(float));
            if (hi[s] > lo[s]) {
              row_exp(x + lo[s], x + lo[s], hi[s] - lo[s], lb[i], 1.0f);  // P = exp(S - lse)
              di += row_dot(x + lo[s], y + lo[s], hi[s] - lo[s]);        // rowsum(dP * P)
            }
          }
          for (int64_t s = 0; s < ns; s++) {
            if (hi[s] <= lo[s]) continue;
            float* x = pr + segs[s].off + lo[s];
            float* y = dr + segs[s].off + lo[s];
            row_softmax_bwd(x, y, y, hi[s] - lo[s], di);  // dS = P * (dP - di)
          }
        }
        if (dq) {
          float* dqb = dq + (bh * T + blk.start) * D;
          if (ns == 0) zero_rows(dqb, R, blk.stride * D, D);
          for (int64_t u = 0; u < nr; u++)
            sgemm(false, false, R, D, runs[u].n, G.scale, dS + runs[u].off, Wt, kb + runs[u].start * ks.t,
                  runs[u].stride * ks.t, u == 0 ? 0.0f : 1.0f, dqb, blk.stride * D);
        }
      }
      cache_free(lo, iv_bytes);
    });
    if (out_of_memory) break;
    if (!dk && !dv) continue;
    // Phase 2: per (head, key group): dv = sum P^T dO and dk = scale sum dS^T q over the pieces touching the group.
    parallel_for(gn * ng, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; t++) {
        const int64_t bh = g0 + t / ng, b = bh / G.H, h = bh % G.H;
        const KGroup& grp = plan.groups[t % ng];
        const float* Ph = ws + (bh - g0) * per_head;
        const float* qh = q + b * qs.b + h * qs.h;
        const float* oh = dO + b * os.b + h * os.h;
        if (dk) zero_rows(dk + (bh * T + grp.start) * D, grp.n, grp.stride * D, D);
        if (dv) zero_rows(dv + (bh * T + grp.start) * Dv, grp.n, grp.stride * Dv, Dv);
        for (int64_t pi = grp.p0; pi < grp.p1; pi++) {
          const Piece& pc = plan.pieces[pi];
          const QBlock& blk = plan.blocks[pc.block];
          const Run& s = plan.runs[pc.run];
          const int64_t M = pc.e1 - pc.e0, first = s.start + pc.e0 * s.stride;
          const float* P = Ph + blk.ws_off + s.off + pc.e0;
          const float* dS = P + per_head / 2;
          if (dv)
            sgemm(true, false, M, Dv, blk.n, 1.0f, P, blk.width, oh + blk.start * os.t, blk.stride * os.t, 1.0f,
                  dv + (bh * T + first) * Dv, s.stride * Dv);
          if (dk)
            sgemm(true, false, M, D, blk.n, G.scale, dS, blk.width, qh + blk.start * qs.t, blk.stride * qs.t, 1.0f,
                  dk + (bh * T + first) * D, s.stride * D);
        }
      }
    });
  }
  cache_free(ws, ws_bytes);
  DALLE_CHECK(!out_of_memory, op, "out of memory for a %zu-byte workspace (B=%lld H=%lld T=%lld)", iv_bytes,
              (long long)G.B, (long long)G.H, (long long)T);
  return info.Env().Undefined();
}

// sparseAttentionPlan(kind, Tt, W, convKernel, forwardCover, backwardCover) -> { blocks, pieces, computedPairs }
// For tests: counts into two (T, T) i32 arrays how often the plan covers each allowed (query, key) pair, through the
// forward's tiles and intervals and through the backward's key-group pieces (each must be the mask exactly, 0 / 1).
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
        int64_t lo, hi;
        seg_interval(sp, i, g, &lo, &hi);
        for (int64_t e = lo; e < hi; e++) fwd[i * T + g.start + e * g.stride]++;
      }
    }
  for (const KGroup& grp : plan.groups)
    for (int64_t pi = grp.p0; pi < grp.p1; pi++) {
      const Piece& pc = plan.pieces[pi];
      const QBlock& blk = plan.blocks[pc.block];
      const Run& u = plan.runs[pc.run];
      for (int64_t r = 0; r < blk.n; r++) {
        const int64_t i = blk.start + r * blk.stride;
        for (int64_t e = pc.e0; e < pc.e1; e++) {
          const int64_t j = u.start + e * u.stride, col = u.off + e;  // key and tile column
          // The segment holding that tile column must hold that key and allow it for query i.
          for (int64_t si = blk.seg0; si < blk.seg1; si++) {
            const Seg& g = plan.segs[si];
            if (col < g.off || col >= g.off + g.n) continue;
            int64_t lo, hi;
            seg_interval(sp, i, g, &lo, &hi);
            const int64_t eg = col - g.off, d = j - grp.start;
            // The piece's key must lie in its group.
            if (g.start + eg * g.stride == j && eg >= lo && eg < hi && d >= 0 && d % grp.stride == 0 &&
                d / grp.stride < grp.n)
              bwd[i * T + j]++;
          }
        }
      }
    }
  Napi::Object res = Napi::Object::New(info.Env());
  res.Set("blocks", Napi::Number::New(info.Env(), (double)plan.blocks.size()));
  res.Set("pieces", Napi::Number::New(info.Env(), (double)plan.pieces.size()));
  res.Set("computedPairs", Napi::Number::New(info.Env(), (double)plan.computed));
  return res;
}

// sparseAttentionSetBlocks(text, row, column, conv): query block sizes (0 = keep), for tuning in benchmarks. Returns
// the sizes in effect as [text, row, column, conv]. Not thread-safe against a running kernel: call between calls.
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
