// Block-sparse attention for the prior's row, column and convolutional masks, forward and backward, flash-attention
// style: the (T, T) scores are never stored; each block walks the tile list of attention_plan.h (only tiles with an
// allowed pair are loaded; full tiles skip the mask test) with an online softmax, and the forward saves the
// log-sum-exp of each row for the backward (as native/cpu/attention.cc, the dense reference these kernels are checked
// against on a GPU machine: src/core/cuda/check.ts).
//
// Keys: B batch, H heads, T = Tt + W^2 positions, D query / key width, Dv value width (both <= DM = kAttnMaxWidth = 64,
// the prior's head width, padded to DM in registers and shared memory), tile = 64 layout positions. (One compiled
// width keeps the build short on CI's 2 cores; a 128 instantiation is one more line in the dispatch below.)
// q, k (B, H, T, D), v (B, H, T, Dv), o, dq, dk, dv contiguous in sequence order; the kernels walk layout positions p and read / write sequence row seq(p) (the
// column mask's transposed layout, attention_plan.h), so the caller never transposes.
//
// Forward (grid (query tiles, B * H), one thread per query row): q row (scaled) and the output accumulator in
// registers; K and V tiles in shared memory (fp32, zero padded); scores in chunks of 16 keys: chunk max, rescale, add.
// Backward, FA2-style without atomics (deterministic): delta = rowsum(dO * O); dQ pass over query tiles (one thread per
// query row, walking that tile's key tiles); dK / dV pass over key tiles (one thread per key row, walking the query
// tiles that list it: the plan's by-key lists). Each recomputes P = exp(scale * q.k - lse).
// Arithmetic is fp32 FMA on CUDA cores for every element type (fp16 / bf16 inputs are widened on load); a tensor-core
// (mma) version of the same tile loop is the next step for speed (see native/cuda/README.md).
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "common.cuh"

#include "attention_kernels.cuh"

