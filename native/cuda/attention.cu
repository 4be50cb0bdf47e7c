// Block-sparse attention for the prior's row, column and convolutional masks, forward and backward, flash-attention
// style: the (T, T) scores are never stored; each block walks the tile list of attention_plan.h (only tiles with an
// allowed pair are loaded; full tiles skip the mask test) with an online softmax, and the forward saves the
// log-sum-exp of each row for the backward (as native/cpu/attention.cc, the dense reference these kernels are checked
// against on a GPU machine: src/core/cuda/check.ts). And the KV-cache decode step of generation (attention_decode).
//
// Keys: B batch, H heads, T = Tt + W^2 positions, D query / key width, Dv value width (both <= DM = kAttnMaxWidth = 64,
// the prior's head width, padded to DM in registers and shared memory), tile = 64 layout positions. (One compiled
// width keeps the build short on CI's 2 cores; a 128 instantiation is one more line in the dispatch below.)
// q, k (B, H, T, D), v (B, H, T, Dv), o, dq, dk, dv contiguous in sequence order; the kernels walk layout positions p
// and read / write sequence row seq(p) (the column mask's transposed layout, attention_plan.h), so the caller never
// transposes.
//
// Dispatch by element type:
//   fp16 / bf16: tensor cores (attention_tc_kernels.cuh): 128 threads (4 warps of 16 rows) a 64-row tile, Q / K / V
//     tiles as 16-bit pairs in shared memory, S = Q K^T and O += P V (dQ, dK, dV alike) by mma.sync m16n8k16 with fp32
//     accumulators, P and dS rounded to the input type for their products, the online softmax in fp32.
//   fp32: CUDA-core FMA (attention_kernels.cuh), one thread per row: forward (grid (query tiles, B * H)) with the q
//     row (scaled) and the output accumulator in registers, K and V tiles in shared memory, scores in chunks of 16.
// Backward, FA2-style without atomics (deterministic) in both: delta = rowsum(dO * O); a dQ pass over query tiles
// (walking that tile's key tiles) and a dK / dV pass over key tiles (walking the query tiles that list it: the plan's
// by-key lists). Each recomputes P = exp(scale * q.k - lse).
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "common.cuh"

#include "attention_decode_kernels.cuh"
#include "attention_kernels.cuh"
#include "tensor_core.cuh"  // before the tensor-core kernels: mma_m16n8k16, shfl_xor, bits16
#include "attention_tc_kernels.cuh"

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

template <class T>
std::string forward_tc(const AttnLaunch& L, const MaskSpec& spec, const PlanDev& plan, const void* q, const void* k,
                       const void* v, void* o, float* lse, int32_t Tn, int32_t D, int32_t Dv, float scale) {
  std::string err = set_smem("attention forward (tensor cores)", attn_fwd_tc_kernel<T>, kTcSmemFwd);
  if (!err.empty()) return err;
  const dim3 grid((unsigned)L.grid_x, (unsigned)L.grid_y);
  attn_fwd_tc_kernel<T><<<grid, kTcThreads, kTcSmemFwd>>>((const T*)q, (const T*)k, (const T*)v, (T*)o, lse, Tn, D,
                                                           Dv, scale, spec, plan);
  return launch_error("attention forward (tensor cores)");
}

template <class T>
std::string backward_tc(const AttnLaunch& L, const MaskSpec& spec, const PlanDev& plan, const void* q, const void* k,
                        const void* v, const void* o, const void* dout, const float* lse, void* dq, void* dk, void* dv,
                        float* delta, int64_t B, int64_t H, int32_t Tn, int32_t D, int32_t Dv, float scale) {
  const int64_t rows = B * H * Tn;
  attn_delta_kernel<T><<<(unsigned)elementwise_blocks(rows), 256>>>((const T*)o, (const T*)dout, delta, rows, Dv);
  std::string err = launch_error("attention backward (delta)");
  if (!err.empty()) return err;
  const dim3 grid((unsigned)L.grid_x, (unsigned)L.grid_y);
  err = set_smem("attention backward (dq, tensor cores)", attn_dq_tc_kernel<T>, kTcSmemDq);
  if (!err.empty()) return err;
  attn_dq_tc_kernel<T><<<grid, kTcThreads, kTcSmemDq>>>((const T*)q, (const T*)k, (const T*)v, (const T*)dout, lse,
                                                         delta, (T*)dq, Tn, D, Dv, scale, spec, plan);
  err = launch_error("attention backward (dq, tensor cores)");
  if (!err.empty()) return err;
  err = set_smem("attention backward (dk, dv, tensor cores)", attn_dkv_tc_kernel<T>, kTcSmemDkv);
  if (!err.empty()) return err;
  attn_dkv_tc_kernel<T><<<grid, kTcThreads, kTcSmemDkv>>>((const T*)q, (const T*)k, (const T*)v, (const T*)dout, lse,
                                                           delta, (T*)dk, (T*)dv, Tn, D, Dv, scale, spec, plan);
  return launch_error("attention backward (dk, dv, tensor cores)");
}

}  // namespace

