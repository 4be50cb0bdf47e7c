// Reductions over the middle dimension of a contiguous (outer, R, inner) block (src/core/ops/reduce.ts maps any set of
// axes onto one or more such passes): sum (times a scale: 1 for sum, 1/count for mean) and max with the index of the
// first maximal element, plus the scatter that is max's backward.
//
// Determinism: sums accumulate in float64 in a fixed order (8 interleaved accumulators combined pairwise for a row,
// one accumulator per column otherwise). When there are too few (outer, column-block) tasks to occupy the threads, R
// is cut into blocks whose size depends only on the shape; block partials are combined in block order. So the result
// never depends on the thread count. max: ties go to the lowest index; a NaN counts as the maximum (the first NaN).
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "napi_util.h"
#include "threadpool.h"

namespace dalle {
namespace {

enum ReduceCode { kSum = 0, kMax = 1 };

constexpr int64_t kColBlock = 256;        // columns (inner) per task
constexpr int64_t kMinTasks = 32;         // fewer (outer, column-block) tasks than this: split R as well
constexpr int64_t kSplitWork = 1 << 16;   // ... when a task would read more than this many elements
constexpr int64_t kBlockWork = 1 << 15;   // elements per R block when splitting

// Sum of x[0 : n] in float64, in a fixed order (8 interleaved accumulators, combined pairwise).
double row_sum(const float* x, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; k++) acc[k] += (double)x[i + k];
  }
  for (int k = 0; i < n; i++, k++) acc[k] += (double)x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// True when v should replace the running maximum best (strictly greater, or the first NaN).
inline bool beats(float v, float best) { return v > best || (std::isnan(v) && !std::isnan(best)); }

struct Geometry {
  int64_t outer, R, inner;
  int64_t cb, ncb;       // column block width and count
  int64_t rb, nrb;       // R block length and count (nrb == 1: no split)
};

Geometry geometry(int64_t outer, int64_t R, int64_t inner) {
  Geometry g{outer, R, inner, 0, 0, R, 1};
  g.cb = inner < kColBlock ? inner : kColBlock;
  g.ncb = g.cb ? (inner + g.cb - 1) / g.cb : 0;
  if (outer * g.ncb < kMinTasks && R * g.cb > kSplitWork) {
    g.rb = kBlockWork / g.cb;
    if (g.rb < 1) g.rb = 1;
    g.nrb = (R + g.rb - 1) / g.rb;
  }
  return g;
}

// Tasks per parallel chunk so that a chunk reads at least kMinChunk elements (small reductions stay on one thread).
constexpr int64_t kMinChunk = 1 << 14;
int64_t task_grain(int64_t elements_per_task) {
  return elements_per_task >= kMinChunk ? 1 : kMinChunk / (elements_per_task > 0 ? elements_per_task : 1);
}

// Column strips of the sum: 2-lane float64 vectors (GCC vector extensions: SSE2 / NEON), 8 of them in registers.
typedef double v2d __attribute__((vector_size(16)));
constexpr int kStrip = 16;

// p[0 : 4] widened to float64: lo = (p[0], p[1]), hi = (p[2], p[3]). (Generic 2-float vectors went through the stack.)
inline void widen4(const float* p, v2d* lo, v2d* hi) {
#if defined(__SSE2__)
  const __m128 f = _mm_loadu_ps(p);
  *lo = (v2d)_mm_cvtps_pd(f);
  *hi = (v2d)_mm_cvtps_pd(_mm_movehl_ps(f, f));
#else
  *lo = v2d{p[0], p[1]};
  *hi = v2d{p[2], p[3]};
#endif
}

// Sums x[o, r0:r1, c0:c1] into acc[0 : c1-c0] (float64).
void sum_block(const float* x, const Geometry& g, int64_t o, int64_t r0, int64_t r1, int64_t c0, int64_t c1, double* acc) {
  const int64_t w = c1 - c0;
  if (g.inner == 1) {
    acc[0] = row_sum(x + o * g.R + r0, r1 - r0);
    return;
  }
  // Strips of kStrip columns whose float64 sums stay in registers while the rows stream past (summing whole rows into
  // acc[] in memory cost a load and a store of a double per element: 0.13 of the bandwidth bound for the dVAE's code
  // usage mean, (B*h*w, V) over rows, bench/ops). Each column still adds its rows in order r0 .. r1 - 1 from zero, so
  // the result is the same bit for bit.
  const float* base = x + (o * g.R + r0) * g.inner + c0;
  int64_t c = 0;
  for (; c + kStrip <= w; c += kStrip) {
    v2d s[kStrip / 2] = {};
    const float* row = base + c;
    for (int64_t r = r0; r < r1; r++, row += g.inner) {
      for (int q = 0; q < kStrip / 4; q++) {
        v2d lo, hi;
        widen4(row + 4 * q, &lo, &hi);
        s[2 * q] += lo;
        s[2 * q + 1] += hi;
      }
    }
    memcpy(acc + c, s, sizeof s);
  }
  for (; c < w; c++) {
    double s = 0;
    const float* col = base + c;
    for (int64_t r = r0; r < r1; r++, col += g.inner) s += (double)*col;
    acc[c] = s;
  }
}

// acc[c] (float64) = sum of x[r * inner + c] over rows r = 0 .. rows - 1 in order, for c < inner; rows stream past in
// memory order and acc (8 KiB at inner 1024) stays in L1.
void sum_rows(const float* x, int64_t rows, int64_t inner, double* acc) {
  memset(acc, 0, sizeof(double) * inner);
  const int64_t quads = inner / 4;
  for (int64_t r = 0; r < rows; r++) {
    const float* row = x + r * inner;
    for (int64_t q = 0; q < quads; q++) {
      v2d lo, hi, a, b;
      widen4(row + 4 * q, &lo, &hi);
      memcpy(&a, acc + 4 * q, sizeof a);
      memcpy(&b, acc + 4 * q + 2, sizeof b);
      a += lo;
      b += hi;
      memcpy(acc + 4 * q, &a, sizeof a);
      memcpy(acc + 4 * q + 2, &b, sizeof b);
    }
    for (int64_t c = 4 * quads; c < inner; c++) acc[c] += (double)row[c];
  }
}

// Max of a row x[0:n] and the index of its first maximal element (the first NaN if there is one). Two passes: the
// maximum in 4-lane vectors (GCC vector extensions: SSE2 / NEON), then a search for its first occurrence.
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

void row_max(const float* x, int64_t n, float* best, int32_t* arg) {
  v4f m0 = {x[0], x[0], x[0], x[0]}, m1 = m0;
  v4i nan = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v4f a, b;
    memcpy(&a, x + i, sizeof a);
    memcpy(&b, x + i + 4, sizeof b);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
    nan |= (a != a) | (b != b);
  }
  float mx = x[0];
  bool has_nan = false;
  for (int k = 0; k < 4; k++) {
    mx = m0[k] > mx ? m0[k] : mx;
    mx = m1[k] > mx ? m1[k] : mx;
    has_nan |= nan[k] != 0;
  }
  for (; i < n; i++) {
    mx = x[i] > mx ? x[i] : mx;
    has_nan |= x[i] != x[i];
  }
  int64_t at = 0;
  if (has_nan) {
    while (!std::isnan(x[at])) at++;
  } else {
    while (x[at] != mx) at++;
  }
  *best = x[at];
  *arg = (int32_t)at;
}

