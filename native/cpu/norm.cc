// Layer normalization over the last axis, forward and fused backward.
// Keys: R = rows (product of the leading dims), C = normalized columns; gain, bias: (C).
//   forward:  mean = sum(x) / C, var = sum((x - mean)^2) / C (two passes), rstd = 1 / sqrt(var + eps),
//             y = (x - mean) * rstd * gain + bias; mean and rstd (R) are saved for the backward.
//   backward: xhat = (x - mean) * rstd, dxhat = g * gain,
//             dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
//             dgain = sum_rows g * xhat, dbias = sum_rows g.
// Determinism: rows are split into fixed blocks (the size depends on R only); each block's dgain/dbias partial is a
// sum over its rows in order, and the partials are added in block order. Same bits for any thread count.
#include <cmath>
#include <cstring>

#include "allocator.h"
#include "napi_util.h"
#include "threadpool.h"

namespace dalle {
namespace {

// A workspace from the caching allocator, released on scope exit.
struct Workspace {
  float* p;
  size_t bytes;
  explicit Workspace(size_t n) : p(static_cast<float*>(cache_alloc(n * sizeof(float)))), bytes(n * sizeof(float)) {}
  ~Workspace() { cache_free(p, bytes); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
};

// Sum with 8 independent accumulators (vectorizable), combined in a fixed order.
static inline float sum8(const float* x, int64_t n) {
  float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) a[k] += x[i + k];
  for (int k = 0; i < n; i++, k++) a[k] += x[i];
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

static inline float sumsq_centered8(const float* x, int64_t n, float mean) {
  float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) {
      float d = x[i + k] - mean;
      a[k] += d * d;
    }
  for (int k = 0; i < n; i++, k++) {
    float d = x[i] - mean;
    a[k] += d * d;
  }
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// layerNormForward(x, gain, bias, y, mean, rstd, R, C, eps)
Napi::Value LayerNormForward(const Napi::CallbackInfo& info) {
  const char* op = "layerNorm";
  const float* x = arg_data<const float>(info, 0, op);
  const float* gain = arg_data<const float>(info, 1, op);
  const float* bias = arg_data<const float>(info, 2, op);
  float* y = arg_data<float>(info, 3, op);
  float* mean = arg_data<float>(info, 4, op);
  float* rstd = arg_data<float>(info, 5, op);
  int64_t R = arg_i64(info, 6, op), C = arg_i64(info, 7, op);
  float eps = (float)arg_f64(info, 8, op);
  DALLE_CHECK(R >= 0 && C >= 1, op, "bad shape (%lld rows, %lld columns)", (long long)R, (long long)C);
  DALLE_CHECK(eps >= 0, op, "eps must be >= 0, got %g", (double)eps);
  if (R == 0) return info.Env().Undefined();
  DALLE_CHECK(x && gain && bias && y && mean && rstd, op, "null address (rows=%lld, C=%lld)", (long long)R,
              (long long)C);
  int64_t grain = C >= 4096 ? 1 : 4096 / C + 1;
  parallel_for(R, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
      float m = sum8(xr, C) / (float)C;
      float var = sumsq_centered8(xr, C, m) / (float)C;
      float rs = 1.0f / std::sqrt(var + eps);
      mean[r] = m;
      rstd[r] = rs;
      for (int64_t j = 0; j < C; j++) yr[j] = (xr[j] - m) * rs * gain[j] + bias[j];
    }
  });
  return info.Env().Undefined();
}

// layerNormBackward(x, gain, mean, rstd, g, dx, dgain, dbias, R, C): any of dx, dgain, dbias may be null (not needed).
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  const char* op = "layerNorm backward";
  const float* x = arg_data<const float>(info, 0, op);
  const float* gain = arg_data<const float>(info, 1, op);
  const float* mean = arg_data<const float>(info, 2, op);
  const float* rstd = arg_data<const float>(info, 3, op);
  const float* g = arg_data<const float>(info, 4, op);
  float* dx = arg_data<float>(info, 5, op);
  float* dgain = arg_data<float>(info, 6, op);
  float* dbias = arg_data<float>(info, 7, op);
  int64_t R = arg_i64(info, 8, op), C = arg_i64(info, 9, op);
  DALLE_CHECK(R >= 0 && C >= 1, op, "bad shape (%lld rows, %lld columns)", (long long)R, (long long)C);
  bool params = dgain || dbias;
  if (R == 0) {
    if (dgain) memset(dgain, 0, C * sizeof(float));
    if (dbias) memset(dbias, 0, C * sizeof(float));
    return info.Env().Undefined();
  }
  DALLE_CHECK(x && gain && mean && rstd && g, op, "null address (rows=%lld, C=%lld)", (long long)R, (long long)C);

  // Fixed row blocks: at most 256 partials, at least 32 rows each (a function of R only).
  int64_t rb = (R + 255) / 256;
  if (rb < 32) rb = 32;
  int64_t nblk = (R + rb - 1) / rb;
  Workspace part(params ? (size_t)(nblk * 2 * C) : 1);     // per block: [dgain partial (C)][dbias partial (C)]
  parallel_for(nblk, 1, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; blk++) {
      float* pg = params ? part.p + blk * 2 * C : nullptr;
      float* pb = params ? pg + C : nullptr;
      if (params) memset(pg, 0, 2 * C * sizeof(float));
      int64_t r0 = blk * rb, r1 = r0 + rb < R ? r0 + rb : R;
      for (int64_t r = r0; r < r1; r++) {
        const float* xr = x + r * C;
        const float* gr = g + r * C;
        const float m = mean[r], rs = rstd[r];
        if (dx) {
          // a = mean(dxhat), c = mean(dxhat * xhat)
          float sa[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          int64_t j = 0;
          for (; j + 8 <= C; j += 8)
            for (int k = 0; k < 8; k++) {
              float dxh = gr[j + k] * gain[j + k];
              sa[k] += dxh;
              sc[k] += dxh * (xr[j + k] - m) * rs;
            }
          for (int k = 0; j < C; j++, k++) {
            float dxh = gr[j] * gain[j];
            sa[k] += dxh;
            sc[k] += dxh * (xr[j] - m) * rs;
          }
          float a = (((sa[0] + sa[1]) + (sa[2] + sa[3])) + ((sa[4] + sa[5]) + (sa[6] + sa[7]))) / (float)C;
          float c = (((sc[0] + sc[1]) + (sc[2] + sc[3])) + ((sc[4] + sc[5]) + (sc[6] + sc[7]))) / (float)C;
          float* dr = dx + r * C;
          for (int64_t j2 = 0; j2 < C; j2++) {
            float xh = (xr[j2] - m) * rs;
            dr[j2] = rs * (gr[j2] * gain[j2] - a - xh * c);
          }
        }
        if (params) {
          for (int64_t j2 = 0; j2 < C; j2++) {
            pg[j2] += gr[j2] * ((xr[j2] - m) * rs);
            pb[j2] += gr[j2];
          }
        }
      }
    }
  });
  if (params) {
    parallel_for(C, 256, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; j++) {
        float sg = 0, sb = 0;
        for (int64_t blk = 0; blk < nblk; blk++) {
          sg += part.p[blk * 2 * C + j];
          sb += part.p[blk * 2 * C + C + j];
        }
        if (dgain) dgain[j] = sg;
        if (dbias) dbias[j] = sb;
      }
    });
  }
  return info.Env().Undefined();
}

DALLE_EXPORT("layerNormForward", LayerNormForward);
DALLE_EXPORT("layerNormBackward", LayerNormBackward);

}  // namespace
}  // namespace dalle
