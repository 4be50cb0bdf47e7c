// Layer norm over the last axis, forward and backward (native/cpu/norm.cc): one block per row.
#include <cmath>
#include <type_traits>

#include "common.cuh"
#include "block_reduce.cuh"

namespace dalle {
namespace cuda {
namespace {

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

}  // namespace

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

}  // namespace cuda
}  // namespace dalle
