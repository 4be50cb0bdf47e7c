// The direct-convolution kernels, written once over a small vector layer and compiled per ISA: conv_avx512.cc and
// conv_avx2.cc each define the layer (V, VL, vzero, vloadu, vloadu_reg, vload_n, vset1, vfma, vadd, vstoreu, vstore_n, vhsum;
// vwindows3; all `static inline`) and then include this file. Everything here has internal linkage (an anonymous namespace), so
// nothing compiled with one ISA's flags can be picked by the linker for code compiled with another's. No std headers.
//
// Shapes key as in conv_kernels.h: C in, Co out, k kernel (odd), Hp = H + k - 1, Wp = W + k - 1, T = C * k * k.
#pragma once
#ifndef DALLE_CONV_SIMD_LAYER
#error "define the vector layer (DALLE_CONV_SIMD_LAYER) before including conv_simd.h"
#endif

#include "conv_kernels.h"

namespace dalle {
namespace {

// ---- forward / dx: lanes along output columns, an MR (channels) x NR (pixel vectors) register tile ----------------
// A "slot" is one vector of output pixels: row h, columns w0 .. w0 + n - 1 (n <= VL). Slots of a tile may lie on
// different rows. xs[j] points at the padded input under the slot's first pixel (xp + h * Wp + w0): tap (c, kh, kw)
// reads xs[j] + c * HpWp + kh * Wp + kw. Lanes past n read padding or the next row (finite) and are never stored.
// K > 0: k fixed at compile time (kw loop unrolled); K == 0: k at run time. K == 1 reads the unpadded input in place,
// so it masks its loads (the lanes past n may lie past the end of the tensor). Only kernel rows [kh0, kh1) are
// summed: tiles on the image's first and last p rows skip the rows of taps that fall on the zero padding.
// gate_off: null, or the byte distance from y to the job's gate (ConvFwdJob::gate): each stored vector is then gated.
static inline const float* gate_at(const float* dst, const int64_t* gate_off) {
  return reinterpret_cast<const float*>((intptr_t)dst + (intptr_t)*gate_off);
}

template <int MR, int NR, int K>
void fwd_tile(const float* const* xs, float* const* ys, const int* ns, const float* wb, const float* bias,
              int64_t C, int64_t k_rt, int64_t kh0, int64_t kh1, int64_t HpWp, int64_t Wp, int64_t HW, int mrows,
              const int64_t* gate_off) {
  const int64_t k = K > 0 ? K : k_rt;
  V acc[MR][NR];
  for (int m = 0; m < MR; m++) {
    V b = (bias && m < mrows) ? vset1(bias[m]) : vzero();
    for (int j = 0; j < NR; j++) acc[m][j] = b;
  }
  const float* x0[NR];
  for (int j = 0; j < NR; j++) x0[j] = xs[j];
  for (int64_t c = 0; c < C; c++) {
    for (int64_t kh = kh0; kh < kh1; kh++) {
      const int64_t off = c * HpWp + kh * Wp;
      const float* w = wb + (c * k + kh) * k * MR;
      if (K > 0) {
#pragma GCC unroll 8
        for (int kw = 0; kw < K; kw++) {
          V xv[NR];
          for (int j = 0; j < NR; j++) xv[j] = K == 1 ? vload_n(x0[j] + off, ns[j]) : vloadu_reg(x0[j] + off + kw);
          for (int m = 0; m < MR; m++) {
            V wv = vset1(w[kw * MR + m]);
            for (int j = 0; j < NR; j++) acc[m][j] = vfma(wv, xv[j], acc[m][j]);
          }
        }
      } else {
        for (int64_t kw = 0; kw < k; kw++) {
          V xv[NR];
          for (int j = 0; j < NR; j++) xv[j] = vloadu(x0[j] + off + kw);
          for (int m = 0; m < MR; m++) {
            V wv = vset1(w[kw * MR + m]);
            for (int j = 0; j < NR; j++) acc[m][j] = vfma(wv, xv[j], acc[m][j]);
          }
        }
      }
    }
  }
  for (int m = 0; m < MR; m++) {
    if (m >= mrows) break;
    for (int j = 0; j < NR; j++) {
      float* dst = ys[j] + m * HW;
      if (ns[j] == VL) {
        vstoreu(dst, gate_off ? vgate(acc[m][j], vloadu(gate_at(dst, gate_off))) : acc[m][j]);
      } else {
        vstore_n(dst, gate_off ? vgate(acc[m][j], vload_n(gate_at(dst, gate_off), ns[j])) : acc[m][j], ns[j]);
      }
    }
  }
}

template <int MR, int NR, int K>
void fwd_tile_n(int n, const float* const* xs, float* const* ys, const int* ns, const float* wb, const float* bias,
                int64_t C, int64_t k_rt, int64_t kh0, int64_t kh1, int64_t HpWp, int64_t Wp, int64_t HW,
                int mrows, const int64_t* gate_off) {
  if constexpr (NR > 1) {
    if (n < NR) {
      fwd_tile_n<MR, NR - 1, K>(n, xs, ys, ns, wb, bias, C, k_rt, kh0, kh1, HpWp, Wp, HW, mrows, gate_off);
      return;
    }
  }
  fwd_tile<MR, NR, K>(xs, ys, ns, wb, bias, C, k_rt, kh0, kh1, HpWp, Wp, HW, mrows, gate_off);
}

// Slots are gathered row by row into tiles of NR; interior rows share tiles across rows, each of the first and last
// p rows gets its own tiles with its kernel-row range. (Which slots share a tile never changes a result: each lane is
// its own chain of FMAs in tap order.)
template <int MR, int NR, int K>
void fwd_run(const ConvFwdJob* jb) {
  const int64_t k = jb->k, p = (k - 1) / 2, H = jb->H, W = jb->W, HW = H * W, Wp = W + k - 1;
  const int64_t HpWp = (H + k - 1) * Wp, T = jb->C * k * k, vpr = (W + VL - 1) / VL;  // vectors per row
  // the gate's address minus y's, in bytes (the two are separate tensors: integer arithmetic, not pointer subtraction)
  const int64_t gate_dist = jb->gate ? (int64_t)((intptr_t)jb->gate - (intptr_t)jb->y) : 0;
  const int64_t* gate_off = jb->gate ? &gate_dist : nullptr;
  for (int64_t co = jb->co0; co < jb->co1; co += MR) {
    const float* wb = jb->wb + (co / MR) * T * MR;
    const float* bias = jb->bias ? jb->bias + co : nullptr;
    const int mrows = (int)(jb->Co - co < MR ? jb->Co - co : MR);
    const float* xs[NR];
    float* ys[NR];
    int ns[NR];
    int n = 0;
    for (int64_t h = jb->h0; h < jb->h1; h++) {
      const bool border = h < p || h >= H - p;
      if (border && n) {  // close the interior tile
        fwd_tile_n<MR, NR, K>(n, xs, ys, ns, wb, bias, jb->C, k, 0, k, HpWp, Wp, HW, mrows, gate_off);
        n = 0;
      }
      const int64_t kh0 = border && p - h > 0 ? p - h : 0, kh1 = border && H + p - h < k ? H + p - h : k;
      for (int64_t v = 0; v < vpr; v++) {
        const int64_t w0 = v * VL;
        xs[n] = jb->xp + h * Wp + w0;
        ys[n] = jb->y + co * HW + h * W + w0;
        ns[n] = (int)(W - w0 < VL ? W - w0 : VL);
        if (++n == NR) {
          fwd_tile<MR, NR, K>(xs, ys, ns, wb, bias, jb->C, k, kh0, kh1, HpWp, Wp, HW, mrows, gate_off);
          n = 0;
        }
      }
      if (border && n) {
        fwd_tile_n<MR, NR, K>(n, xs, ys, ns, wb, bias, jb->C, k, kh0, kh1, HpWp, Wp, HW, mrows, gate_off);
        n = 0;
      }
    }
    if (n) fwd_tile_n<MR, NR, K>(n, xs, ys, ns, wb, bias, jb->C, k, 0, k, HpWp, Wp, HW, mrows, gate_off);
  }
}

// ---- weight gradient: lanes along columns w, an MR (output channels) x U*K (taps) register tile ------------------
// FULL: W is a multiple of VL, so every load is a whole vector (masked loads are slower on Zen 4).
template <int MR, int U, int K, bool FULL>
void dw_tile(const ConvDwJob* jb) {
  const int64_t H = jb->H, W = jb->W, HW = H * W, Wp = W + K - 1, HpWp = (H + K - 1) * Wp;
  const int64_t T = jb->C * K * K;
  V acc[MR][U * K];
  for (int m = 0; m < MR; m++)
    for (int t = 0; t < U * K; t++) acc[m][t] = vzero();
  // Output rows [h0, h1): a unit (c, kh) reads padded rows h + kh, all zero padding unless p <= h + kh < H + p;
  // rows where every unit of the tile reads padding are skipped.
  const int64_t p = (K - 1) / 2;
  int64_t uoff[U], h0 = H, h1 = 0;
  for (int u = 0; u < U; u++) {
    const int64_t unit = jb->u0 + u, c = unit / K, kh = unit % K;
    uoff[u] = c * HpWp + kh * Wp;
    const int64_t lo = p - kh > 0 ? p - kh : 0, hi = H + p - kh < H ? H + p - kh : H;
    if (lo < h0) h0 = lo;
    if (hi > h1) h1 = hi;
  }
  if (h1 < h0) h1 = h0;
  // One flat loop over every vector of rows [h0, h1) of every image (nested loops made GCC keep the accumulators in
  // memory); the last vector of a row is masked (lanes past W load zeros).
  const int64_t rows = h1 - h0, vpr = (W + VL - 1) / VL, steps = jb->G * rows * vpr;
  const int last_n = (int)(W - (vpr - 1) * VL);
  const float* dr = jb->dy + jb->co0 * HW + h0 * W;  // row h of image g, channel co0
  const float* xr = jb->xp + h0 * Wp;                // padded row h of image g
  int64_t v = 0, h = 0;                              // h counts rows from h0
  for (int64_t s = 0; s < steps; s++) {
    const int64_t w0 = v * VL;
    const int n = v + 1 == vpr ? last_n : VL;
    V dv[MR];
    for (int m = 0; m < MR; m++) dv[m] = FULL ? vloadu_reg(dr + m * HW + w0) : vload_n(dr + m * HW + w0, n);
    for (int u = 0; u < U; u++) {
      if constexpr (FULL && K == 3) {  // the three shifted windows of one row from two loads (vwindows3)
        V xv[3];
        vwindows3(xr + uoff[u] + w0, xv);
        for (int kw = 0; kw < 3; kw++)
          for (int m = 0; m < MR; m++) acc[m][u * K + kw] = vfma(dv[m], xv[kw], acc[m][u * K + kw]);
        continue;
      }
#pragma GCC unroll 8
      for (int kw = 0; kw < K; kw++) {
        const float* xq = xr + uoff[u] + w0 + kw;
        V xv = FULL ? vloadu_reg(xq) : vload_n(xq, n);
        for (int m = 0; m < MR; m++) acc[m][u * K + kw] = vfma(dv[m], xv, acc[m][u * K + kw]);
      }
    }
    if (++v == vpr) {
      v = 0;
      dr += W;
      xr += Wp;
      if (++h == rows) {
        h = 0;
        dr += jb->dy_stride - rows * W;
        xr += jb->xp_stride - rows * Wp;
      }
    }
  }
  // Fully unrolled, so that the accumulators are never addressed as an array (GCC would keep them in memory).
#pragma GCC unroll 16
  for (int m = 0; m < MR; m++) {
    float* dst = jb->dw + (jb->co0 + m) * T + jb->u0 * K;
#pragma GCC unroll 32
    for (int t = 0; t < U * K; t++) {
      float s = vhsum(acc[m][t]);
      dst[t] = jb->accumulate ? dst[t] + s : s;
    }
  }
}

template <int MR, int U, int K>
void dw_run(const ConvDwJob* jb) {
  if constexpr (MR > 1) {
    if (jb->nco < MR) {
      dw_run<MR - 1, U, K>(jb);
      return;
    }
  }
  if constexpr (U > 1) {
    if (jb->nu < U) {
      dw_run<MR, U - 1, K>(jb);
      return;
    }
  }
  if (jb->W % VL == 0) {
    dw_tile<MR, U, K, true>(jb);
  } else {
    dw_tile<MR, U, K, false>(jb);
  }
}

// ---- bias gradient -------------------------------------------------------------------------------------------------
void db_run(const ConvDbJob* jb) {
  const int64_t HW = jb->HW, full = HW - HW % (4 * VL);
  for (int64_t co = jb->co0; co < jb->co1; co++) {
    V s0 = vzero(), s1 = vzero(), s2 = vzero(), s3 = vzero();
    for (int64_t b = 0; b < jb->B; b++) {
      const float* p = jb->dy + (b * jb->Co + co) * HW;
      int64_t i = 0;
      for (; i < full; i += 4 * VL) {
        s0 = vadd(s0, vloadu(p + i));
        s1 = vadd(s1, vloadu(p + i + VL));
        s2 = vadd(s2, vloadu(p + i + 2 * VL));
        s3 = vadd(s3, vloadu(p + i + 3 * VL));
      }
      for (; i < HW; i += VL) s0 = vadd(s0, vload_n(p + i, (int)(HW - i < VL ? HW - i : VL)));
    }
    jb->db[co] = vhsum(vadd(vadd(s0, s1), vadd(s2, s3)));
  }
}

}  // namespace
}  // namespace dalle
