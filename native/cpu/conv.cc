// conv2d (stride 1, "same" zero padding, odd square kernel) forward and backward, NCHW float32.
//
// Key: B batch, C = Cin, Co = Cout, H x W image, k kernel (odd), p = (k - 1) / 2, Hp = H + 2p, Wp = W + 2p,
// T = C * k * k taps (tap t = (c * k + kh) * k + kw, the inner layout of the weights (Co, C, k, k)), HW = H * W.
//
// Three implementations:
// - Winograd F(2x2, 3x3) (k = 3 forward and dx on AVX-512, H even, W = 16 or a multiple of 32;
//   conv_winograd_avx512.cc): 16 multiplies per 2x2 tile and channel pair instead of 36. On the dVAE's 3x3 shapes
//   (Zen 5, 2 threads) forward + dx of one step's nine 3x3 convolutions took 43 ms against the direct kernels' 57.
//   Its rounding differs from the direct form's by a few float ulps (the tests' tolerances scale with the fan-in).
// - direct (k = 3, 5, 7 on AVX-512 / AVX2; conv_simd.h): each thread zero-pads one image at a time into its own
//   buffer and runs register-tiled kernels on it, no im2col. The dVAE's convolutions have few channels (16-256), where
//   an im2col matrix would be 9x the image and make the step memory-bound.
//     forward: y = correlation of the padded x with w;  dx: correlation of the padded dy with w flipped and transposed;
//     dw: lanes along image columns, summed over groups of images.
// - GEMM (k = 1 always; any k on the portable ISA or when k > 7): im2col / col2im around sgemm (gemm.h).
//     forward: y[b] (Co, HW) = w (Co, T) @ col[b] (T, HW);  dx: col2im(w^T @ dy[b]);  dw = sum_b dy[b] @ col[b]^T.
// Determinism: every output element is computed by one thread in an order fixed by the shapes alone (how work is
// split between threads never changes an element's summation order), so results are bitwise identical for any thread
// count. The weight gradient sums images in order 0..B-1.
#include "conv.h"

#include <cstring>

#include "allocator.h"
#include "conv_kernels.h"
#include "cpu_features.h"
#include "error.h"
#include "gemm.h"
#include "napi_util.h"
#include "threadpool.h"

namespace dalle {
namespace {

// A workspace from the caching allocator, returned on scope exit (exceptions included).
struct Workspace {
  float* p = nullptr;
  size_t bytes = 0;
  explicit Workspace(size_t floats) : bytes(floats * sizeof(float)) {
    if (bytes) p = static_cast<float*>(cache_alloc(bytes));
  }
  ~Workspace() {
    if (p) cache_free(p, bytes);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
};

// The part [begin, end) of n items that thread i of n_threads takes: the same contiguous split as parallel_for.
inline void split(int64_t n, int i, int n_threads, int64_t* begin, int64_t* end) {
  int64_t chunk = (n + n_threads - 1) / n_threads;
  *begin = i * chunk < n ? i * chunk : n;
  *end = *begin + chunk < n ? *begin + chunk : n;
}

struct DirectKernels {
  int (*fwd_mr)();
  int (*dw_co)(int64_t);
  int (*dw_units)(int64_t);
  void (*fwd)(const ConvFwdJob*);
  void (*dw)(const ConvDwJob*);
  void (*db)(const ConvDbJob*);
};

// The direct kernels for this ISA and k, or null (then the GEMM path runs). `part`: 'f' forward / dx, 'w' the weight
// gradient (HW = H * W): a 1x1 forward is a plain GEMM, which packs its operands and beats reading many channel planes
// in place; the 1x1 weight gradient is faster direct on large images (measured: native/dev/conv, bench).
const DirectKernels* direct_kernels(int64_t k, char part = 'f', int64_t HW = 0) {
#if defined(DALLE_X86)
  static const DirectKernels avx512 = {conv_fwd_mr_avx512, conv_dw_tile_co_avx512, conv_dw_tile_units_avx512,
                                       conv_fwd_avx512,    conv_dw_avx512,         conv_db_avx512};
  static const DirectKernels avx2 = {conv_fwd_mr_avx2, conv_dw_tile_co_avx2, conv_dw_tile_units_avx2,
                                     conv_fwd_avx2,    conv_dw_avx2,         conv_db_avx2};
  if (k != 1 && k != 3 && k != 5 && k != 7) return nullptr;
  if (k == 1 && !(part == 'w' && HW >= 1024)) return nullptr;
  switch (active_isa()) {
    case Isa::Avx512: return &avx512;
    case Isa::Avx2: return &avx2;
    default: return nullptr;
  }
#else
  (void)k;
  return nullptr;
#endif
}

// ---- padding --------------------------------------------------------------------------------------------------------

// Channels [c0, c1) of one image x (C, H, W) into xp (C, Hp, Wp) with a zero border of p; with `relu`, ReLU(x).
void pad_channels(const float* x, int64_t H, int64_t W, int64_t p, int64_t c0, int64_t c1, float* xp,
                  bool relu = false) {
  const int64_t Hp = H + 2 * p, Wp = W + 2 * p;
  for (int64_t c = c0; c < c1; c++) {
    const float* src = x + c * H * W;
    float* dst = xp + c * Hp * Wp;
    memset(dst, 0, sizeof(float) * (p * Wp + p));  // top rows and the first row's left border
    for (int64_t h = 0; h < H; h++) {
      float* row = dst + (p + h) * Wp + p;
      if (relu) {
        const float* s = src + h * W;
        for (int64_t w = 0; w < W; w++) row[w] = s[w] > 0.0f ? s[w] : 0.0f;  // NaN -> 0, as the relu op
      } else {
        memcpy(row, src + h * W, sizeof(float) * W);
      }
      // right border of this row and left border of the next
      memset(row + W, 0, sizeof(float) * 2 * p);
    }
    memset(dst + (p + H) * Wp + p, 0, sizeof(float) * (p * Wp - p));  // bottom rows (the left border is written)
  }
}

// ---- weight packing for the direct kernels --------------------------------------------------------------------------

// Forward: wb[(blk * T + t) * mr + m] = w[blk * mr + m][t], zero past Co.
void pack_fwd(const float* w, int64_t Co, int64_t T, int64_t mr, float* wb) {
  const int64_t blocks = (Co + mr - 1) / mr;
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; blk++) {
      float* dst = wb + blk * T * mr;
      for (int64_t t = 0; t < T; t++)
        for (int64_t m = 0; m < mr; m++) {
          const int64_t co = blk * mr + m;
          dst[t * mr + m] = co < Co ? w[co * T + t] : 0.0f;
        }
    }
  });
}

