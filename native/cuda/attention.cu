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

namespace dalle {
namespace cuda {
namespace {

using namespace attn_plan;

constexpr int kTile = kAttnTile;  // 64: threads per block and tile side
constexpr int kChunk = 16;        // keys scored at a time in the forward

// Device copies of a TilePlan's arrays.
struct PlanDev {
  const int32_t* row_start;
  const int32_t* key_tile;
  const int32_t* full_q;
  const int32_t* col_start;
  const int32_t* query_tile;
  const int32_t* full_k;
};

// Rows of tile `tile` (layout positions) of src (T, width) into dst (kTile, stride) as fp32: zero past T and past width
// (up to DM), so dot products over DM need no bounds.
template <class T, int DM>
__device__ __forceinline__ void load_tile(float* dst, int stride, const T* __restrict__ src, int32_t tile, int32_t Tn,
                                          int32_t width, const MaskSpec& spec) {
  for (int idx = threadIdx.x; idx < kTile * DM; idx += blockDim.x) {
    const int r = idx / DM, d = idx % DM;
    const int32_t pos = tile * kTile + r;
    float val = 0.0f;
    if (pos < Tn && d < width) val = to_f32(src[(int64_t)layout_to_seq(spec, pos) * width + d]);
    dst[r * stride + d] = val;
  }
}

template <class T, int DM>
__global__ void __launch_bounds__(kTile) attn_fwd_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                        const T* __restrict__ v, T* __restrict__ o,
                                                        float* __restrict__ lse, int32_t Tn, int32_t D, int32_t Dv,
                                                        float scale, MaskSpec spec, PlanDev plan) {
  extern __shared__ float smem[];
  float* Ks = smem;               // (kTile, DM)
  float* Vs = smem + kTile * DM;  // (kTile, DM)
  const int tid = threadIdx.x, qt = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const T* qb = q + bh * Tn * D;
  const T* kb = k + bh * Tn * D;
  const T* vb = v + bh * Tn * Dv;
  const int32_t p = qt * kTile + tid;
  const bool valid = p < Tn;
  const int32_t si = valid ? layout_to_seq(spec, p) : 0;
  float qr[DM], acc[DM];
#pragma unroll
  for (int d = 0; d < DM; d++) {
    qr[d] = (valid && d < D) ? to_f32(qb[(int64_t)si * D + d]) * scale : 0.0f;
    acc[d] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int32_t e1 = plan.row_start[qt + 1];
  for (int32_t e = plan.row_start[qt]; e < e1; e++) {
    const int32_t kt = plan.key_tile[e];
    const bool full = plan.full_q[e] != 0;
    __syncthreads();  // every thread is done with the previous tile
    load_tile<T, DM>(Ks, DM, kb, kt, Tn, D, spec);
    load_tile<T, DM>(Vs, DM, vb, kt, Tn, Dv, spec);
    __syncthreads();
    if (!valid) continue;
    for (int j0 = 0; j0 < kTile; j0 += kChunk) {
      // The chunk's mask as bits, from a loop that is not unrolled (one copy of the mask test, not kChunk).
      uint32_t okbits = 0;
#pragma unroll 1
      for (int jj = 0; jj < kChunk; jj++) {
        const int32_t kp = kt * kTile + j0 + jj;
        okbits |= (uint32_t)(kp < Tn && (full || allowed_layout(spec, p, kp))) << jj;
      }
      if (okbits == 0) continue;
      float s[kChunk];
      float cmax = -INFINITY;
#pragma unroll
      for (int jj = 0; jj < kChunk; jj++) {
        const bool ok = (okbits >> jj) & 1u;
        const float* kr = Ks + (j0 + jj) * DM;
        float dot = 0.0f;
#pragma unroll
        for (int d = 0; d < DM; d++) dot = fmaf(qr[d], kr[d], dot);
        s[jj] = ok ? dot : -INFINITY;
        cmax = fmaxf(cmax, s[jj]);
      }
      if (cmax == -INFINITY) continue;
      const float mn = fmaxf(m, cmax);
      const float corr = expf(m - mn);  // 0 while m is -inf
      l *= corr;
#pragma unroll
      for (int d = 0; d < DM; d++) acc[d] *= corr;
#pragma unroll
      for (int jj = 0; jj < kChunk; jj++) {
        const float pj = expf(s[jj] - mn);  // 0 for masked keys
        l += pj;
        const float* vr = Vs + (j0 + jj) * DM;
#pragma unroll
        for (int d = 0; d < DM; d++) acc[d] = fmaf(pj, vr[d], acc[d]);
      }
      m = mn;
    }
  }
  if (!valid) return;
  // A row with no allowed key (impossible for these masks: the diagonal is always allowed) outputs zeros.
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  T* orow = o + (bh * Tn + si) * Dv;
#pragma unroll
  for (int d = 0; d < DM; d++) {
    if (d < Dv) orow[d] = from_f32<T>(acc[d] * inv);
  }
  lse[bh * Tn + si] = l > 0.0f ? m + logf(l) : -INFINITY;
}

// delta[row] = sum_e dO[row, e] * O[row, e], every (b, h, t) row.
template <class T>
__global__ void attn_delta_kernel(const T* __restrict__ o, const T* __restrict__ dout, float* __restrict__ delta,
                                  int64_t rows, int32_t Dv) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int32_t e = 0; e < Dv; e++) s = fmaf(to_f32(dout[r * Dv + e]), to_f32(o[r * Dv + e]), s);
    delta[r] = s;
  }
}