// Max of x[o, r0:r1, c0:c1] into best / arg (arg: index along R).
void max_block(const float* x, const Geometry& g, int64_t o, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
               float* __restrict best, int32_t* __restrict arg) {
  const int64_t w = c1 - c0;
  if (g.inner == 1) {
    row_max(x + o * g.R + r0, r1 - r0, best, arg);
    *arg += (int32_t)r0;
    return;
  }
  const float* first = x + (o * g.R + r0) * g.inner + c0;
  for (int64_t c = 0; c < w; c++) {
    best[c] = first[c];
    arg[c] = (int32_t)r0;
  }
  for (int64_t r = r0 + 1; r < r1; r++) {
    const float* row = x + (o * g.R + r) * g.inner + c0;
    const int32_t ri = (int32_t)r;
    for (int64_t c = 0; c < w; c++) {  // branch-free, so it vectorizes: beats(v, best) written out
      const float v = row[c], b = best[c];
      const bool take = (v > b) | ((v != v) & (b == b));
      best[c] = take ? v : b;
      arg[c] = take ? ri : arg[c];
    }
  }
}

// reduce(code, x, outer, R, inner, out, idx, scale): out (outer, inner) = scale * sum_r x (code 0), or max_r x with
// idx (outer, inner) int32 = the first argmax (code 1; idx may be null).
Napi::Value Reduce(const Napi::CallbackInfo& info) {
  const char* op = "reduce";
  const int code = (int)arg_i64(info, 0, op);
  const float* x = arg_data<const float>(info, 1, op);
  const int64_t outer = arg_i64(info, 2, op), R = arg_i64(info, 3, op), inner = arg_i64(info, 4, op);
  float* out = arg_data<float>(info, 5, op);
  int32_t* idx = arg_data<int32_t>(info, 6, op);
  const double scale = arg_f64(info, 7, op);
  DALLE_CHECK(code == kSum || code == kMax, op, "unknown reduction code %d", code);
  DALLE_CHECK(outer >= 0 && R >= 0 && inner >= 0, op, "negative extent in (outer, R, inner) = (%lld, %lld, %lld)",
              (long long)outer, (long long)R, (long long)inner);
  DALLE_CHECK(R <= INT32_MAX, op, "reduced extent %lld does not fit the int32 index", (long long)R);
  if (outer * inner == 0) return info.Env().Undefined();
  DALLE_CHECK(out != nullptr, op, "null output address");
  if (code == kMax) DALLE_CHECK(R > 0, op, "max over an empty dimension (outer %lld, inner %lld)", (long long)outer, (long long)inner);
  if (R == 0) {  // an empty sum: 0 (times the scale: mean of nothing is NaN)
    const float v = (float)(0.0 * scale);
    for (int64_t i = 0; i < outer * inner; i++) out[i] = v;
    return info.Env().Undefined();
  }
  DALLE_CHECK(x != nullptr, op, "null input address");
  const Geometry g = geometry(outer, R, inner);
  const int64_t tasks = outer * g.ncb;

  if (g.nrb == 1) {
    parallel_for(tasks, task_grain(R * g.cb), [&](int64_t b, int64_t e) {
      double acc[kColBlock];
      for (int64_t t = b; t < e; t++) {
        const int64_t o = t / g.ncb, c0 = (t % g.ncb) * g.cb, c1 = c0 + g.cb < inner ? c0 + g.cb : inner;
        float* dst = out + o * inner + c0;
        if (code == kSum) {
          sum_block(x, g, o, 0, R, c0, c1, acc);
          for (int64_t c = 0; c < c1 - c0; c++) dst[c] = (float)(acc[c] * scale);
        } else {
          int32_t arg[kColBlock];
          max_block(x, g, o, 0, R, c0, c1, dst, arg);
          if (idx) for (int64_t c = 0; c < c1 - c0; c++) idx[o * inner + c0 + c] = arg[c];
        }
      }
    });
    return info.Env().Undefined();
  }

  // Split R: partials (outer, nrb, inner), then combined in block order.
  const int64_t nparts = outer * g.nrb * inner;
  std::vector<double> psum(code == kSum ? nparts : 0);
  std::vector<float> pmax(code == kMax ? nparts : 0);
  std::vector<int32_t> parg(code == kMax ? nparts : 0);
  if (code == kSum) {
    // One task per (outer, R block), over every column: it reads one contiguous run of memory. (Tasks per column block
    // read 1 KiB per row at a stride of whole rows, which the hardware prefetchers do not follow: measured 1.7x
    // slower for the dVAE's code usage mean, bench/ops.) The sums per column are those of sum_block, bit for bit.
    parallel_for(outer * g.nrb, task_grain(g.rb * inner), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; t++) {
        const int64_t o = t / g.nrb, blk = t % g.nrb;
        const int64_t r0 = blk * g.rb, r1 = r0 + g.rb < R ? r0 + g.rb : R;
        // One column (a sum over everything, or over trailing axes): the vectorised row_sum, as sum_block does
        // (sum_rows is a scalar loop at inner == 1: 18x slower on the dVAE's full sum of its (16, 16, 16, 1024) logits).
        if (inner == 1) psum[t] = row_sum(x + o * R + r0, r1 - r0);
        else sum_rows(x + (o * R + r0) * inner, r1 - r0, inner, psum.data() + t * inner);
      }
    });
  } else {
  parallel_for(tasks * g.nrb, task_grain(g.rb * g.cb), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      const int64_t blk = t % g.nrb, rest = t / g.nrb;
      const int64_t o = rest / g.ncb, c0 = (rest % g.ncb) * g.cb, c1 = c0 + g.cb < inner ? c0 + g.cb : inner;
      const int64_t r0 = blk * g.rb, r1 = r0 + g.rb < R ? r0 + g.rb : R;
      const int64_t at = (o * g.nrb + blk) * inner + c0;
      max_block(x, g, o, r0, r1, c0, c1, pmax.data() + at, parg.data() + at);
    }
  });
  }
  parallel_for(outer * inner, 1024, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      const int64_t o = i / inner, c = i % inner;
      if (code == kSum) {
        double s = 0;
        for (int64_t blk = 0; blk < g.nrb; blk++) s += psum[(o * g.nrb + blk) * inner + c];
        out[i] = (float)(s * scale);
      } else {
        float best = pmax[o * g.nrb * inner + c];
        int32_t arg = parg[o * g.nrb * inner + c];
        for (int64_t blk = 1; blk < g.nrb; blk++) {
          const float v = pmax[(o * g.nrb + blk) * inner + c];
          if (beats(v, best)) {
            best = v;
            arg = parg[(o * g.nrb + blk) * inner + c];
          }
        }
        out[i] = best;
        if (idx) idx[i] = arg;
      }
    }
  });
  return info.Env().Undefined();
}