// dx as a forward convolution of dy (Co channels in, C out) with w'(c, (co, kh, kw)) = w[co][c][k-1-kh][k-1-kw].
void pack_dx(const float* w, int64_t Co, int64_t C, int64_t k, int64_t mr, float* wb) {
  const int64_t kk = k * k, T = Co * kk, blocks = (C + mr - 1) / mr;
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; blk++) {
      float* dst = wb + blk * T * mr;
      for (int64_t co = 0; co < Co; co++)
        for (int64_t kh = 0; kh < k; kh++)
          for (int64_t kw = 0; kw < k; kw++) {
            const int64_t t = (co * k + kh) * k + kw;
            const int64_t src = (k - 1 - kh) * k + (k - 1 - kw);
            for (int64_t m = 0; m < mr; m++) {
              const int64_t c = blk * mr + m;
              dst[t * mr + m] = c < C ? w[(co * C + c) * kk + src] : 0.0f;
            }
          }
    }
  });
}

// ---- direct path ----------------------------------------------------------------------------------------------------

// y (B, Co, H, W) = correlation of x (B, C, H, W) (of ReLU(x) with `relu`) with packed weights wb (see ConvFwdJob);
// bias may be null; gate (B, Co, H, W) or null gates y (ConvFwdJob::gate).
void direct_forward(const DirectKernels& kern, const float* x, const float* wb, const float* bias, float* y, int64_t B,
                    int64_t C, int64_t Co, int64_t H, int64_t W, int64_t k, bool relu = false,
                    const float* gate = nullptr) {
  const int64_t p = k / 2, Hp = H + 2 * p, Wp = W + 2 * p;
  const bool copy = p > 0 || relu;  // k = 1 reads the input in place unless it needs its ReLU
  const int64_t img = C * Hp * Wp + kConvSlack;
  const int threads = num_threads();
  // Bands of output rows: a band's input rows should stay in L2 across the channel blocks (~256 KiB), and there
  // should be a few items per thread when the batch is small. Neither choice changes any result.
  int64_t band = (256 * 1024 / 4) / (C * Wp) - (k - 1);
  if (band < 1) band = 1;
  if (band > H) band = H;
  int64_t nb = (H + band - 1) / band;
  if (B * nb < 4 * threads) {
    nb = (4 * threads + B - 1) / B;
    if (nb > H) nb = H;
  }
  band = (H + nb - 1) / nb;
  nb = (H + band - 1) / band;
  const int64_t items = B * nb;
  Workspace ws(copy ? (size_t)img * threads : 0);
  parallel_run([&](int ti, int tn) {
    int64_t i0, i1;
    split(items, ti, tn, &i0, &i1);
    float* xp = ws.p + (size_t)img * ti;
    int64_t padded = -1;
    for (int64_t it = i0; it < i1; it++) {
      const int64_t b = it / nb, h0 = (it % nb) * band, h1 = h0 + band < H ? h0 + band : H;
      const float* src = x + b * C * H * W;
      if (copy && b != padded) {
        pad_channels(src, H, W, p, 0, C, xp, relu);
        memset(xp + C * Hp * Wp, 0, sizeof(float) * kConvSlack);
        padded = b;
      }
      ConvFwdJob job{copy ? xp : src, wb, bias, y + b * Co * H * W, C, Co, H, W, k, h0, h1, 0, Co,
                     gate ? gate + b * Co * H * W : nullptr};
      kern.fwd(&job);
    }
  });
}