template <class T, int DM>
__global__ void __launch_bounds__(kTile) attn_dq_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                       const T* __restrict__ v, const T* __restrict__ dout,
                                                       const float* __restrict__ lse, const float* __restrict__ delta,
                                                       T* __restrict__ dq, int32_t Tn, int32_t D, int32_t Dv,
                                                       float scale, MaskSpec spec, PlanDev plan) {
  extern __shared__ float smem[];
  constexpr int P = DM + 1;             // padded row stride: thread t reading its own row hits bank (t + d) % 32
  float* Qo = smem;                     // (kTile, P) this block's q rows
  float* dOo = Qo + kTile * P;          // (kTile, P) this block's dO rows
  float* Ks = dOo + kTile * P;          // (kTile, DM)
  float* Vs = Ks + kTile * DM;          // (kTile, DM)
  const int tid = threadIdx.x, qt = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const T* kb = k + bh * Tn * D;
  const T* vb = v + bh * Tn * Dv;
  load_tile<T, DM>(Qo, P, q + bh * Tn * D, qt, Tn, D, spec);
  load_tile<T, DM>(dOo, P, dout + bh * Tn * Dv, qt, Tn, Dv, spec);
  __syncthreads();  // own rows are read below by their threads, written above by any thread
  const int32_t p = qt * kTile + tid;
  const bool valid = p < Tn;
  const int32_t si = valid ? layout_to_seq(spec, p) : 0;
  const float li = valid ? lse[bh * Tn + si] : -INFINITY;
  const float di = valid ? delta[bh * Tn + si] : 0.0f;
  const bool active = valid && li != -INFINITY;
  float acc[DM];
#pragma unroll
  for (int d = 0; d < DM; d++) acc[d] = 0.0f;
  const float* qo = Qo + tid * P;
  const float* go = dOo + tid * P;
  const int32_t e1 = plan.row_start[qt + 1];
  for (int32_t e = plan.row_start[qt]; e < e1; e++) {
    const int32_t kt = plan.key_tile[e];
    const bool full = plan.full_q[e] != 0;
    __syncthreads();
    load_tile<T, DM>(Ks, DM, kb, kt, Tn, D, spec);
    load_tile<T, DM>(Vs, DM, vb, kt, Tn, Dv, spec);
    __syncthreads();
    if (!active) continue;
    for (int j = 0; j < kTile; j++) {
      const int32_t kp = kt * kTile + j;
      if (kp >= Tn) break;
      if (!full && !allowed_layout(spec, p, kp)) continue;
      const float* kr = Ks + j * DM;
      const float* vr = Vs + j * DM;
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < DM; d++) {
        s = fmaf(qo[d], kr[d], s);
        dp = fmaf(go[d], vr[d], dp);
      }
      const float pr = expf(s * scale - li);
      const float ds = pr * (dp - di) * scale;
#pragma unroll
      for (int d = 0; d < DM; d++) acc[d] = fmaf(ds, kr[d], acc[d]);
    }
  }
  if (!valid) return;
  T* row = dq + (bh * Tn + si) * D;
