// The CUDA backend's host logic, exported from the main CPU addon so that tests run it on every machine, GPU or not:
// the sparse-attention masks, layout and tile plan (native/cuda/attention_plan.h, the same header the CUDA kernels
// compile) and the launch-shape choices. test/cuda/plan.test.ts checks them against a TypeScript brute force.
// (native/list-sources.js adds native/cuda/shared/*.cc to the main addon; nothing here needs CUDA.)
#include <napi.h>

#include <cstring>

#include "../attention_plan.h"
#include "napi_util.h"

namespace dalle {
namespace {

using attn_plan::MaskSpec;

// (kind, textLen, gridSide, convKernel) at arguments i .. i+3; kind is "row" | "column" | "conv".
MaskSpec read_spec(const Napi::CallbackInfo& info, size_t i, const char* op) {
  const std::string kind = arg_str(info, i, op);
  MaskSpec s{};
  if (kind == "row") s.kind = attn_plan::kRow;
  else if (kind == "column") s.kind = attn_plan::kColumn;
  else if (kind == "conv") s.kind = attn_plan::kConv;
  else fail(op, __FILE__, __LINE__, "unknown mask kind '%s'; use row, column or conv", kind.c_str());
  const int64_t tt = arg_i64(info, i + 1, op), w = arg_i64(info, i + 2, op), k = arg_i64(info, i + 3, op);
  DALLE_CHECK(tt >= 0 && tt < (1 << 24) && w >= 1 && w <= 4096 && k >= 0 && k < 4096, op,
              "bad mask spec: textLen %lld, gridSide %lld, convKernel %lld", (long long)tt, (long long)w, (long long)k);
  s.text_len = (int32_t)tt;
  s.grid = (int32_t)w;
  s.conv_kernel = (int32_t)k;
  const std::string err = attn_plan::check_spec(s);
  DALLE_CHECK(err.empty(), op, "%s", err.c_str());
  return s;
}

Napi::Int32Array i32_array(Napi::Env env, const std::vector<int32_t>& v) {
  Napi::Int32Array a = Napi::Int32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(int32_t));
  return a;
}

// attnPlanTiles(kind, textLen, gridSide, convKernel, bq, bk) -> the tile plan (attention_plan.h TilePlan).
Napi::Value AttnPlanTiles(const Napi::CallbackInfo& info) {
  const char* op = "attnPlanTiles";
  const MaskSpec s = read_spec(info, 0, op);
  const int64_t bq = arg_i64(info, 4, op), bk = arg_i64(info, 5, op);
  DALLE_CHECK(bq >= 1 && bq <= 4096 && bk >= 1 && bk <= 4096, op, "tile sizes must be in 1..4096, got %lld x %lld",
              (long long)bq, (long long)bk);
  const attn_plan::TilePlan p = attn_plan::build_tile_plan(s, (int32_t)bq, (int32_t)bk);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("T", p.T);
  o.Set("nQueryTiles", p.n_qt);
  o.Set("nKeyTiles", p.n_kt);
  o.Set("rowStart", i32_array(env, p.row_start));
  o.Set("keyTile", i32_array(env, p.key_tile));
  o.Set("fullQ", i32_array(env, p.full_q));
  o.Set("colStart", i32_array(env, p.col_start));
  o.Set("queryTile", i32_array(env, p.query_tile));
  o.Set("fullK", i32_array(env, p.full_k));
  o.Set("allowedPairs", (double)p.allowed_pairs);
  return o;
}

// attnPlanLayout(kind, textLen, gridSide, convKernel) -> Int32Array (T): the sequence position of each layout position.
Napi::Value AttnPlanLayout(const Napi::CallbackInfo& info) {
  const char* op = "attnPlanLayout";
  const MaskSpec s = read_spec(info, 0, op);
  const int32_t T = attn_plan::seq_len(s);
  std::vector<int32_t> v(T);
  for (int32_t p = 0; p < T; p++) v[p] = attn_plan::layout_to_seq(s, p);
  return i32_array(info.Env(), v);
}

// attnPlanAllowed(kind, textLen, gridSide, convKernel, layout) -> Uint8Array (T * T): allowed_seq(i, j) row-major, or
// with layout = true allowed_layout(p, q) (the test the kernels run on partial tiles).
Napi::Value AttnPlanAllowed(const Napi::CallbackInfo& info) {
  const char* op = "attnPlanAllowed";
  const MaskSpec s = read_spec(info, 0, op);
  const bool layout = arg_bool(info, 4, op);
  const int64_t T = attn_plan::seq_len(s);
  DALLE_CHECK(T <= 8192, op, "T = %lld is too long for a dense mask (at most 8192)", (long long)T);
  Napi::Uint8Array arr = Napi::Uint8Array::New(info.Env(), T * T);
  uint8_t* a = arr.Data();
  for (int32_t i = 0; i < T; i++) {
    for (int32_t j = 0; j < T; j++) {
      a[i * T + j] = (layout ? attn_plan::allowed_layout(s, i, j) : attn_plan::allowed_seq(s, i, j)) ? 1 : 0;
    }
  }
  return arr;
}

// attnPlanRuns(kind, textLen, gridSide, convKernel, p) -> Int32Array [lo0, hi0, lo1, hi1, ...]: the allowed key runs of
// layout query p.
Napi::Value AttnPlanRuns(const Napi::CallbackInfo& info) {
  const char* op = "attnPlanRuns";
  const MaskSpec s = read_spec(info, 0, op);
  const int64_t p = arg_i64(info, 4, op);
  DALLE_CHECK(p >= 0 && p < attn_plan::seq_len(s), op, "query %lld is outside 0..%d", (long long)p,
              attn_plan::seq_len(s) - 1);
  std::vector<int32_t> lo(attn_plan::max_row_runs(s)), hi(attn_plan::max_row_runs(s));
  const int32_t n = attn_plan::row_runs(s, (int32_t)p, lo.data(), hi.data());
  std::vector<int32_t> v;
  for (int32_t r = 0; r < n; r++) {
    v.push_back(lo[r]);
    v.push_back(hi[r]);
  }
  return i32_array(info.Env(), v);
}

// attnPlanLaunch(kind, textLen, gridSide, convKernel, B, H, D, Dv) -> the attention kernels' launch shape.
Napi::Value AttnPlanLaunch(const Napi::CallbackInfo& info) {
  const char* op = "attnPlanLaunch";
  const MaskSpec s = read_spec(info, 0, op);
  const attn_plan::AttnLaunch L = attn_plan::attention_launch(s, arg_i64(info, 4, op), arg_i64(info, 5, op),
                                                              arg_i64(info, 6, op), arg_i64(info, 7, op));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("tile", L.tile);
  o.Set("dmax", L.dmax);
  o.Set("gridX", (double)L.grid_x);
  o.Set("gridY", (double)L.grid_y);
  o.Set("smemForward", (double)L.smem_fwd);
  o.Set("smemDq", (double)L.smem_dq);
  o.Set("smemDkv", (double)L.smem_dkv);
  o.Set("error", L.error);
  return o;
}

// cudaLaunchShape(n, cols) -> { blocks, rowThreads }: the elementwise grid for n items and the row-op block for rows
// of `cols` columns.
Napi::Value CudaLaunchShape(const Napi::CallbackInfo& info) {
  const char* op = "cudaLaunchShape";
  const int64_t n = arg_i64(info, 0, op), cols = arg_i64(info, 1, op);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("blocks", (double)attn_plan::elementwise_blocks(n));
  o.Set("rowThreads", attn_plan::row_threads(cols));
  return o;
}

DALLE_EXPORT("attnPlanTiles", AttnPlanTiles);
DALLE_EXPORT("attnPlanLayout", AttnPlanLayout);
DALLE_EXPORT("attnPlanAllowed", AttnPlanAllowed);
DALLE_EXPORT("attnPlanRuns", AttnPlanRuns);
DALLE_EXPORT("attnPlanLaunch", AttnPlanLaunch);
DALLE_EXPORT("cudaLaunchShape", CudaLaunchShape);

}  // namespace
}  // namespace dalle