void direct_dw(const DirectKernels& kern, const float* x, const float* dy, float* dw, int64_t B, int64_t C,
               int64_t Co, int64_t H, int64_t W, int64_t k, bool relu = false) {
  const int64_t p = k / 2, Hp = H + 2 * p, Wp = W + 2 * p, HW = H * W;
  const bool copy = p > 0 || relu;  // k = 1 reads the input in place unless it needs its ReLU
  const int64_t img = C * Hp * Wp + kConvSlack;
  const int64_t U = kern.dw_units(k), MR = kern.dw_co(k);
  const int64_t units = C * k, ublocks = (units + U - 1) / U, cblocks = (Co + MR - 1) / MR;
  // Images per group: the lane sums close once per group (fixed by the shapes, never by the thread count).
  int64_t G = 2048 / HW;
  if (G < 1) G = 1;
  if (G > B) G = B;
  // Tiles in chunks of output channels whose dy (of a group) stays in L2 (~256 KiB) while every unit-block runs over
  // it; within a chunk, unit-block major. (Sweeping all of dy once per unit-block reread it from L3: 2 MiB per unit at
  // Co 256, 16 x 16.) The order never changes a result: each tile owns its dw elements.
  int64_t chunk = (256 * 1024) / (G * HW * MR * (int64_t)sizeof(float));
  if (chunk < 1) chunk = 1;
  if (chunk > cblocks) chunk = cblocks;
  const int64_t tiles = ublocks * cblocks;
  auto tile_at = [&](int64_t t, int64_t* ub, int64_t* cb) {
    const int64_t ch = t / (ublocks * chunk), rem = t % (ublocks * chunk);
    const int64_t n_in = cblocks - ch * chunk < chunk ? cblocks - ch * chunk : chunk;
    *ub = rem / n_in;
    *cb = ch * chunk + rem % n_in;
  };
  const int threads = num_threads();
  Workspace ws(copy ? (size_t)img * G * threads : 0);
  parallel_run([&](int ti, int tn) {
    int64_t t0, t1;
    split(tiles, ti, tn, &t0, &t1);
    if (t0 >= t1) return;
    float* xp = copy ? ws.p + (size_t)img * G * ti : nullptr;
    // The input channels this thread's tiles read.
    int64_t ub_lo = ublocks, ub_hi = -1;
    for (int64_t t = t0; t < t1; t++) {
      int64_t ub, cb;
      tile_at(t, &ub, &cb);
      if (ub < ub_lo) ub_lo = ub;
      if (ub > ub_hi) ub_hi = ub;
    }
    const int64_t c0 = ub_lo * U / k;
    const int64_t last_unit = (ub_hi + 1) * U < units ? (ub_hi + 1) * U - 1 : units - 1;
    const int64_t c1 = last_unit / k + 1;
    for (int64_t g0 = 0; g0 < B; g0 += G) {
      const int64_t gn = B - g0 < G ? B - g0 : G;
      if (copy) {
        for (int64_t g = 0; g < gn; g++) pad_channels(x + (g0 + g) * C * HW, H, W, p, c0, c1, xp + g * img, relu);
      }
      for (int64_t t = t0; t < t1; t++) {
        int64_t ub, cb;
        tile_at(t, &ub, &cb);
        const int64_t u0 = ub * U, co0 = cb * MR;
        ConvDwJob job{copy ? xp : x + g0 * C * HW, dy + g0 * Co * HW, dw, copy ? img : C * HW, Co * HW, gn, C, Co,
                      H, W, k, co0, Co - co0 < MR ? Co - co0 : MR, u0, units - u0 < U ? units - u0 : U, g0 > 0};
        kern.dw(&job);
      }
    }
  });
}

void bias_grad(const DirectKernels* kern, const float* dy, float* db, int64_t B, int64_t Co, int64_t HW) {
  parallel_for(Co, 1, [&](int64_t c0, int64_t c1) {
    if (kern) {
      ConvDbJob job{dy, db, B, Co, HW, c0, c1};
      kern->db(&job);
      return;
    }
    for (int64_t co = c0; co < c1; co++) {  // 8 partial sums in a fixed order
      float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t b = 0; b < B; b++) {
        const float* q = dy + (b * Co + co) * HW;
        int64_t i = 0;
        for (; i + 8 <= HW; i += 8)
          for (int j = 0; j < 8; j++) s[j] += q[i + j];
        for (; i < HW; i++) s[i % 8] += q[i];
      }
      db[co] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    }
  });
}