#pragma unroll
  for (int d = 0; d < DM; d++) {
    if (d < D) row[d] = from_f32<T>(acc[d]);
  }
}

template <class T, int DM>
__global__ void __launch_bounds__(kTile) attn_dkv_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                        const T* __restrict__ v, const T* __restrict__ dout,
                                                        const float* __restrict__ lse, const float* __restrict__ delta,
                                                        T* __restrict__ dk, T* __restrict__ dv, int32_t Tn, int32_t D,
                                                        int32_t Dv, float scale, MaskSpec spec, PlanDev plan) {
  extern __shared__ float smem[];
  constexpr int P = DM + 1;
  float* Ko = smem;                // (kTile, P) this block's k rows
  float* Vo = Ko + kTile * P;      // (kTile, P) this block's v rows
  float* Qs = Vo + kTile * P;      // (kTile, DM)
  float* dOs = Qs + kTile * DM;    // (kTile, DM)
  float* Ls = dOs + kTile * DM;    // (kTile) lse of the query tile
  float* Ds = Ls + kTile;          // (kTile) delta of the query tile
  const int tid = threadIdx.x, kt = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const T* qb = q + bh * Tn * D;
  const T* gb = dout + bh * Tn * Dv;
  load_tile<T, DM>(Ko, P, k + bh * Tn * D, kt, Tn, D, spec);
  load_tile<T, DM>(Vo, P, v + bh * Tn * Dv, kt, Tn, Dv, spec);
  __syncthreads();
  const int32_t kp = kt * kTile + tid;
  const bool valid = kp < Tn;
  const int32_t sj = valid ? layout_to_seq(spec, kp) : 0;
  float ak[DM], av[DM];
#pragma unroll
  for (int d = 0; d < DM; d++) {
    ak[d] = 0.0f;
    av[d] = 0.0f;
  }
  const float* ko = Ko + tid * P;
  const float* vo = Vo + tid * P;
  const int32_t e1 = plan.col_start[kt + 1];
  for (int32_t e = plan.col_start[kt]; e < e1; e++) {
    const int32_t qt = plan.query_tile[e];
    const bool full = plan.full_k[e] != 0;
    __syncthreads();
    load_tile<T, DM>(Qs, DM, qb, qt, Tn, D, spec);
    load_tile<T, DM>(dOs, DM, gb, qt, Tn, Dv, spec);
    {
      const int32_t pos = qt * kTile + tid;
      const int32_t s = pos < Tn ? layout_to_seq(spec, pos) : 0;
      Ls[tid] = pos < Tn ? lse[bh * Tn + s] : -INFINITY;
      Ds[tid] = pos < Tn ? delta[bh * Tn + s] : 0.0f;
    }
    __syncthreads();
    if (!valid) continue;
    for (int i = 0; i < kTile; i++) {
      const int32_t qp = qt * kTile + i;
      if (qp >= Tn) break;
      if (!full && !allowed_layout(spec, qp, kp)) continue;
      const float li = Ls[i];
      if (li == -INFINITY) continue;
      const float* qr = Qs + i * DM;
      const float* gr = dOs + i * DM;
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < DM; d++) {
        s = fmaf(qr[d], ko[d], s);
        dp = fmaf(gr[d], vo[d], dp);
      }
      const float pr = expf(s * scale - li);
      const float ds = pr * (dp - Ds[i]) * scale;
#pragma unroll
      for (int d = 0; d < DM; d++) {
        av[d] = fmaf(pr, gr[d], av[d]);
        ak[d] = fmaf(ds, qr[d], ak[d]);
      }
    }
  }
  if (!valid) return;
  T* krow = dk + (bh * Tn + sj) * D;
  T* vrow = dv + (bh * Tn + sj) * Dv;
#pragma unroll
  for (int d = 0; d < DM; d++) {
    if (d < D) krow[d] = from_f32<T>(ak[d]);
    if (d < Dv) vrow[d] = from_f32<T>(av[d]);
  }
}

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
