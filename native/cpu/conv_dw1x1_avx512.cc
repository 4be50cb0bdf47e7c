// The 1x1 convolution's weight gradient with lanes along input channels (AVX-512 leaf; conv.cc splits the work):
//   dw[co][c] = sum_b sum_p dy[b][co][p] x[b][c][p]   (of ReLU(x) with `relu`)
// The pixel-lane kernel (conv_simd.h dw_tile) holds one dw element per accumulator and sums its lanes at the end; it
// loads 4 dy and 6 x vectors per 24 FMAs, all streamed from L2. Here an accumulator holds 16 consecutive input
// channels of one output channel, so the pixel sum runs down the FMA chain: per pixel, NV vectors of x (transposed,
// in a small block that stays in L1) and MC broadcasts of dy (MC planes read forward, 16 uses per cache line) feed
// NV * MC FMAs, and the partial sums are dw itself, loaded and stored once per block of pixels. Each dw element is
// one chain over (b, p) in order, whichever tile or thread computes it.
// GCC 12 reports the undefined-vector start of some AVX-512 intrinsics as maybe used uninitialized once inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

#include "conv_kernels.h"
#include "simd_math_avx512.h"

namespace dalle {
namespace {

typedef __m512 V;

// xt[p][j] = x[c0 + j][p0 + p] (ReLU'd with relu) for p < P, j < nc (nc, P multiples of 16): 16x16 register transposes.
void transpose_block(const float* x, int64_t HW, int64_t c0, int64_t nc, int64_t p0, int64_t P, bool relu,
                     float* xt) {
  for (int64_t jb = 0; jb < nc; jb += 16)
    for (int64_t pb = 0; pb < P; pb += 16) {
      const float* src = x + (c0 + jb) * HW + p0 + pb;
      float* dst = xt + pb * nc + jb;
      if (relu) simd512::transpose16x16<true>(src, HW, dst, nc);  // NaN -> 0, as the relu op
      else simd512::transpose16x16<false>(src, HW, dst, nc);
    }
}

// dw[co0 + m][cj .. cj + 16 NV) over pixels [0, P) of the block: acc = start ? 0 : dw, then the FMA chain, then dw = acc.
template <int MC, int NV>
void tile(const float* xt, int64_t nc, int64_t cj, const float* dy, int64_t HW, int64_t P, float* dw, int64_t C,
          bool start) {
  V acc[MC][NV];
  for (int m = 0; m < MC; m++)
    for (int v = 0; v < NV; v++) acc[m][v] = start ? _mm512_setzero_ps() : _mm512_loadu_ps(dw + m * C + cj + 16 * v);
  const float* xq = xt + cj;
  for (int64_t p = 0; p < P; p++) {
    V xv[NV];
    for (int v = 0; v < NV; v++) xv[v] = _mm512_loadu_ps(xq + p * nc + 16 * v);
    for (int m = 0; m < MC; m++) {
      const V d = _mm512_set1_ps(dy[m * HW + p]);
      for (int v = 0; v < NV; v++) acc[m][v] = _mm512_fmadd_ps(d, xv[v], acc[m][v]);
    }
  }
  for (int m = 0; m < MC; m++)
    for (int v = 0; v < NV; v++) _mm512_storeu_ps(dw + m * C + cj + 16 * v, acc[m][v]);
}

// tile<mc, NV> for mc <= MC (the last rows of output channels).
template <int MC, int NV>
void tile_n(int mc, const float* xt, int64_t nc, int64_t cj, const float* dy, int64_t HW, int64_t P, float* dw,
            int64_t C, bool start) {
  if constexpr (MC > 1) {
    if (mc < MC) {
      tile_n<MC - 1, NV>(mc, xt, nc, cj, dy, HW, P, dw, C, start);
      return;
    }
  }
  tile<MC, NV>(xt, nc, cj, dy, HW, P, dw, C, start);
}

// Output channels per tile for NV vectors of input channels: about 24 accumulators.
constexpr int rows_for(int nv) { return nv == 4 ? 6 : nv == 3 ? 8 : nv == 2 ? 12 : 24; }

template <int NV>
void tiles(const ConvDw1x1Job* jb, int64_t b, int64_t p0, int64_t np, int64_t cj, bool start) {
  constexpr int MC = rows_for(NV);
  const int64_t HW = jb->HW, nc = jb->c1 - jb->c0;
  for (int64_t co = jb->co0; co < jb->co1; co += MC) {
    const int mc = (int)(jb->co1 - co < MC ? jb->co1 - co : MC);
    tile_n<MC, NV>(mc, jb->xt, nc, cj, jb->dy + (b * jb->Co + co) * HW + p0, HW, np, jb->dw + co * jb->C + jb->c0,
                   jb->C, start);
  }
}

}  // namespace

void conv_dw1x1_avx512(const ConvDw1x1Job* jb) {
  const int64_t HW = jb->HW, nc = jb->c1 - jb->c0, P = kDw1x1Pixels;
  for (int64_t b = 0; b < jb->B; b++)
    for (int64_t p0 = 0; p0 < HW; p0 += P) {
      const int64_t np = HW - p0 < P ? HW - p0 : P;
      transpose_block(jb->x + b * jb->C * HW, HW, jb->c0, nc, p0, np, jb->relu, jb->xt);
      const bool start = b == 0 && p0 == 0;
      int64_t cj = 0;
      for (; cj + 64 <= nc; cj += 64) tiles<4>(jb, b, p0, np, cj, start);
      switch ((nc - cj) / 16) {
        case 3: tiles<3>(jb, b, p0, np, cj, start); break;
        case 2: tiles<2>(jb, b, p0, np, cj, start); break;
        case 1: tiles<1>(jb, b, p0, np, cj, start); break;
        default: break;
      }
    }
}

}  // namespace dalle