// ---- Winograd path (3x3 forward and dx on AVX-512) ------------------------------------------------------------------

// Whether a 3x3 forward or dx of this image size runs as Winograd F(2x2, 3x3) (conv_winograd_avx512.cc): AVX-512, H
// even, and W a multiple of 32 or W = 16 with H a multiple of 4 (the strips of 16 tiles; other sizes run direct).
// Measured against the direct kernels on the dVAE's shapes: see native/dev/conv/README.md.
bool winograd_shape(int64_t k, int64_t H, int64_t W) {
#if defined(DALLE_X86) && !defined(CONV_NO_WINOGRAD)
  return k == 3 && active_isa() == Isa::Avx512 && H % 2 == 0 && (W % 32 == 0 || (W == 16 && H % 4 == 0));
#else
  (void)k, (void)H, (void)W;
  return false;
#endif
}

// Transformed weights U = G g G^T for every (output o, input i) pair of the convolution run, in blocks of 8 outputs
// (WinogradJob::U; zero past the last output). The forward runs w as it is (O = Co, I = C); dx runs the correlation
// of dy with w flipped and transposed: g(o = c, i = co) = w[co][c] rotated by 180 degrees (O = C, I = Co).
// Each U element is computed in double and rounded once.
void winograd_weights(const float* w, int64_t Co, int64_t C, bool for_dx, float* U) {
  const int64_t O = for_dx ? C : Co, I = for_dx ? Co : C, blocks = (O + 7) / 8;
  memset(U, 0, sizeof(float) * (size_t)(blocks * 16 * I * 8));
  parallel_for(O, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; o++)
      for (int64_t i = 0; i < I; i++) {
        double g[3][3], gg[4][3];
        for (int kh = 0; kh < 3; kh++)
          for (int kw = 0; kw < 3; kw++)
            g[kh][kw] = for_dx ? w[(i * C + o) * 9 + (2 - kh) * 3 + (2 - kw)] : w[(o * C + i) * 9 + kh * 3 + kw];
        for (int q = 0; q < 3; q++) {  // G g: rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2
          gg[0][q] = g[0][q];
          gg[1][q] = 0.5 * (g[0][q] + g[1][q] + g[2][q]);
          gg[2][q] = 0.5 * (g[0][q] - g[1][q] + g[2][q]);
          gg[3][q] = g[2][q];
        }
        for (int r = 0; r < 4; r++) {  // (G g) G^T, row by row
          const double a = gg[r][0], b = gg[r][1], c = gg[r][2];
          const double u[4] = {a, 0.5 * (a + b + c), 0.5 * (a - b + c), c};
          for (int q = 0; q < 4; q++) U[(((o / 8) * 16 + 4 * r + q) * I + i) * 8 + o % 8] = (float)u[q];
        }
      }
  });
}

// y (B, O, H, W) = the 3x3 correlation of x (B, I, H, W) (of ReLU(x) with `relu`) with transformed weights U, + bias;
// gate (B, O, H, W) or null gates y (ConvFwdJob::gate). Jobs are kWinoStrips strips of one image with every output
// channel; a thread pads each image it works on once.
void winograd_forward(const float* x, const float* U, const float* bias, float* y, int64_t B, int64_t I, int64_t O,
                      int64_t H, int64_t W, bool relu, const float* gate) {
#if defined(DALLE_X86)
  const int64_t Hp = H + 2, Wp = W + 2, HW = H * W;
  const int64_t strips = W == 16 ? H / 4 : (H / 2) * (W / 32);
  const int64_t per_image = (strips + kWinoStrips - 1) / kWinoStrips, items = B * per_image;
  const int64_t img = I * Hp * Wp + kConvSlack;
  const int64_t v_floats = 16 * I * kWinoStrips * 16, m_floats = 16 * 8 * kWinoStrips * 16;
  const int threads = num_threads();
  Workspace ws((size_t)(img + v_floats + m_floats) * threads);
  parallel_run([&](int ti, int tn) {
    int64_t i0, i1;
    split(items, ti, tn, &i0, &i1);
    float* xp = ws.p + (size_t)(img + v_floats + m_floats) * ti;
    int64_t padded = -1;
    for (int64_t it = i0; it < i1; it++) {
      const int64_t b = it / per_image, s0 = (it % per_image) * kWinoStrips;
      if (b != padded) {
        pad_channels(x + b * I * HW, H, W, 1, 0, I, xp, relu);
        memset(xp + I * Hp * Wp, 0, sizeof(float) * kConvSlack);
        padded = b;
      }
      WinogradJob job{xp, U, bias, gate ? gate + b * O * HW : nullptr, y + b * O * HW, xp + img, xp + img + v_floats,
                      I, O, H, W, s0, s0 + kWinoStrips < strips ? s0 + kWinoStrips : strips};
      conv3x3_winograd_avx512(&job);
    }
  });
#else
  (void)x, (void)U, (void)bias, (void)y, (void)B, (void)I, (void)O, (void)H, (void)W, (void)relu, (void)gate;
#endif
}

