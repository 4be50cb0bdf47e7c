// The codebook kernels (codebook.cc: the statistics and the relaxed codes), written once over a small vector layer and compiled per ISA:
// codebook_avx512.cc and codebook_avx2.cc define the layer (V, VL, vzero, vset1, vloadu, vload_n, vstoreu, vstore_n,
// vadd, vsub, vmul, vdiv, vmax, vfma, vexp, vtranspose) and include this file. Internal linkage only (see conv_simd.h).
//
// One image's logits l (V, HW), NCHW: a softmax over the V codes of each of the HW cells. Lanes run along cells (HW is
// contiguous), so each code's row is one vector load per VL cells and no transpose is needed. Per VL cells:
//   m = max_v l_v;  e_v = exp(l_v - m);  s = sum_v e_v;  t = sum_v e_v (l_v - m)
//   q_v = e_v / s;  log q_v = l_v - m - log s;  f = sum_v q_v log q_v = t / s - log s
// Forward: qsum[v] += sum over cells of q_v, and the sum over cells of f (returned).
// Backward, given g (V + 1) (the gradient of (qsum, sum f)):  dl_v = q_v (g_v - sum_u q_u g_u + g_V (log q_v - f)).
// Sums over cells run lane-wise in cell order, then over the lanes in lane order: fixed by the shapes.
#pragma once
#ifndef DALLE_CODEBOOK_SIMD_LAYER
#error "define the vector layer (DALLE_CODEBOOK_SIMD_LAYER) before including codebook_simd.h"
#endif

#include <cstdint>

