// The CUDA backend's elementwise and row kernels: casts, GELU, fused AdamW, the per-resblock scale-and-filter, layer
// norm, softmax cross-entropy, and the im2col / col2im / bias pieces of conv2d. Each mirrors the CPU kernel named in
// cuda_ops.h (same formulas, fp32 arithmetic); launch shapes come from attention_plan.h (elementwise_blocks,
// row_threads), which the CPU tests cover.
#include <cmath>
#include <type_traits>

#include "common.cuh"

namespace dalle {
namespace cuda {
namespace {

using attn_plan::elementwise_blocks;
using attn_plan::row_threads;

constexpr int kThreads = 256;

#define GRID_STRIDE(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

// ---- casts (bit patterns as native/cpu/copy.cc) ----

__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN (quiet)
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);                // round to nearest even
}

template <class S, class D>
__global__ void cast_kernel(D* dst, const S* src, int64_t n) {
  GRID_STRIDE(i, n) dst[i] = from_f32<D>(to_f32(src[i]));
}

__global__ void cast_f32_bf16_kernel(uint16_t* dst, const float* src, int64_t n) {
  GRID_STRIDE(i, n) dst[i] = f32_to_bf16_bits(src[i]);
}

// ---- gelu (tanh approximation, as x * sigmoid(2u)) ----

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluK = 0.044715f;

__device__ __forceinline__ float gelu_f(float x) {
  const float u = kGeluC * x * (1.0f + kGeluK * x * x);
  return x / (1.0f + expf(-2.0f * u));
}

__device__ __forceinline__ float gelu_grad_f(float x) {
  const float x2 = x * x;
  const float u = kGeluC * x * (1.0f + kGeluK * x2);
  const float s = 1.0f / (1.0f + expf(-2.0f * u));
  const float du = 2.0f * kGeluC * (1.0f + 3.0f * kGeluK * x2);
  return s + x * s * (1.0f - s) * du;
}

template <class T>
__global__ void gelu_fwd_kernel(const T* x, T* y, int64_t n) {
  GRID_STRIDE(i, n) y[i] = from_f32<T>(gelu_f(to_f32(x[i])));
}

template <class T>
__global__ void gelu_bwd_kernel(const T* x, const T* g, T* dx, int64_t n) {
  GRID_STRIDE(i, n) dx[i] = from_f32<T>(to_f32(g[i]) * gelu_grad_f(to_f32(x[i])));
}

// ---- AdamW ----

__global__ void adamw_kernel(int64_t n, float* p, const float* g, float* m, float* v, float lr, float b1, float b2,
                             float eps, float wd, float gs, float bc1, float bc2) {
  GRID_STRIDE(i, n) {
    const float gi = g[i] * gs;
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float update = (mi * bc1) / (sqrtf(vi * bc2) + eps);
    p[i] -= lr * (update + wd * p[i]);
  }
}

// ---- scale and filter ----

template <class T>
__global__ void scale_filter_kernel(const T* x, T* y, int64_t n, float alpha, unsigned long long* count) {
  unsigned int bad = 0;
  GRID_STRIDE(i, n) {
    const T v = from_f32<T>(to_f32(x[i]) * alpha);  // a 16-bit result may overflow where the f32 product did not
    const bool ok = isfinite(to_f32(v));
    bad += ok ? 0u : 1u;
    y[i] = ok ? v : from_f32<T>(0.0f);
  }
  // Every thread of the block reaches here (the loop has no early exit): one atomic per warp.
  for (int o = 16; o > 0; o >>= 1) bad += __shfl_xor_sync(0xffffffffu, bad, o);
  if ((threadIdx.x & 31) == 0 && bad) atomicAdd(count, (unsigned long long)bad);
}

// ---- block reductions (blockDim.x a multiple of 32, at most 1024) ----

template <class V>
__device__ __forceinline__ V warp_sum(V v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum over the block, returned to every thread. `red` is shared scratch of 32 values.
template <class V>
__device__ V block_sum(V v, V* red) {
  v = warp_sum(v);
  if (blockDim.x == 32) return v;
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[w] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : (V)0;
  return warp_sum(v);
}

__device__ float block_max(float v, float* red) {
  v = warp_max(v);
  if (blockDim.x == 32) return v;
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[w] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : -INFINITY;
  return warp_max(v);
}

// ---- layer norm: one block per row ----

template <class T>
__global__ void layer_norm_fwd_kernel(const T* x, const float* gain, const float* bias, T* y, float* mean, float* rstd,
                                      int64_t C, float eps) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  float s = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += to_f32(xr[j]);
  const float m = block_sum(s, red) / (float)C;
  float q = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    const float d = to_f32(xr[j]) - m;
    q += d * d;
  }
  const float var = block_sum(q, red) / (float)C;
  const float rs = 1.0f / sqrtf(var + eps);
  if (threadIdx.x == 0) {
    mean[r] = m;
    rstd[r] = rs;
  }
  T* yr = y + r * C;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) yr[j] = from_f32<T>((to_f32(xr[j]) - m) * rs * gain[j] + bias[j]);
}