// ---- 1x1 weight gradient, lanes along channels (AVX-512) -------------------------------------------------------------

// Whether the 1x1 weight gradient runs conv_dw1x1_avx512: input channels and pixels in whole vectors, and enough of
// both sides. Measured on the dVAE's shapes (native/dev/conv, 2 threads, rounds alternated), against the pixel-lane
// kernel (64 and 32 px) or the GEMM (16 px): 256->128 @32 5.3-5.8 -> 4.0-4.2 ms, 1024->128 @16 4.5-5.3 -> 4.0-4.5,
// 128->64 @64 6.0-7.1 -> 5.8-6.3, 256->1024 @16 7.3-8.0 -> 7.1-7.8, 64->128 @32 1.3-1.5 -> 1.3; slower where the
// transposes are shared by few output channels or few pixels (128->16 @64 1.7 -> 4.1, 16->64 @64 1.0 -> 1.9,
// 128->256 @16 0.87 -> 1.01), which keep the other kernels.
bool dw1x1_lanes(int64_t k, int64_t C, int64_t Co, int64_t HW) {
#if defined(DALLE_X86) && !defined(CONV_NO_DW1X1_LANES)
  return k == 1 && active_isa() == Isa::Avx512 && C % 16 == 0 && HW % 16 == 0 && C >= 64 && Co >= 64 &&
         C * HW >= 65536;
#else
  (void)k, (void)C, (void)Co, (void)HW;
  return false;
#endif
}

// dw (Co, C) of a 1x1 convolution of x (B, C, HW) (of ReLU(x) with relu). Units of work: ranges of 64 input channels
// times ranges of output channels (split so there are at least two units per thread); each unit owns its dw elements.
void dw1x1_forward(const float* x, const float* dy, float* dw, int64_t B, int64_t C, int64_t Co, int64_t HW,
                   bool relu) {
#if defined(DALLE_X86)
  const int threads = num_threads();
  const int64_t c_ranges = (C + 63) / 64;
  int64_t co_parts = threads / c_ranges;
  if (co_parts > (Co + 5) / 6) co_parts = (Co + 5) / 6;
  if (co_parts < 1) co_parts = 1;
  const int64_t co_step = (Co + co_parts - 1) / co_parts, units = c_ranges * co_parts;
  Workspace ws((size_t)kDw1x1Pixels * 64 * threads);
  parallel_run([&](int ti, int tn) {
    int64_t u0, u1;
    split(units, ti, tn, &u0, &u1);
    for (int64_t u = u0; u < u1; u++) {
      const int64_t cr = u / co_parts, cp = u % co_parts;
      const int64_t c0 = cr * 64, c1 = c0 + 64 < C ? c0 + 64 : C;
      const int64_t co0 = cp * co_step, co1 = co0 + co_step < Co ? co0 + co_step : Co;
      if (co0 >= co1) continue;
      ConvDw1x1Job job{x, dy, dw, ws.p + (size_t)kDw1x1Pixels * 64 * ti, B, C, Co, HW, c0, c1, co0, co1, relu ? 1 : 0};
      conv_dw1x1_avx512(&job);
    }
  });
#else
  (void)x, (void)dy, (void)dw, (void)B, (void)C, (void)Co, (void)HW, (void)relu;
#endif
}

// ---- GEMM path ------------------------------------------------------------------------------------------------------

// col (T, HW): col[(c, kh, kw)][h * W + w] = x[c][h + kh - p][w + kw - p], zero outside.
void im2col(const float* x, int64_t C, int64_t H, int64_t W, int64_t k, float* col) {
  const int64_t p = k / 2, HW = H * W;
  for (int64_t c = 0; c < C; c++)
    for (int64_t kh = 0; kh < k; kh++)
      for (int64_t kw = 0; kw < k; kw++) {
        float* dst = col + ((c * k + kh) * k + kw) * HW;
        for (int64_t h = 0; h < H; h++) {
          const int64_t hi = h + kh - p;
          float* d = dst + h * W;
          if (hi < 0 || hi >= H) {
            memset(d, 0, sizeof(float) * W);
            continue;
          }
          const float* s = x + (c * H + hi) * W;
          for (int64_t w = 0; w < W; w++) {
            const int64_t wi = w + kw - p;
            d[w] = (wi >= 0 && wi < W) ? s[wi] : 0.0f;
          }
        }
      }
}