namespace dalle {
namespace cuda {
namespace {

using namespace attn_plan;

// ---- plans on the device, built once per (device, mask) and kept ----

std::mutex plan_mutex;
std::map<std::tuple<int, int32_t, int32_t, int32_t, int32_t>, std::pair<int32_t*, PlanDev>> plan_cache;

std::string device_plan(const MaskSpec& spec, PlanDev* out) {
  int dev = 0;
  std::string err = cuda_error("attention: cudaGetDevice", cudaGetDevice(&dev));
  if (!err.empty()) return err;
  const auto key = std::make_tuple(dev, spec.kind, spec.text_len, spec.grid, spec.kind == kConv ? spec.conv_kernel : 0);
  std::lock_guard<std::mutex> lock(plan_mutex);
  auto it = plan_cache.find(key);
  if (it != plan_cache.end()) {
    *out = it->second.second;
    return "";
  }
  const TilePlan plan = build_tile_plan(spec, kTile, kTile);
  std::vector<int32_t> all;
  const std::vector<int32_t>* parts[6] = {&plan.row_start, &plan.key_tile, &plan.full_q,
                                          &plan.col_start, &plan.query_tile, &plan.full_k};
  size_t offs[6];
  for (int i = 0; i < 6; i++) {
    offs[i] = all.size();
    all.insert(all.end(), parts[i]->begin(), parts[i]->end());
  }
  int32_t* buf = nullptr;
  err = cuda_error("attention: cudaMalloc (tile plan)", cudaMalloc(&buf, all.size() * sizeof(int32_t)));
  if (!err.empty()) return err;
  err = cuda_error("attention: copy tile plan",
                   cudaMemcpy(buf, all.data(), all.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  if (!err.empty()) {
    cudaFree(buf);
    return err;
  }
  const PlanDev pd{buf + offs[0], buf + offs[1], buf + offs[2], buf + offs[3], buf + offs[4], buf + offs[5]};
  plan_cache[key] = {buf, pd};
  *out = pd;
  return "";
}

std::string prepare(const char* op, const MaskSpec& spec, int64_t B, int64_t H, int64_t D, int64_t Dv, AttnLaunch* L,
                    PlanDev* plan) {
  const std::string bad = check_spec(spec);
  if (!bad.empty()) return std::string(op) + ": " + bad;
  *L = attention_launch(spec, B, H, D, Dv);
  if (!L->error.empty()) return std::string(op) + ": " + L->error;
  return device_plan(spec, plan);
}

template <class K>
std::string set_smem(const char* op, K kernel, int64_t bytes) {
  return cuda_error(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <class T, int DM>
std::string forward_t(const MaskSpec& spec, const AttnLaunch& L, const PlanDev& plan, const void* q, const void* k,
                      const void* v, void* o, float* lse, int32_t Tn, int32_t D, int32_t Dv, float scale) {
  std::string err = set_smem("attention forward", attn_fwd_kernel<T, DM>, L.smem_fwd);
  if (!err.empty()) return err;
  const dim3 grid((unsigned)L.grid_x, (unsigned)L.grid_y);
  attn_fwd_kernel<T, DM><<<grid, L.tile, L.smem_fwd>>>((const T*)q, (const T*)k, (const T*)v, (T*)o, lse, Tn, D, Dv,
                                                       scale, spec, plan);
  return launch_error("attention forward");
}

template <class T, int DM>
std::string backward_t(const MaskSpec& spec, const AttnLaunch& L, const PlanDev& plan, const void* q, const void* k,
                       const void* v, const void* o, const void* dout, const float* lse, void* dq, void* dk, void* dv,
                       float* delta, int64_t B, int64_t H, int32_t Tn, int32_t D, int32_t Dv, float scale) {
  const int64_t rows = B * H * Tn;
  attn_delta_kernel<T><<<(unsigned)elementwise_blocks(rows), 256>>>((const T*)o, (const T*)dout, delta, rows, Dv);
  std::string err = launch_error("attention backward (delta)");
  if (!err.empty()) return err;
  const dim3 grid((unsigned)L.grid_x, (unsigned)L.grid_y);
  err = set_smem("attention backward (dq)", attn_dq_kernel<T, DM>, L.smem_dq);
  if (!err.empty()) return err;
  attn_dq_kernel<T, DM><<<grid, L.tile, L.smem_dq>>>((const T*)q, (const T*)k, (const T*)v, (const T*)dout, lse, delta,
                                                     (T*)dq, Tn, D, Dv, scale, spec, plan);
  err = launch_error("attention backward (dq)");
  if (!err.empty()) return err;
  err = set_smem("attention backward (dk, dv)", attn_dkv_kernel<T, DM>, L.smem_dkv);
  if (!err.empty()) return err;
  attn_dkv_kernel<T, DM><<<grid, L.tile, L.smem_dkv>>>((const T*)q, (const T*)k, (const T*)v, (const T*)dout, lse,
                                                       delta, (T*)dk, (T*)dv, Tn, D, Dv, scale, spec, plan);
  return launch_error("attention backward (dk, dv)");
}

}  // namespace

std::string attention_forward(DType dt, const MaskSpec& spec, const void* q, const void* k, const void* v, void* o,
                              float* lse, int64_t B, int64_t H, int64_t D, int64_t Dv, float scale) {
  AttnLaunch L;
  PlanDev plan;
  std::string err = prepare("attention forward", spec, B, H, D, Dv, &L, &plan);
  if (!err.empty()) return err;
  const int32_t Tn = seq_len(spec);
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    return forward_t<T, kAttnMaxWidth>(spec, L, plan, q, k, v, o, lse, Tn, (int32_t)D, (int32_t)Dv, scale);
  });
}

std::string attention_backward(DType dt, const MaskSpec& spec, const void* q, const void* k, const void* v,
                               const void* o, const void* dout, const float* lse, void* dq, void* dk, void* dv,
                               float* delta, int64_t B, int64_t H, int64_t D, int64_t Dv, float scale) {
  AttnLaunch L;
  PlanDev plan;
  std::string err = prepare("attention backward", spec, B, H, D, Dv, &L, &plan);
  if (!err.empty()) return err;
  const int32_t Tn = seq_len(spec);
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    return backward_t<T, kAttnMaxWidth>(spec, L, plan, q, k, v, o, dout, lse, dq, dk, dv, delta, B, H, Tn, (int32_t)D,
                                        (int32_t)Dv, scale);
  });
}

}  // namespace cuda
}  // namespace dalle