template <class T>
__global__ void layer_norm_bwd_dx_kernel(const T* x, const float* gain, const float* mean, const float* rstd, const T* g,
                                         T* dx, int64_t C) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  const T* gr = g + r * C;
  const float m = mean[r], rs = rstd[r];
  float sa = 0, sc = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    const float dxh = to_f32(gr[j]) * gain[j];
    sa += dxh;
    sc += dxh * (to_f32(xr[j]) - m) * rs;
  }
  const float a = block_sum(sa, red) / (float)C;
  const float c = block_sum(sc, red) / (float)C;
  T* dr = dx + r * C;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    const float xh = (to_f32(xr[j]) - m) * rs;
    dr[j] = from_f32<T>(rs * (to_f32(gr[j]) * gain[j] - a - xh * c));
  }
}

// dgain, dbias: one thread per column, rows in order (deterministic; reads are coalesced across the columns).
template <class T>
__global__ void layer_norm_bwd_params_kernel(const T* x, const float* mean, const float* rstd, const T* g, float* dgain,
                                             float* dbias, int64_t R, int64_t C) {
  GRID_STRIDE(j, C) {
    float sg = 0, sb = 0;
    for (int64_t r = 0; r < R; r++) {
      const float gv = to_f32(g[r * C + j]);
      sg += gv * ((to_f32(x[r * C + j]) - mean[r]) * rstd[r]);
      sb += gv;
    }
    if (dgain) dgain[j] = sg;
    if (dbias) dbias[j] = sb;
  }
}

// ---- cross-entropy ----

struct TargetsDev {
  const int32_t* t;
  const float* w;
  bool has_ignore;
  int32_t ignore;
  __device__ bool ignored(int64_t n) const { return has_ignore && t[n] == ignore; }
  __device__ double weight(int64_t n) const { return w ? (double)w[n] : 1.0; }
};

// One block per row: lse and nll; a bad target sets *bad to row + 1 (the smallest such row wins).
__global__ void ce_rows_kernel(const float* x, int64_t V, TargetsDev tg, float* lse, float* nll,
                               unsigned long long* bad) {
  __shared__ float red[32];
  const int64_t n = blockIdx.x;
  if (tg.ignored(n)) {
    if (threadIdx.x == 0) {
      lse[n] = 0;
      nll[n] = 0;
    }
    return;
  }
  const int32_t t = tg.t[n];
  if (t < 0 || t >= V) {
    if (threadIdx.x == 0) atomicMin(bad, (unsigned long long)(n + 1));
    return;
  }
  const float* xr = x + n * V;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, xr[j]);
  m = block_max(m, red);
  float s = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(xr[j] - m);
  s = block_sum(s, red);
  if (threadIdx.x == 0) {
    const float l = m + logf(s);
    lse[n] = l;
    nll[n] = l - xr[t];
  }
}

// ws[0] = sum w * nll, ws[1] = sum w over rows not ignored, summed in a fixed order by one block.
__global__ void ce_totals_kernel(const float* nll, int64_t N, TargetsDev tg, double* ws) {
  __shared__ double red[32];
  double s = 0, d = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    if (tg.ignored(n)) continue;
    const double w = tg.weight(n);
    s += w * (double)nll[n];
    d += w;
  }
  s = block_sum(s, red);
  d = block_sum(d, red);
  if (threadIdx.x == 0) {
    ws[0] = s;
    ws[1] = d;
  }
}

