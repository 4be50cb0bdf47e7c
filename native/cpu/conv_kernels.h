// Leaf kernels of the direct convolution, one set per ISA (conv_avx512.cc, conv_avx2.cc), driven by conv.cc.
// Plain C-style declarations only: this header is included by the ISA translation units (see binding.gyp).
//
// Key: C = input channels of the convolution the kernel runs, Co = its output channels, k = kernel size (odd),
// p = (k - 1) / 2, Hp = H + 2p, Wp = W + 2p (the zero-padded image), T = C * k * k taps, tap t = (c * k + kh) * k + kw.
//
// Padded images: xp (C, Hp, Wp) followed by at least kConvSlack floats (the kernels read whole vectors past the end of
// a row; those lanes are never stored).
#pragma once
#include <cstdint>

namespace dalle {

enum : int { kConvSlack = 32 };

// Forward (and dx, as a correlation with flipped, transposed weights) of one image over output rows [h0, h1):
//   y[co][h][w] = bias[co] + sum_t wt(co, t) * xp[c][h + kh][w + kw]
// wb: weights packed in blocks of mr output channels: wb[(blk * T + t) * mr + m] = wt(blk * mr + m, t), zero-padded
// past Co. mr comes from conv_fwd_mr_<isa>(). Each output element is one chain of FMAs in tap order, so the result
// does not depend on how rows or channels are split between threads.
struct ConvFwdJob {
  const float* xp;    // (C, Hp, Wp) + slack
  const float* wb;    // (ceil(Co / mr), T, mr)
  const float* bias;  // (Co) or null
  float* y;           // (Co, H, W)
  int64_t C, Co, H, W, k;
  int64_t h0, h1;     // output rows of this job
  int64_t co0, co1;   // output channels of this job (co0 a multiple of mr)
  // (Co, H, W) like y, or null. Set: y = (gate > 0 ? sum : 0), the ReLU gradient gate of a fused input ReLU's dx
  // (gate = the conv's input before its ReLU); no bias then.
  const float* gate;
};

// Weight gradient of one tile: dw[co][t] for co in [co0, co0 + nco), taps of units [u0, u0 + nu) (a unit is one
// (c, kh) pair: its k taps kw = 0..k-1), summed over G images:
//   s = sum_g sum_h sum_w dy[g][co][h][w] * xp[g][c][h + kh][w + kw];  dw = accumulate ? dw + s : s
// Lanes run along w; each lane's chain and the final lane sum have a fixed order.
struct ConvDwJob {
  const float* xp;  // first image's padded input (C, Hp, Wp); image g at xp + g * xp_stride
  const float* dy;  // first image's (Co, H, W); image g at dy + g * dy_stride
  float* dw;        // (Co, T)
  int64_t xp_stride, dy_stride, G;
  int64_t C, Co, H, W, k;
  int64_t co0, nco, u0, nu;  // nco <= conv_dw_tile_co, nu <= conv_dw_tile_units
  int accumulate;
};

// Bias gradient: db[co] = sum_b sum_hw dy[b][co][hw] for co in [co0, co1), in a fixed order.
struct ConvDbJob {
  const float* dy;  // (B, Co, HW)
  float* db;
  int64_t B, Co, HW, co0, co1;
};

// Winograd F(2x2, 3x3) over strips [s0, s1) of one image (AVX-512 only; conv_winograd_avx512.cc): the forward (or
// dx) of a 3x3 convolution with H even and W = 16 (then H % 4 == 0) or W % 32 == 0. A strip is 16 tiles of 2x2
// outputs: for W % 32 == 0, strip s is tiles (ty, 16 sx + lane) with ty = s / (W / 32), sx = s % (W / 32); for W = 16,
// tile rows 2s (lanes 0-7) and 2s + 1 (lanes 8-15). An image has (H / 2) (W / 32) or H / 4 strips.
enum : int { kWinoStrips = 3 };  // strips per job at most
struct WinogradJob {
  const float* xp;     // the padded image (C, H + 2, W + 2) followed by kConvSlack floats
  const float* U;      // transformed weights, in blocks of 8 output channels: U[((cb * 16 + xi) * C + c) * 8 + m]
  const float* bias;   // (Co) or null
  const float* gate;   // (Co, H, W) or null: y = gate > 0 ? y : 0 (as ConvFwdJob::gate; no bias then)
  float* y;            // (Co, H, W)
  float* V;            // workspace: 16 * C * kWinoStrips * 16 floats
  float* M;            // workspace: 16 * 8 * kWinoStrips * 16 floats
  int64_t C, Co, H, W;
  int64_t s0, s1;      // strips of this job, s1 - s0 <= kWinoStrips
};
void conv3x3_winograd_avx512(const WinogradJob* job);

// The 1x1 weight gradient with lanes along input channels (AVX-512 only; conv_dw1x1_avx512.cc), for output channels
// [co0, co1) and input channels [c0, c1) (c0, c1 - c0 and HW multiples of 16): dw[co][c] = sum over images b and
// pixels p of dy[b][co][p] x[b][c][p] (ReLU(x) with relu), in that order, written (not accumulated) into dw (Co, C).
enum : int { kDw1x1Pixels = 128 };  // pixels per transposed block
struct ConvDw1x1Job {
  const float* x;   // (B, C, HW)
  const float* dy;  // (B, Co, HW)
  float* dw;        // (Co, C)
  float* xt;        // workspace: kDw1x1Pixels * (c1 - c0) floats
  int64_t B, C, Co, HW, c0, c1, co0, co1;
  int relu;
};
void conv_dw1x1_avx512(const ConvDw1x1Job* job);

// Tile sizes (depend on the ISA and k).
int conv_fwd_mr_avx512();
int conv_dw_tile_co_avx512(int64_t k);
int conv_dw_tile_units_avx512(int64_t k);
void conv_fwd_avx512(const ConvFwdJob* job);
void conv_dw_avx512(const ConvDwJob* job);
void conv_db_avx512(const ConvDbJob* job);

int conv_fwd_mr_avx2();
int conv_dw_tile_co_avx2(int64_t k);
int conv_dw_tile_units_avx2(int64_t k);
void conv_fwd_avx2(const ConvFwdJob* job);
void conv_dw_avx2(const ConvDwJob* job);
void conv_db_avx2(const ConvDbJob* job);

}  // namespace dalle
