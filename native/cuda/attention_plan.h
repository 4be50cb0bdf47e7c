// The host-and-device logic of the prior's block-sparse attention (native/cuda/attention.cu): the masks, the order in
// which the kernels walk positions (the layout), and the tile lists. Plain C++17 with DALLE_HD functions, so the same
// code is compiled by nvcc into the CUDA addon and by g++ into the main CPU addon (native/cuda/shared/plan_napi.cc),
// where mocha tests it against an independent TypeScript brute force (test/cuda/plan.test.ts) on every machine.
//
// Masks (the paper's Figure 11; the same definition as src/core/models/prior/masks.ts isAllowed). Key: Tt = text length,
// W = grid side, T = Tt + W * W positions, full-sequence positions 0 .. Tt-1 text, Tt + r * W + c image (r, c).
//   j > i never; j < Tt always (text keys: text queries causally, image queries all);
//   image -> image: row  i - W <= j;  column  col(j) == col(i);  conv  |dr| <= (k-1)/2 and |dc| <= (k-1)/2.
//
// Layout: the kernels walk "layout positions" p in 0 .. T-1 and read / write sequence position seq(p). For row and
// conv seq(p) = p. For the column mask the image part is transposed (the paper computes it "on transposed image
// states", Figure 11c): layout Tt + c * W + r holds sequence Tt + r * W + c. In that layout a column query's image keys
// are one contiguous run [Tt + c * W, p], so its tiles are block-diagonal instead of one partial tile per W keys back
// to the start. The transpose of a square grid is its own inverse, so seq() also maps sequence -> layout.
//
// Tile plan (for tile sizes BQ x BK over layout positions): for each query tile, the key tiles with at least one
// allowed pair, in increasing order, each flagged full (every in-range pair allowed: the kernel skips the mask test)
// or partial. Tiles with no allowed pair are not listed, so they are never loaded. The same pairs are also listed
// by key tile (for the dK / dV pass of the backward).
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__CUDACC__)
#define DALLE_HD __host__ __device__ __forceinline__
#else
#define DALLE_HD inline
#endif