__global__ void ce_loss_kernel(const double* ws, bool mean, float* out) {
  const double total = ws[0], denom = ws[1];
  out[0] = (float)(mean ? (denom != 0 ? total / denom : 0.0) : total);
}

__global__ void ce_bwd_kernel(const float* x, int64_t N, int64_t V, TargetsDev tg, bool mean, const float* lse,
                              const float* nll, const float* gp, float* dx, float* dw, const double* ws) {
  const double total = ws[0], denom = ws[1], g = gp[0];
  const double scale = mean ? (denom != 0 ? g / denom : 0.0) : g;
  const double loss = mean ? (denom != 0 ? total / denom : 0.0) : total;
  const int64_t n = blockIdx.x;
  const bool ign = tg.ignored(n);
  if (dw && threadIdx.x == 0) dw[n] = ign ? 0.0f : (float)(mean ? scale * ((double)nll[n] - loss) : g * (double)nll[n]);
  if (!dx) return;
  float* dr = dx + n * V;
  if (ign || scale == 0) {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dr[j] = 0.0f;
    return;
  }
  const float coef = (float)(tg.weight(n) * scale);
  const float l = lse[n];
  const int32_t t = tg.t[n];
  const float* xr = x + n * V;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const float p = expf(xr[j] - l) * coef;
    dr[j] = j == t ? p - coef : p;
  }
}

__global__ void ce_check_kernel(int64_t N, int64_t V, TargetsDev tg, unsigned long long* bad) {
  GRID_STRIDE(n, N) {
    if (tg.ignored(n)) continue;
    const int32_t t = tg.t[n];
    if (t < 0 || t >= V) atomicMin(bad, (unsigned long long)(n + 1));
  }
}

// ---- conv2d pieces ----

__global__ void im2col_kernel(const float* x, float* col, int64_t B, int64_t C, int64_t H, int64_t W, int64_t k) {
  const int64_t HW = H * W, kk = k * k, p = (k - 1) / 2;
  const int64_t total = B * C * kk * HW;
  GRID_STRIDE(e, total) {
    const int64_t hw = e % HW, tap = (e / HW) % (C * kk), b = e / (HW * C * kk);
    const int64_t c = tap / kk, kh = (tap / k) % k, kw = tap % k;
    const int64_t h = hw / W + kh - p, w = hw % W + kw - p;
    col[e] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((b * C + c) * H + h) * W + w] : 0.0f;
  }
}

// Gather form of the adjoint: each dx element sums the col entries that read it (taps in order, no atomics).
__global__ void col2im_kernel(const float* dcol, float* dx, int64_t B, int64_t C, int64_t H, int64_t W, int64_t k) {
  const int64_t HW = H * W, kk = k * k, p = (k - 1) / 2;
  const int64_t total = B * C * HW;
  GRID_STRIDE(e, total) {
    const int64_t w = e % W, h = (e / W) % H, c = (e / HW) % C, b = e / (HW * C);
    float s = 0;
    for (int64_t kh = 0; kh < k; kh++) {
      const int64_t oh = h - kh + p;  // the output row whose tap kh reads input row h
      if (oh < 0 || oh >= H) continue;
      for (int64_t kw = 0; kw < k; kw++) {
        const int64_t ow = w - kw + p;
        if (ow < 0 || ow >= W) continue;
        s += dcol[((b * C + c) * kk + kh * k + kw) * HW + oh * W + ow];
      }
    }
    dx[e] = s;
  }
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t B, int64_t Co, int64_t HW) {
  GRID_STRIDE(e, B * Co * HW) y[e] += bias[(e / HW) % Co];
}

// One block per output channel, images and pixels in a fixed order.
__global__ void bias_grad_kernel(const float* dy, float* db, int64_t B, int64_t Co, int64_t HW) {
  __shared__ float red[32];
  const int64_t co = blockIdx.x;
  float s = 0;
  for (int64_t b = 0; b < B; b++) {
    const float* d = dy + (b * Co + co) * HW;
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) s += d[i];
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) db[co] = s;
}

}  // namespace

