// Embedding lookup: out[n, :] = table[idx[n], :], and its backward, the scatter-add dtable[idx[n], :] += g[n, :].
// Keys: V = table rows (vocabulary), C = columns, N = number of indices (any index shape, flattened).
// Every index is checked before any memory is touched: an out-of-range one is an error naming the index, its
// position in the index tensor and V.
// Determinism: the backward splits the columns among threads; each thread adds every row of g in index order into its
// own columns, so each dtable element is a sum in a fixed order (position 0, 1, ...): same bits for any thread count.
#include <cstring>
#include <string>

#include "napi_util.h"
#include "threadpool.h"

namespace dalle {
namespace {

// Throws for the first (in row-major order) index outside [0, V), naming its multi-index in `shape`.
void check_indices(const char* op, const int32_t* idx, int64_t n, int64_t V, const std::vector<int64_t>& shape) {
  for (int64_t i = 0; i < n; i++) {
    int64_t v = idx[i];
    if (v >= 0 && v < V) continue;
    std::vector<int64_t> pos(shape.size());
    int64_t rem = i;
    for (int d = (int)shape.size() - 1; d >= 0; d--) {
      pos[d] = shape[d] ? rem % shape[d] : 0;
      rem = shape[d] ? rem / shape[d] : 0;
    }
    fail(op, __FILE__, __LINE__,
         "index %lld at position %s of the indices %s is out of range for a table of V = %lld rows (valid: 0 to %lld)",
         (long long)v, shape_str(pos.data(), (int)pos.size()).c_str(),
         shape_str(shape.data(), (int)shape.size()).c_str(), (long long)V, (long long)(V - 1));
  }
}

// embeddingForward(table, V, C, idx, idxShape, out)
Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  const char* op = "embedding";
  const float* table = arg_data<const float>(info, 0, op);
  int64_t V = arg_i64(info, 1, op), C = arg_i64(info, 2, op);
  const int32_t* idx = arg_data<const int32_t>(info, 3, op);
  std::vector<int64_t> shape = arg_i64_array(info, 4, op);
  float* out = arg_data<float>(info, 5, op);
  DALLE_CHECK(V >= 0 && C >= 0, op, "bad table shape (%lld, %lld)", (long long)V, (long long)C);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (n == 0) return info.Env().Undefined();
  DALLE_CHECK(idx, op, "null index address");
  check_indices(op, idx, n, V, shape);
  if (C == 0) return info.Env().Undefined();
  DALLE_CHECK(table && out, op, "null address (table (%lld, %lld))", (long long)V, (long long)C);
  int64_t grain = C >= 4096 ? 1 : 4096 / C + 1;
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) memcpy(out + i * C, table + (int64_t)idx[i] * C, C * sizeof(float));
  });
  return info.Env().Undefined();
}

// embeddingBackward(g, idx, N, V, C, dtable): dtable (V, C) is overwritten with the scatter-add of g (N, C).
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  const char* op = "embedding backward";
  const float* g = arg_data<const float>(info, 0, op);
  const int32_t* idx = arg_data<const int32_t>(info, 1, op);
  int64_t n = arg_i64(info, 2, op), V = arg_i64(info, 3, op), C = arg_i64(info, 4, op);
  float* dtable = arg_data<float>(info, 5, op);
  DALLE_CHECK(n >= 0 && V >= 0 && C >= 0, op, "bad sizes N=%lld V=%lld C=%lld", (long long)n, (long long)V,
              (long long)C);
  if (V * C == 0) return info.Env().Undefined();
  DALLE_CHECK(dtable, op, "null gradient address");
  if (n > 0) {
    DALLE_CHECK(g && idx, op, "null address");
    check_indices(op, idx, n, V, std::vector<int64_t>{n});  // the indices may have changed since the forward
  }
  parallel_for(V * C, 1 << 16, [&](int64_t b, int64_t e) { memset(dtable + b, 0, (e - b) * sizeof(float)); });
  if (n == 0) return info.Env().Undefined();
  parallel_for(C, 16, [&](int64_t c0, int64_t c1) {
    const int64_t w = c1 - c0;
    for (int64_t i = 0; i < n; i++) {
      const float* gr = g + i * C + c0;
      float* dr = dtable + (int64_t)idx[i] * C + c0;
      for (int64_t j = 0; j < w; j++) dr[j] += gr[j];
    }
  });
  return info.Env().Undefined();
}

DALLE_EXPORT("embeddingForward", EmbeddingForward);
DALLE_EXPORT("embeddingBackward", EmbeddingBackward);

}  // namespace
}  // namespace dalle