// dx (C, H, W) = sum over taps of dcol scattered back (the adjoint of im2col), taps in order.
void col2im(const float* col, int64_t C, int64_t H, int64_t W, int64_t k, float* dx) {
  const int64_t p = k / 2, HW = H * W;
  memset(dx, 0, sizeof(float) * C * HW);
  for (int64_t c = 0; c < C; c++)
    for (int64_t kh = 0; kh < k; kh++)
      for (int64_t kw = 0; kw < k; kw++) {
        const float* src = col + ((c * k + kh) * k + kw) * HW;
        for (int64_t h = 0; h < H; h++) {
          const int64_t hi = h + kh - p;
          if (hi < 0 || hi >= H) continue;
          float* d = dx + (c * H + hi) * W;
          const float* s = src + h * W;
          for (int64_t w = 0; w < W; w++) {
            const int64_t wi = w + kw - p;
            if (wi >= 0 && wi < W) d[wi] += s[w];
          }
        }
      }
}

void add_bias(float* y, const float* bias, int64_t B, int64_t Co, int64_t HW) {
  parallel_for(B * Co, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float bv = bias[r % Co];
      float* q = y + r * HW;
      for (int64_t i = 0; i < HW; i++) q[i] += bv;
    }
  });
}

void gemm_forward(const float* x, const float* w, const float* bias, float* y, int64_t B, int64_t C, int64_t Co,
                  int64_t H, int64_t W, int64_t k) {
  const int64_t HW = H * W, T = C * k * k;
  if (k == 1) {
    sgemm_batched_shared_a(B, false, Co, HW, C, 1.0f, w, C, x, HW, C * HW, 0.0f, y, HW, Co * HW);
  } else {
    // One image per thread at a time; each image's GEMM runs on its thread alone (same result as a threaded one).
    const int threads = num_threads();
    Workspace ws((size_t)T * HW * threads);
    parallel_run([&](int ti, int tn) {
      int64_t b0, b1;
      split(B, ti, tn, &b0, &b1);
      float* col = ws.p + (size_t)T * HW * ti;
      for (int64_t b = b0; b < b1; b++) {
        im2col(x + b * C * HW, C, H, W, k, col);
        sgemm(false, false, Co, HW, T, 1.0f, w, T, col, HW, 0.0f, y + b * Co * HW, HW);
      }
    });
  }
  if (bias) add_bias(y, bias, B, Co, HW);
}

void gemm_dx(const float* w, const float* dy, float* dx, int64_t B, int64_t C, int64_t Co, int64_t H, int64_t W,
             int64_t k) {
  const int64_t HW = H * W, T = C * k * k;
  if (k == 1) {
    sgemm_batched_shared_a(B, true, C, HW, Co, 1.0f, w, C, dy, HW, Co * HW, 0.0f, dx, HW, C * HW);
    return;
  }
  const int threads = num_threads();
  Workspace ws((size_t)T * HW * threads);
  parallel_run([&](int ti, int tn) {
    int64_t b0, b1;
    split(B, ti, tn, &b0, &b1);
    float* col = ws.p + (size_t)T * HW * ti;
    for (int64_t b = b0; b < b1; b++) {
      sgemm(true, false, T, HW, Co, 1.0f, w, T, dy + b * Co * HW, HW, 0.0f, col, HW);
      col2im(col, C, H, W, k, dx + b * C * HW);
    }
  });
}

// dw (Co, T) = sum_b dy[b] (Co, HW) @ col[b]^T, images in order.
void gemm_dw(const float* x, const float* dy, float* dw, int64_t B, int64_t C, int64_t Co, int64_t H, int64_t W,
             int64_t k) {
  const int64_t HW = H * W, T = C * k * k;
  Workspace ws(k == 1 ? 0 : (size_t)T * HW);
  for (int64_t b = 0; b < B; b++) {
    const float* col = x + b * C * HW;
    if (k != 1) {
      const float* xb = x + b * C * HW;
      parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
        im2col(xb + c0 * HW, c1 - c0, H, W, k, ws.p + c0 * k * k * HW);
      });
      col = ws.p;
    }
    sgemm(false, true, Co, T, HW, 1.0f, dy + b * Co * HW, HW, col, HW, b == 0 ? 0.0f : 1.0f, dw, T);
  }
}

void check_conv(const char* op, int64_t B, int64_t C, int64_t Co, int64_t H, int64_t W, int64_t k) {
  int64_t xs[4] = {B, C, H, W}, ws[4] = {Co, C, k, k};
  DALLE_CHECK(B > 0 && C > 0 && Co > 0 && H > 0 && W > 0, op,
              "dimensions must be positive: x %s, w %s", shape_str(xs, 4).c_str(), shape_str(ws, 4).c_str());
  DALLE_CHECK(k > 0 && k % 2 == 1, op, "kernel size must be odd and positive, got k = %lld (w %s)", (long long)k,
              shape_str(ws, 4).c_str());
  DALLE_CHECK(B * C * H * W < (int64_t(1) << 40) && B * Co * H * W < (int64_t(1) << 40) && Co * C * k * k < (int64_t(1) << 40),
              op, "tensor too large: x %s, w %s", shape_str(xs, 4).c_str(), shape_str(ws, 4).c_str());
}