// ---- launchers ----

std::string cast(void* dst, DType dd, const void* src, DType sd, int64_t n) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  if (sd == dd) return cuda_error("cast (copy)", cudaMemcpy(dst, src, n * dtype_bytes(sd), cudaMemcpyDeviceToDevice));
  if (sd == kF32 && dd == kBF16) {
    cast_f32_bf16_kernel<<<blocks, kThreads>>>((uint16_t*)dst, (const float*)src, n);
    return launch_error("cast f32 -> bf16");
  }
  return dispatch(sd, [&](auto* s_) {
    using S = std::remove_pointer_t<decltype(s_)>;
    return dispatch(dd, [&](auto* d_) {
      using D = std::remove_pointer_t<decltype(d_)>;
      cast_kernel<S, D><<<blocks, kThreads>>>((D*)dst, (const S*)src, n);
      return launch_error("cast");
    });
  });
}

std::string gelu_forward(DType dt, const void* x, void* y, int64_t n) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    gelu_fwd_kernel<T><<<blocks, kThreads>>>((const T*)x, (T*)y, n);
    return launch_error("gelu");
  });
}

std::string gelu_backward(DType dt, const void* x, const void* g, void* dx, int64_t n) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    gelu_bwd_kernel<T><<<blocks, kThreads>>>((const T*)x, (const T*)g, (T*)dx, n);
    return launch_error("gelu backward");
  });
}

std::string adamw(int64_t n, float* p, const float* g, float* m, float* v, float lr, float b1, float b2, float eps,
                  float wd, float gscale, float bc1, float bc2) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  adamw_kernel<<<blocks, kThreads>>>(n, p, g, m, v, lr, b1, b2, eps, wd, gscale, bc1, bc2);
  return launch_error("adamw");
}

std::string scale_filter(DType dt, const void* x, void* y, int64_t n, float alpha, unsigned long long* count) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    scale_filter_kernel<T><<<blocks, kThreads>>>((const T*)x, (T*)y, n, alpha, count);
    return launch_error("scaleFilter");
  });
}

std::string layer_norm_forward(DType dt, const void* x, const float* gain, const float* bias, void* y, float* mean,
                               float* rstd, int64_t R, int64_t C, float eps) {
  if (R == 0) return "";
  if (R > 2147483647) return "layerNorm: too many rows";
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    layer_norm_fwd_kernel<T><<<(unsigned)R, row_threads(C)>>>((const T*)x, gain, bias, (T*)y, mean, rstd, C, eps);
    return launch_error("layerNorm");
  });
}

std::string layer_norm_backward(DType dt, const void* x, const float* gain, const float* mean, const float* rstd,
                                const void* g, void* dx, float* dgain, float* dbias, int64_t R, int64_t C) {
  if (R == 0) {
    if (dgain) cudaMemset(dgain, 0, C * sizeof(float));
    if (dbias) cudaMemset(dbias, 0, C * sizeof(float));
    return launch_error("layerNorm backward");
  }
  if (R > 2147483647) return "layerNorm backward: too many rows";
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    if (dx) {
      layer_norm_bwd_dx_kernel<T><<<(unsigned)R, row_threads(C)>>>((const T*)x, gain, mean, rstd, (const T*)g, (T*)dx,
                                                                    C);
    }
    if (dgain || dbias) {
      layer_norm_bwd_params_kernel<T><<<elementwise_blocks(C), kThreads>>>((const T*)x, mean, rstd, (const T*)g, dgain,
                                                                          dbias, R, C);
    }
    return launch_error("layerNorm backward");
  });
}

namespace {
// The smallest bad row, or 0; copies one value back (synchronizes).
std::string check_bad_targets(const char* op, unsigned long long* bad_dev, const int32_t* targets, int64_t V,
                              bool has_ignore, int32_t ignore) {
  unsigned long long bad = 0;
  std::string e = cuda_error(op, cudaMemcpy(&bad, bad_dev, sizeof(bad), cudaMemcpyDeviceToHost));
  if (!e.empty()) return e;
  if (bad == ~0ull || bad == 0) return "";
  int32_t t = 0;
  cudaMemcpy(&t, targets + (bad - 1), sizeof(t), cudaMemcpyDeviceToHost);
  return std::string(op) + ": target " + std::to_string(t) + " at row " + std::to_string(bad - 1) +
         " is out of range for " + std::to_string(V) + " classes" +
         (has_ignore ? " (and is not the ignoreIndex " + std::to_string(ignore) + ")" : "");
}
}  // namespace