std::string attention_forward(DType dt, const MaskSpec& spec, const void* q, const void* k, const void* v, void* o,
                              float* lse, int64_t B, int64_t H, int64_t D, int64_t Dv, float scale) {
  AttnLaunch L;
  PlanDev plan;
  std::string err = prepare("attention forward", spec, B, H, D, Dv, &L, &plan);
  if (!err.empty()) return err;
  const int32_t Tn = seq_len(spec);
  switch (dt) {
    case kF32: return forward_t<float, kAttnMaxWidth>(spec, L, plan, q, k, v, o, lse, Tn, (int32_t)D, (int32_t)Dv, scale);
    case kF16: return forward_tc<__half>(L, spec, plan, q, k, v, o, lse, Tn, (int32_t)D, (int32_t)Dv, scale);
    case kBF16: return forward_tc<__nv_bfloat16>(L, spec, plan, q, k, v, o, lse, Tn, (int32_t)D, (int32_t)Dv, scale);
    default: return "attention forward: unsupported dtype " + std::to_string((int)dt) + " (f32, f16 or bf16)";
  }
}

std::string attention_backward(DType dt, const MaskSpec& spec, const void* q, const void* k, const void* v,
                               const void* o, const void* dout, const float* lse, void* dq, void* dk, void* dv,
                               float* delta, int64_t B, int64_t H, int64_t D, int64_t Dv, float scale) {
  AttnLaunch L;
  PlanDev plan;
  std::string err = prepare("attention backward", spec, B, H, D, Dv, &L, &plan);
  if (!err.empty()) return err;
  const int32_t Tn = seq_len(spec);
  const int32_t d = (int32_t)D, dv_ = (int32_t)Dv;
  switch (dt) {
    case kF32:
      return backward_t<float, kAttnMaxWidth>(spec, L, plan, q, k, v, o, dout, lse, dq, dk, dv, delta, B, H, Tn, d,
                                              dv_, scale);
    case kF16:
      return backward_tc<__half>(L, spec, plan, q, k, v, o, dout, lse, dq, dk, dv, delta, B, H, Tn, d, dv_, scale);
    case kBF16:
      return backward_tc<__nv_bfloat16>(L, spec, plan, q, k, v, o, dout, lse, dq, dk, dv, delta, B, H, Tn, d, dv_,
                                        scale);
    default: return "attention backward: unsupported dtype " + std::to_string((int)dt) + " (f32, f16 or bf16)";
  }
}

std::string attention_decode(DType dt, const MaskSpec& spec, const void* q, const int64_t q_strides[2], const void* k,
                             const int64_t k_strides[3], const void* v, const int64_t v_strides[3], void* o,
                             float* lse, int64_t B, int64_t H, int64_t position, int64_t D, int64_t Dv, float scale) {
  const char* op = "attention decode";
  const std::string bad = check_spec(spec);
  if (!bad.empty()) return std::string(op) + ": " + bad;
  const int64_t T = seq_len(spec);
  if (position < 0 || position >= T) {
    return std::string(op) + ": position " + std::to_string(position) + " is outside 0.." + std::to_string(T - 1);
  }
  if (D < 1 || Dv < 1 || D > kAttnMaxWidth || Dv > kAttnMaxWidth) {
    return std::string(op) + ": head widths D = " + std::to_string(D) + ", Dv = " + std::to_string(Dv) +
           " must be in 1.." + std::to_string(kAttnMaxWidth);
  }
  if (max_row_runs(spec) > kDecodeMaxRuns) {
    return std::string(op) + ": a conv kernel of " + std::to_string(spec.conv_kernel) + " gives more than " +
           std::to_string(kDecodeMaxRuns) + " runs of keys a row";
  }
  if (B < 0 || H < 0 || B * H > INT32_MAX) return std::string(op) + ": bad B = " + std::to_string(B) + ", H = " + std::to_string(H);
  if (k_strides[2] < D || v_strides[2] < Dv) {
    return std::string(op) + ": the caches' time strides (" + std::to_string(k_strides[2]) + ", " +
           std::to_string(v_strides[2]) + ") are below their row widths";
  }
  if (B * H == 0) return "";
  const DecodeStrides qs{q_strides[0], q_strides[1], 0}, ks{k_strides[0], k_strides[1], k_strides[2]},
      vs{v_strides[0], v_strides[1], v_strides[2]};
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    attn_decode_kernel<T><<<(unsigned)(B * H), kDecodeThreads>>>((const T*)q, qs, (const T*)k, ks, (const T*)v, vs,
                                                                  (T*)o, lse, (int32_t)H, (int32_t)position,
                                                                  (int32_t)D, (int32_t)Dv, scale, spec);
    return launch_error(op);
  });
}

}  // namespace cuda
}  // namespace dalle