// x (n floats) -> ReLU(x) in a workspace, for the GEMM path (which reads its operands in place).
void relu_copy(const float* x, int64_t n, float* out) {
  parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) out[i] = x[i] > 0.0f ? x[i] : 0.0f;
  });
}

// dx *= (x > 0), in place (the GEMM path's dx of a fused input ReLU).
void relu_gate(const float* x, int64_t n, float* dx) {
  parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) dx[i] = x[i] > 0.0f ? dx[i] : 0.0f;
  });
}

}  // namespace

void conv2d_forward(const float* x, const float* w, const float* bias, float* y, int64_t B, int64_t Cin, int64_t Cout,
                    int64_t H, int64_t W, int64_t k, bool relu_in) {
  check_conv("conv2dForward", B, Cin, Cout, H, W, k);
  if (winograd_shape(k, H, W)) {
    Workspace U((size_t)((Cout + 7) / 8) * 16 * Cin * 8);
    winograd_weights(w, Cout, Cin, false, U.p);
    winograd_forward(x, U.p, bias, y, B, Cin, Cout, H, W, relu_in, nullptr);
    return;
  }
  const DirectKernels* kern = direct_kernels(k);
  if (!kern) {
    // 1x1: the strip GEMM applies the ReLU to each packed strip of x and adds the bias to each strip of y while they
    // are in cache (no ReLU copy of x, no bias pass over y), where it runs
    StripExtras extras;
    extras.relu_b = relu_in;
    extras.bias = bias;
    if (k == 1 && sgemm_batched_shared_a_strips(B, false, Cout, H * W, Cin, 1.0f, w, Cin, x, H * W, Cin * H * W, 0.0f,
                                                y, H * W, Cout * H * W, extras)) {
      return;
    }
    Workspace xr(relu_in ? (size_t)(B * Cin * H * W) : 0);
    if (relu_in) relu_copy(x, B * Cin * H * W, xr.p);
    gemm_forward(relu_in ? xr.p : x, w, bias, y, B, Cin, Cout, H, W, k);
    return;
  }
  const int64_t mr = kern->fwd_mr(), T = Cin * k * k;
  Workspace wb((size_t)((Cout + mr - 1) / mr) * mr * T);
  pack_fwd(w, Cout, T, mr, wb.p);
  direct_forward(*kern, x, wb.p, bias, y, B, Cin, Cout, H, W, k, relu_in);
}

void conv2d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db, int64_t B,
                     int64_t Cin, int64_t Cout, int64_t H, int64_t W, int64_t k, bool relu_in) {
  check_conv("conv2dBackward", B, Cin, Cout, H, W, k);
  const DirectKernels* kern = direct_kernels(k);
  const DirectKernels* kern_w = direct_kernels(k, 'w', H * W);
  const DirectKernels* kern_b = direct_kernels(3);  // the bias reduction needs only the ISA
  if (db) bias_grad(kern_b, dy, db, B, Cout, H * W);
  if (dw) {
    if (dw1x1_lanes(k, Cin, Cout, H * W)) {
      dw1x1_forward(x, dy, dw, B, Cin, Cout, H * W, relu_in);
    } else if (kern_w) {
      direct_dw(*kern_w, x, dy, dw, B, Cin, Cout, H, W, k, relu_in);  // pads ReLU(x) while padding
    } else {
      Workspace xr(relu_in ? (size_t)(B * Cin * H * W) : 0);
      if (relu_in) relu_copy(x, B * Cin * H * W, xr.p);
      gemm_dw(relu_in ? xr.p : x, dy, dw, B, Cin, Cout, H, W, k);
    }
  }
  if (!dx) return;
  if (winograd_shape(k, H, W)) {  // dx = the correlation of dy with w flipped and transposed, gated as it is stored
    Workspace U((size_t)((Cin + 7) / 8) * 16 * Cout * 8);
    winograd_weights(w, Cout, Cin, true, U.p);
    winograd_forward(dy, U.p, nullptr, dx, B, Cout, Cin, H, W, false, relu_in ? x : nullptr);
    return;
  }
  if (!kern) {
    StripExtras extras;  // 1x1: the gate applied to each strip of dx as it is finished, where the strip GEMM runs
    extras.gate = relu_in ? x : nullptr;
    if (k == 1 && sgemm_batched_shared_a_strips(B, true, Cin, H * W, Cout, 1.0f, w, Cin, dy, H * W, Cout * H * W, 0.0f,
                                                dx, H * W, Cin * H * W, extras)) {
      return;
    }
    gemm_dx(w, dy, dx, B, Cin, Cout, H, W, k);
    if (relu_in) relu_gate(x, B * Cin * H * W, dx);
  } else {
    const int64_t mr = kern->fwd_mr(), T = Cout * k * k;
    Workspace wb((size_t)((Cin + mr - 1) / mr) * mr * T);
    pack_dx(w, Cout, Cin, k, mr, wb.p);
    // the gate is applied as each dx vector is stored
    direct_forward(*kern, dy, wb.p, nullptr, dx, B, Cout, Cin, H, W, k, false, relu_in ? x : nullptr);
  }
}