// reduceMaxBackward(dx, g, idx, outer, R, inner): dx (outer, R, inner), already zero, gets dx[o, idx[o, c], c] = g[o, c].
Napi::Value ReduceMaxBackward(const Napi::CallbackInfo& info) {
  const char* op = "reduceMaxBackward";
  float* dx = arg_data<float>(info, 0, op);
  const float* g = arg_data<const float>(info, 1, op);
  const int32_t* idx = arg_data<const int32_t>(info, 2, op);
  const int64_t outer = arg_i64(info, 3, op), R = arg_i64(info, 4, op), inner = arg_i64(info, 5, op);
  DALLE_CHECK(outer >= 0 && R >= 0 && inner >= 0, op, "negative extent in (outer, R, inner) = (%lld, %lld, %lld)",
              (long long)outer, (long long)R, (long long)inner);
  if (outer * inner == 0 || R == 0) return info.Env().Undefined();
  DALLE_CHECK(dx && g && idx, op, "null address");
  for (int64_t i = 0; i < outer * inner; i++) {  // checked here: a pool thread must not throw
    DALLE_CHECK(idx[i] >= 0 && idx[i] < R, op, "index %d at %lld is out of range [0, %lld)", (int)idx[i], (long long)i,
                (long long)R);
  }
  parallel_for(outer * inner, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      const int64_t o = i / inner, c = i % inner;
      dx[(o * R + idx[i]) * inner + c] = g[i];
    }
  });
  return info.Env().Undefined();
}

DALLE_EXPORT("reduce", Reduce);
DALLE_EXPORT("reduceMaxBackward", ReduceMaxBackward);

}  // namespace
}  // namespace dalle
