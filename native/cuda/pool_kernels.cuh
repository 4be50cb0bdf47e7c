// Device code of the 2x2 max-pool (stride 2) and the nearest-neighbour 2x upsampling, forward and backward, NCHW f32
// (native/cpu/pool.cc: the same window order, tie and NaN rules and sum order, so the results are the same bits), free
// of the CUDA runtime: pool.cu launches it, emu/ops_emu.cc runs it on the CPU. H x W: the forward op's input image.
#pragma once
#include <cstdint>

#include "grid.cuh"

namespace dalle {
namespace cuda {
namespace {

// y, argmax (B*C, H/2, W/2); window order 0 (0, 0), 1 (0, 1), 2 (1, 0), 3 (1, 1); the first maximum wins, a NaN wins.
__global__ void maxpool2x2_fwd_kernel(const float* x, float* y, int32_t* argmax, int64_t planes, int64_t H, int64_t W) {
  const int64_t Ho = H / 2, Wo = W / 2;
  GRID_STRIDE(e, planes * Ho * Wo) {
    const int64_t j = e % Wo, i = (e / Wo) % Ho, pl = e / (Ho * Wo);
    const float* r0 = x + pl * H * W + 2 * i * W + 2 * j;
    const float v[4] = {r0[0], r0[1], r0[W], r0[W + 1]};
    float best = v[0];
    int32_t arg = 0;
    for (int32_t t = 1; t < 4; t++) {
      if (v[t] > best || (v[t] != v[t] && best == best)) {
        best = v[t];
        arg = t;
      }
    }
    y[e] = best;
    argmax[e] = arg;
  }
}

// dx (B*C, H, W), every element written: the window's argmax gets dy, the others 0.
__global__ void maxpool2x2_bwd_kernel(const float* dy, const int32_t* argmax, float* dx, int64_t planes, int64_t H,
                                      int64_t W) {
  const int64_t Ho = H / 2, Wo = W / 2;
  GRID_STRIDE(e, planes * H * W) {
    const int64_t w = e % W, h = (e / W) % H, pl = e / (H * W);
    const int64_t o = pl * Ho * Wo + (h / 2) * Wo + w / 2;
    const int32_t t = (int32_t)((h % 2) * 2 + w % 2);
    dx[e] = argmax[o] == t ? dy[o] : 0.0f;
  }
}

// y (B*C, 2H, 2W) = x repeated 2x2
__global__ void upsample2x_fwd_kernel(const float* x, float* y, int64_t planes, int64_t H, int64_t W) {
  const int64_t W2 = 2 * W;
  GRID_STRIDE(e, planes * 4 * H * W) {
    const int64_t w = e % W2, h = (e / W2) % (2 * H), pl = e / (4 * H * W);
    y[e] = x[pl * H * W + (h / 2) * W + w / 2];
  }
}

// dx[h][w] = (dy[2h][2w] + dy[2h][2w+1]) + (dy[2h+1][2w] + dy[2h+1][2w+1])
__global__ void upsample2x_bwd_kernel(const float* dy, float* dx, int64_t planes, int64_t H, int64_t W) {
  const int64_t W2 = 2 * W;
  GRID_STRIDE(e, planes * H * W) {
    const int64_t w = e % W, h = (e / W) % H, pl = e / (H * W);
    const float* r0 = dy + pl * 4 * H * W + 2 * h * W2 + 2 * w;
    const float* r1 = r0 + W2;
    dx[e] = (r0[0] + r0[1]) + (r1[0] + r1[1]);
  }
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