namespace {

// conv2dForward(x, w, bias | null, y, B, Cin, Cout, H, W, k); conv2dReluForward: the same on ReLU(x).
Napi::Value Conv2dForwardImpl(const Napi::CallbackInfo& info, const char* op, bool relu_in) {
  const float* x = arg_data<const float>(info, 0, op);
  const float* w = arg_data<const float>(info, 1, op);
  const float* bias = arg_data<const float>(info, 2, op);
  float* y = arg_data<float>(info, 3, op);
  int64_t B = arg_i64(info, 4, op), Cin = arg_i64(info, 5, op), Cout = arg_i64(info, 6, op);
  int64_t H = arg_i64(info, 7, op), W = arg_i64(info, 8, op), k = arg_i64(info, 9, op);
  check_conv(op, B, Cin, Cout, H, W, k);
  DALLE_CHECK(x && w && y, op, "x, w and y must be non-null (x (%lld, %lld, %lld, %lld))", (long long)B,
              (long long)Cin, (long long)H, (long long)W);
  conv2d_forward(x, w, bias, y, B, Cin, Cout, H, W, k, relu_in);
  return info.Env().Undefined();
}
Napi::Value Conv2dForward(const Napi::CallbackInfo& info) { return Conv2dForwardImpl(info, "conv2dForward", false); }
Napi::Value Conv2dReluForward(const Napi::CallbackInfo& info) {
  return Conv2dForwardImpl(info, "conv2dReluForward", true);
}

// conv2dBackward(x, w, dy, dx | null, dw | null, db | null, B, Cin, Cout, H, W, k); conv2dReluBackward: the gradients
// of the convolution of ReLU(x), dx with respect to x (x is the input before the ReLU).
Napi::Value Conv2dBackwardImpl(const Napi::CallbackInfo& info, const char* op, bool relu_in) {
  const float* x = arg_data<const float>(info, 0, op);
  const float* w = arg_data<const float>(info, 1, op);
  const float* dy = arg_data<const float>(info, 2, op);
  float* dx = arg_data<float>(info, 3, op);
  float* dw = arg_data<float>(info, 4, op);
  float* db = arg_data<float>(info, 5, op);
  int64_t B = arg_i64(info, 6, op), Cin = arg_i64(info, 7, op), Cout = arg_i64(info, 8, op);
  int64_t H = arg_i64(info, 9, op), W = arg_i64(info, 10, op), k = arg_i64(info, 11, op);
  check_conv(op, B, Cin, Cout, H, W, k);
  DALLE_CHECK(dy, op, "dy must be non-null (dy (%lld, %lld, %lld, %lld))", (long long)B, (long long)Cout,
              (long long)H, (long long)W);
  DALLE_CHECK(!dx || w, op, "dx needs w (w (%lld, %lld, %lld, %lld))", (long long)Cout, (long long)Cin, (long long)k,
              (long long)k);
  DALLE_CHECK(!dw || x, op, "dw needs x (x (%lld, %lld, %lld, %lld))", (long long)B, (long long)Cin, (long long)H,
              (long long)W);
  DALLE_CHECK(!(relu_in && dx) || x, op, "dx of a fused ReLU needs x (x (%lld, %lld, %lld, %lld))", (long long)B,
              (long long)Cin, (long long)H, (long long)W);
  conv2d_backward(x, w, dy, dx, dw, db, B, Cin, Cout, H, W, k, relu_in);
  return info.Env().Undefined();
}
Napi::Value Conv2dBackward(const Napi::CallbackInfo& info) { return Conv2dBackwardImpl(info, "conv2dBackward", false); }
Napi::Value Conv2dReluBackward(const Napi::CallbackInfo& info) {
  return Conv2dBackwardImpl(info, "conv2dReluBackward", true);
}

DALLE_EXPORT("conv2dForward", Conv2dForward);
DALLE_EXPORT("conv2dBackward", Conv2dBackward);
DALLE_EXPORT("conv2dReluForward", Conv2dReluForward);
DALLE_EXPORT("conv2dReluBackward", Conv2dReluBackward);

}  // namespace
}  // namespace dalle