std::string cross_entropy_forward(const float* logits, int64_t N, int64_t V, const int32_t* targets, const float* weights,
                                  bool has_ignore, int32_t ignore, bool mean, float* out, float* lse, float* nll,
                                  double* ws) {
  const TargetsDev tg{targets, weights, has_ignore, ignore};
  unsigned long long* bad = (unsigned long long*)(ws + 2);
  std::string e = cuda_error("crossEntropy", cudaMemset(bad, 0xff, sizeof(unsigned long long)));
  if (!e.empty()) return e;
  if (N > 2147483647) return "crossEntropy: too many rows";
  if (N > 0) ce_rows_kernel<<<(unsigned)N, row_threads(V)>>>(logits, V, tg, lse, nll, bad);
  ce_totals_kernel<<<1, 1024>>>(nll, N, tg, ws);
  ce_loss_kernel<<<1, 1>>>(ws, mean, out);
  e = launch_error("crossEntropy");
  if (!e.empty()) return e;
  return check_bad_targets("crossEntropy", bad, targets, V, has_ignore, ignore);
}

std::string cross_entropy_backward(const float* logits, int64_t N, int64_t V, const int32_t* targets,
                                   const float* weights, bool has_ignore, int32_t ignore, bool mean, const float* lse,
                                   const float* nll, const float* g, float* dlogits, float* dweights, double* ws) {
  if (N == 0) return "";
  if (N > 2147483647) return "crossEntropy backward: too many rows";
  const TargetsDev tg{targets, weights, has_ignore, ignore};
  unsigned long long* bad = (unsigned long long*)(ws + 2);
  std::string e = cuda_error("crossEntropy backward", cudaMemset(bad, 0xff, sizeof(unsigned long long)));
  if (!e.empty()) return e;
  ce_check_kernel<<<elementwise_blocks(N), kThreads>>>(N, V, tg, bad);
  e = check_bad_targets("crossEntropy backward", bad, targets, V, has_ignore, ignore);
  if (!e.empty()) return e;
  ce_totals_kernel<<<1, 1024>>>(nll, N, tg, ws);
  ce_bwd_kernel<<<(unsigned)N, row_threads(V)>>>(logits, N, V, tg, mean, lse, nll, g, dlogits, dweights, ws);
  return launch_error("crossEntropy backward");
}

std::string im2col(const float* x, float* col, int64_t B, int64_t C, int64_t H, int64_t W, int64_t k) {
  const int64_t blocks = elementwise_blocks(B * C * k * k * H * W);
  if (blocks == 0) return "";
  im2col_kernel<<<blocks, kThreads>>>(x, col, B, C, H, W, k);
  return launch_error("im2col");
}

std::string col2im(const float* dcol, float* dx, int64_t B, int64_t C, int64_t H, int64_t W, int64_t k) {
  const int64_t blocks = elementwise_blocks(B * C * H * W);
  if (blocks == 0) return "";
  col2im_kernel<<<blocks, kThreads>>>(dcol, dx, B, C, H, W, k);
  return launch_error("col2im");
}

std::string add_channel_bias(float* y, const float* bias, int64_t B, int64_t Co, int64_t HW) {
  const int64_t blocks = elementwise_blocks(B * Co * HW);
  if (blocks == 0) return "";
  add_bias_kernel<<<blocks, kThreads>>>(y, bias, B, Co, HW);
  return launch_error("conv2d bias");
}

std::string channel_bias_grad(const float* dy, float* db, int64_t B, int64_t Co, int64_t HW) {
  if (Co == 0) return "";
  bias_grad_kernel<<<(unsigned)Co, kThreads>>>(dy, db, B, Co, HW);
  return launch_error("conv2d bias gradient");
}

}  // namespace cuda
}  // namespace dalle