namespace dalle {
namespace {

static inline V cells(const float* p, int n) { return n == VL ? vloadu(p) : vload_n(p, n); }

// The lanes of v summed in double, in lane order.
static inline double lane_sum(V v) {
  alignas(64) float a[VL];
  vstoreu(a, v);
  double s = 0.0;
  for (int i = 0; i < VL; i++) s += a[i];
  return s;
}

// The per-cell statistics of VL cells starting at l + j: e (V vectors) into eb; returns m, 1 / s, log s and f.
struct CellStats {
  V m, inv, log_s, f;
};

static inline CellStats cell_stats(const float* l, int64_t nv, int64_t HW, int n, float* eb) {
  V m = cells(l, n);
  for (int64_t v = 1; v < nv; v++) m = vmax(m, cells(l + v * HW, n));
  V s = vzero(), t = vzero();
  for (int64_t v = 0; v < nv; v++) {
    const V d = vsub(cells(l + v * HW, n), m);
    const V e = vexp(d);
    vstoreu(eb + v * VL, e);
    s = vadd(s, e);
    t = vfma(e, d, t);
  }
  alignas(64) float sa[VL];
  vstoreu(sa, s);
  for (int i = 0; i < VL; i++) sa[i] = __builtin_logf(sa[i]);
  CellStats c;
  c.m = m;
  c.inv = vdiv(vset1(1.0f), s);
  c.log_s = vloadu(sa);
  c.f = vsub(vmul(t, c.inv), c.log_s);
  return c;
}

// qsum (V) = sum over the image's cells of q; returns the sum over cells of f (each cell's f added in double, in cell
// order: the loss is this sum, and a float sum's rounding would show in finite differences of it). work: 2 V VL floats.
double stats_forward(const float* l, int64_t nv, int64_t HW, double* qsum, float* work) {
  float* qacc = work;
  float* eb = work + nv * VL;
  for (int64_t v = 0; v < nv; v++) vstoreu(qacc + v * VL, vzero());
  alignas(64) float ones[VL], fa[VL];
  for (int i = 0; i < VL; i++) ones[i] = 1.0f;
  double fsum = 0.0;
  for (int64_t j = 0; j < HW; j += VL) {
    const int n = HW - j < VL ? (int)(HW - j) : VL;
    const V live = vload_n(ones, n);  // 1 on the cells of this vector, 0 past the last
    const CellStats c = cell_stats(l + j, nv, HW, n, eb);
    vstoreu(fa, c.f);
    for (int i = 0; i < n; i++) fsum += fa[i];
    const V scale = vmul(c.inv, live);
    for (int64_t v = 0; v < nv; v++) vstoreu(qacc + v * VL, vfma(vloadu(eb + v * VL), scale, vloadu(qacc + v * VL)));
  }
  for (int64_t v = 0; v < nv; v++) qsum[v] = lane_sum(vloadu(qacc + v * VL));
  return fsum;
}

// dl (V, HW) of one image from g (V + 1). work: V VL floats.
void stats_backward(const float* l, int64_t nv, int64_t HW, const float* g, float* dl, float* work) {
  float* eb = work;
  const V gk = vset1(g[nv]);
  for (int64_t j = 0; j < HW; j += VL) {
    const int n = HW - j < VL ? (int)(HW - j) : VL;
    const CellStats c = cell_stats(l + j, nv, HW, n, eb);
    V dot = vzero();
    for (int64_t v = 0; v < nv; v++) dot = vfma(vloadu(eb + v * VL), vset1(g[v]), dot);
    dot = vmul(dot, c.inv);
    const V base = vmul(gk, vadd(c.log_s, c.f));  // g_V (log s + f)
    for (int64_t v = 0; v < nv; v++) {
      const V q = vmul(vloadu(eb + v * VL), c.inv);
      const V lq_term = vsub(vmul(gk, vsub(cells(l + v * HW + j, n), c.m)), base);  // g_V (log q_v - f)
      const V d = vmul(q, vadd(vsub(vset1(g[v]), dot), lq_term));
      if (n == VL) vstoreu(dl + v * HW + j, d);
      else vstore_n(dl + v * HW + j, d, n);
    }
  }
}

// ---- relaxed codes: z = softmax((l + g) / tau) over the codes of each cell, g the Gumbel noise --------------------
// The noise of VL cells arrives cell-major (rows[i * nv + v], as the stream orders it: codebook-last); it is transposed
// to code-major vectors of cells (gt[v * VL + i]) so that the softmax runs with lanes along cells like the statistics.
static inline void transpose_rows(const float* rows, int64_t nv, int n, float* gt) {
  int64_t v = 0;
  if (n == VL)
    for (; v + VL <= nv; v += VL) vtranspose(rows + v, nv, gt + v * VL);
  for (; v < nv; v++)
    for (int i = 0; i < VL; i++) gt[v * VL + i] = i < n ? rows[i * nv + v] : 0.0f;
}

// z (nv, HW) at cells [j, j + n) of one image from its logits l (nv, HW) and the cells' noise rows. work: 2 nv VL.
void relaxed_block(const float* l, const float* rows, int64_t nv, int64_t HW, int64_t j, int n, float inv_tau, float* z,
                   float* work) {
  float* gt = work;
  float* eb = work + nv * VL;
  transpose_rows(rows, nv, n, gt);
  const V it = vset1(inv_tau);
  V m = vset1(-__builtin_inff());
  for (int64_t v = 0; v < nv; v++) {
    const V a = vmul(vadd(cells(l + v * HW + j, n), vloadu(gt + v * VL)), it);
    vstoreu(eb + v * VL, a);
    m = vmax(m, a);
  }
  V s = vzero();
  for (int64_t v = 0; v < nv; v++) {
    const V e = vexp(vsub(vloadu(eb + v * VL), m));
    vstoreu(eb + v * VL, e);
    s = vadd(s, e);
  }
  const V inv = vdiv(vset1(1.0f), s);
  for (int64_t v = 0; v < nv; v++) {
    const V y = vmul(vloadu(eb + v * VL), inv);
    if (n == VL) vstoreu(z + v * HW + j, y);
    else vstore_n(z + v * HW + j, y, n);
  }
}

// dl (nv, HW) of one image: inv_tau z (dz - sum_v z dz), from the relaxed codes z and their gradient dz.
void relaxed_backward(const float* z, const float* dz, int64_t nv, int64_t HW, float inv_tau, float* dl) {
  const V it = vset1(inv_tau);
  for (int64_t j = 0; j < HW; j += VL) {
    const int n = HW - j < VL ? (int)(HW - j) : VL;
    V dot = vzero();
    for (int64_t v = 0; v < nv; v++) dot = vfma(cells(z + v * HW + j, n), cells(dz + v * HW + j, n), dot);
    for (int64_t v = 0; v < nv; v++) {
      const V d = vmul(it, vmul(cells(z + v * HW + j, n), vsub(cells(dz + v * HW + j, n), dot)));
      if (n == VL) vstoreu(dl + v * HW + j, d);
      else vstore_n(dl + v * HW + j, d, n);
    }
  }
}

}  // namespace
}  // namespace dalle
