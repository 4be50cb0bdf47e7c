// The im2col / col2im / bias pieces of conv2d (native/cpu/conv.cc's GEMM path; addon.cc runs the GEMM).
#include <cmath>

#include "common.cuh"
#include "block_reduce.cuh"

namespace dalle {
namespace cuda {
namespace {

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