namespace dalle {
namespace attn_plan {

enum MaskKind : int32_t { kRow = 0, kColumn = 1, kConv = 2 };

struct MaskSpec {
  int32_t kind;         // MaskKind
  int32_t text_len;     // Tt >= 0
  int32_t grid;         // W >= 1
  int32_t conv_kernel;  // k, odd, conv only
};

DALLE_HD int32_t seq_len(const MaskSpec& s) { return s.text_len + s.grid * s.grid; }

// Layout position -> sequence position (and, the transpose being an involution, sequence -> layout).
DALLE_HD int32_t layout_to_seq(const MaskSpec& s, int32_t p) {
  if (s.kind != kColumn || p < s.text_len) return p;
  const int32_t a = p - s.text_len;  // a = c * W + r in the transposed layout
  return s.text_len + (a % s.grid) * s.grid + a / s.grid;
}

// Whether sequence position i may attend to sequence position j (0 <= i, j < T).
DALLE_HD bool allowed_seq(const MaskSpec& s, int32_t i, int32_t j) {
  if (j > i) return false;
  if (j < s.text_len) return true;
  const int32_t a = i - s.text_len, b = j - s.text_len, W = s.grid;
  switch (s.kind) {
    case kRow:
      return a - W <= b;
    case kColumn:
      return a % W == b % W;
    default: {
      const int32_t h = (s.conv_kernel - 1) / 2;
      int32_t dr = a / W - b / W, dc = a % W - b % W;
      if (dr < 0) dr = -dr;
      if (dc < 0) dc = -dc;
      return dr <= h && dc <= h;
    }
  }
}

// The same in layout positions (what the kernels test on partial tiles).
DALLE_HD bool allowed_layout(const MaskSpec& s, int32_t p, int32_t q) {
  return allowed_seq(s, layout_to_seq(s, p), layout_to_seq(s, q));
}

// Upper bound on the number of runs row_runs() returns for a spec.
DALLE_HD int32_t max_row_runs(const MaskSpec& s) {
  if (s.kind != kConv) return 2;
  const int32_t h = (s.conv_kernel - 1) / 2;
  return 1 + (h + 1 < s.grid ? h + 1 : s.grid);
}

// The allowed keys of layout query p as disjoint runs [lo[n], hi[n]] (inclusive, layout positions, increasing);
// returns the number of runs (<= max_row_runs). Derived from the mask's geometry, not by testing pairs, so the tests
// can check it against the pairwise definition.
DALLE_HD int32_t row_runs(const MaskSpec& s, int32_t p, int32_t* lo, int32_t* hi) {
  const int32_t Tt = s.text_len, W = s.grid;
  if (p < Tt) {
    lo[0] = 0;
    hi[0] = p;
    return 1;
  }
  int32_t n = 0;
  if (Tt > 0) {
    lo[n] = 0;
    hi[n] = Tt - 1;
    n++;
  }
  const int32_t a = p - Tt;
  switch (s.kind) {
    case kRow: {
      const int32_t b0 = a - W > 0 ? a - W : 0;
      lo[n] = Tt + b0;
      hi[n] = p;
      return n + 1;
    }
    case kColumn:  // layout a = c * W + r: the same column's rows 0 .. r
      lo[n] = Tt + (a / W) * W;
      hi[n] = p;
      return n + 1;
    default: {
      const int32_t h = (s.conv_kernel - 1) / 2, r = a / W, c = a % W;
      const int32_t c0 = c - h > 0 ? c - h : 0, c1 = c + h < W - 1 ? c + h : W - 1;
      for (int32_t rr = r - h > 0 ? r - h : 0; rr <= r; rr++) {
        lo[n] = Tt + rr * W + c0;
        hi[n] = Tt + rr * W + (rr == r ? c : c1);
        n++;
      }
      return n;
    }
  }
}

// ---- host only (used by the launchers and the tests) ----

// Empty when the spec is valid, else what is wrong.
inline std::string check_spec(const MaskSpec& s) {
  if (s.kind < kRow || s.kind > kConv) return "unknown mask kind " + std::to_string(s.kind) + " (0 row, 1 column, 2 conv)";
  if (s.text_len < 0) return "textLen must be >= 0, got " + std::to_string(s.text_len);
  if (s.grid < 1 || s.grid > 4096) return "gridSide must be in 1..4096, got " + std::to_string(s.grid);
  if (s.kind == kConv && (s.conv_kernel < 1 || s.conv_kernel % 2 == 0)) {
    return "convKernel must be an odd integer >= 1 for a conv mask, got " + std::to_string(s.conv_kernel);
  }
  if ((int64_t)s.text_len + (int64_t)s.grid * s.grid > (1 << 24)) return "sequence longer than 2^24 positions";
  return "";
}

// Compressed lists of the visited tile pairs. By query tile (CSR): the pairs of query tile t are
// key_tile[row_start[t] .. row_start[t + 1]), with full_q[] alongside. By key tile (CSC): the query tiles of key tile
// u are query_tile[col_start[u] .. col_start[u + 1]), with full_k[]. allowed_pairs counts every allowed pair.
struct TilePlan {
  int32_t T = 0, bq = 0, bk = 0, n_qt = 0, n_kt = 0;
  std::vector<int32_t> row_start, key_tile, full_q;
  std::vector<int32_t> col_start, query_tile, full_k;
  int64_t allowed_pairs = 0;
};

inline TilePlan build_tile_plan(const MaskSpec& s, int32_t bq, int32_t bk) {
  TilePlan plan;
  const int32_t T = seq_len(s);
  plan.T = T;
  plan.bq = bq;
  plan.bk = bk;
  plan.n_qt = (T + bq - 1) / bq;
  plan.n_kt = (T + bk - 1) / bk;
  plan.row_start.assign(plan.n_qt + 1, 0);
  std::vector<int64_t> count(plan.n_kt);
  std::vector<int32_t> lo(max_row_runs(s)), hi(max_row_runs(s));
  for (int32_t t = 0; t < plan.n_qt; t++) {
    std::fill(count.begin(), count.end(), 0);
    const int32_t q0 = t * bq, q1 = q0 + bq < T ? q0 + bq : T;
    for (int32_t p = q0; p < q1; p++) {
      const int32_t n = row_runs(s, p, lo.data(), hi.data());
      for (int32_t r = 0; r < n; r++) {
        plan.allowed_pairs += hi[r] - lo[r] + 1;
        for (int32_t u = lo[r] / bk; u <= hi[r] / bk; u++) {
          const int32_t a = lo[r] > u * bk ? lo[r] : u * bk;
          const int32_t b = hi[r] < u * bk + bk - 1 ? hi[r] : u * bk + bk - 1;
          count[u] += b - a + 1;
        }
      }
    }
    for (int32_t u = 0; u < plan.n_kt; u++) {
      if (count[u] == 0) continue;
      const int64_t cols = (u * bk + bk < T ? u * bk + bk : T) - u * bk;
      plan.key_tile.push_back(u);
      plan.full_q.push_back(count[u] == (int64_t)(q1 - q0) * cols ? 1 : 0);
    }
    plan.row_start[t + 1] = (int32_t)plan.key_tile.size();
  }
  // The transpose (counting sort by key tile keeps query tiles increasing within each key tile).
  plan.col_start.assign(plan.n_kt + 1, 0);
  for (int32_t u : plan.key_tile) plan.col_start[u + 1]++;
  for (int32_t u = 0; u < plan.n_kt; u++) plan.col_start[u + 1] += plan.col_start[u];
  plan.query_tile.resize(plan.key_tile.size());
  plan.full_k.resize(plan.key_tile.size());
  std::vector<int32_t> next(plan.col_start.begin(), plan.col_start.end() - 1);
  for (int32_t t = 0; t < plan.n_qt; t++) {
    for (int32_t e = plan.row_start[t]; e < plan.row_start[t + 1]; e++) {
      const int32_t slot = next[plan.key_tile[e]]++;
      plan.query_tile[slot] = t;
      plan.full_k[slot] = plan.full_q[e];
    }
  }
  return plan;
}

// Launch shape of the attention kernels: one thread per query (forward, dQ) or key (dK, dV) row of a tile, so the
// block size is the tile size; head widths are padded to the compiled width kAttnMaxWidth (registers and shared
// memory are sized by it; the prior's heads are 64 wide). Grid: (tiles, B * H).
struct AttnLaunch {
  int32_t tile = 0;        // BQ = BK = threads per block
  int32_t dmax = 0;        // compiled head width >= max(D, Dv)
  int64_t grid_x = 0, grid_y = 0;
  int64_t smem_fwd = 0, smem_dq = 0, smem_dkv = 0;  // dynamic shared memory bytes per block
  std::string error;       // empty when the shape can run
};

constexpr int32_t kAttnTile = 64;
constexpr int32_t kAttnMaxWidth = 64;

inline AttnLaunch attention_launch(const MaskSpec& s, int64_t B, int64_t H, int64_t D, int64_t Dv) {
  AttnLaunch L;
  L.tile = kAttnTile;
  const int64_t w = D > Dv ? D : Dv;
  if (D < 1 || Dv < 1 || w > kAttnMaxWidth) {
    L.error = "head widths D = " + std::to_string(D) + ", Dv = " + std::to_string(Dv) + " must be in 1.." +
              std::to_string(kAttnMaxWidth);
    return L;
  }
  L.dmax = kAttnMaxWidth;
  const int64_t T = seq_len(s);
  L.grid_x = (T + L.tile - 1) / L.tile;
  L.grid_y = B * H;
  if (B < 1 || H < 1 || L.grid_y > 65535) {
    L.error = "B * H = " + std::to_string(B * H) + " must be in 1..65535";
    return L;
  }
  const int64_t f = sizeof(float), t = L.tile, d = L.dmax;
  L.smem_fwd = 2 * t * d * f;                 // K, V tiles
  L.smem_dq = 2 * t * (d + 1) * f + 2 * t * d * f;   // own q, dO rows (padded) + K, V tiles
  L.smem_dkv = 2 * t * (d + 1) * f + 2 * t * d * f + 2 * t * f;  // own k, v rows + Q, dO tiles + lse, delta
  return L;
}

// Elementwise launches: 256 threads, a grid-stride loop over at most 4096 blocks (n = 0 launches nothing).
inline int64_t elementwise_blocks(int64_t n, int64_t threads = 256) {
  if (n <= 0) return 0;
  const int64_t b = (n + threads - 1) / threads;
  return b < 4096 ? b : 4096;
}

// Row-wise ops (layer norm, cross-entropy): one warp per row when the row is short, else a 256-thread block per row.
inline int32_t row_threads(int64_t cols) { return cols <= 1024 ? 32 : 256; }

}  // namespace attn_plan
}  // namespace dalle
