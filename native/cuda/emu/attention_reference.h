// The dense float64 reference of the prior's masked attention for the emulation programs (attention_emu.cc,
// attention_tc_emu.cc, attention_decode_emu.cc): the mask applied pair by pair (attention_plan.h allowed_seq), no
// tiles, no online softmax. Keys: BH = B * H, T positions, D query / key width, Dv value width; every tensor
// (BH, T, width) contiguous in sequence order.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "../attention_plan.h"

namespace dalle {
namespace emu {

// One query row i against keys 0 .. T-1 of one head: out (Dv) = softmax over allowed keys of scale q.k, times V;
// returns the log-sum-exp (-inf when nothing is allowed; out is then zeros). probs (T), when given, gets P.
inline double dense_row(const attn_plan::MaskSpec& s, int i, const float* qrow, const float* K, const float* V, int T,
                        int D, int Dv, float scale, double* out, double* probs = nullptr) {
  double m = -INFINITY;
  std::vector<double> sc(T, -INFINITY);
  for (int j = 0; j < T; j++) {
    if (!attn_plan::allowed_seq(s, i, j)) continue;
    double d = 0;
    for (int e = 0; e < D; e++) d += (double)qrow[e] * K[(size_t)j * D + e];
    sc[j] = d * scale;
    m = std::max(m, sc[j]);
  }
  for (int e = 0; e < Dv; e++) out[e] = 0;
  if (m == -INFINITY) {
    if (probs) for (int j = 0; j < T; j++) probs[j] = 0;
    return -INFINITY;
  }
  double sum = 0;
  for (int j = 0; j < T; j++) sum += sc[j] == -INFINITY ? 0 : std::exp(sc[j] - m);
  for (int j = 0; j < T; j++) {
    const double p = sc[j] == -INFINITY ? 0 : std::exp(sc[j] - m) / sum;
    if (probs) probs[j] = p;
    if (p == 0) continue;
    for (int e = 0; e < Dv; e++) out[e] += p * V[(size_t)j * Dv + e];
  }
  return m + std::log(sum);
}

struct DenseAttention {
  std::vector<double> o, lse, dq, dk, dv;  // (BH, T, Dv), (BH, T), (BH, T, D), (BH, T, D), (BH, T, Dv)
};

// Forward and backward: P = softmax over allowed keys; dP = dO V^T; dS = P (dP - rowsum(dO O)) scale;
// dq = dS K, dk = dS^T Q, dv = P^T dO.
inline DenseAttention dense_attention(const attn_plan::MaskSpec& s, int BH, int D, int Dv, float scale,
                                      const std::vector<float>& q, const std::vector<float>& k,
                                      const std::vector<float>& v, const std::vector<float>& dO) {
  const int T = attn_plan::seq_len(s);
  DenseAttention r;
  r.o.assign((size_t)BH * T * Dv, 0.0);
  r.lse.assign((size_t)BH * T, 0.0);
  r.dq.assign((size_t)BH * T * D, 0.0);
  r.dk.assign((size_t)BH * T * D, 0.0);
  r.dv.assign((size_t)BH * T * Dv, 0.0);
  std::vector<double> P(T);
  for (int bh = 0; bh < BH; bh++) {
    const float* Q = q.data() + (size_t)bh * T * D;
    const float* K = k.data() + (size_t)bh * T * D;
    const float* V = v.data() + (size_t)bh * T * Dv;
    const float* G = dO.data() + (size_t)bh * T * Dv;
    double* O = r.o.data() + (size_t)bh * T * Dv;
    double* DQ = r.dq.data() + (size_t)bh * T * D;
    double* DK = r.dk.data() + (size_t)bh * T * D;
    double* DV = r.dv.data() + (size_t)bh * T * Dv;
    for (int i = 0; i < T; i++) {
      r.lse[(size_t)bh * T + i] = dense_row(s, i, Q + (size_t)i * D, K, V, T, D, Dv, scale, O + (size_t)i * Dv, P.data());
      double dl = 0;
      for (int e = 0; e < Dv; e++) dl += (double)G[(size_t)i * Dv + e] * O[(size_t)i * Dv + e];
      for (int j = 0; j < T; j++) {
        const double p = P[j];
        if (p == 0) continue;
        double dp = 0;
        for (int e = 0; e < Dv; e++) dp += (double)G[(size_t)i * Dv + e] * V[(size_t)j * Dv + e];
        const double ds = p * (dp - dl) * scale;
        for (int e = 0; e < D; e++) {
          DQ[(size_t)i * D + e] += ds * K[(size_t)j * D + e];
          DK[(size_t)j * D + e] += ds * Q[(size_t)i * D + e];
        }
        for (int e = 0; e < Dv; e++) DV[(size_t)j * Dv + e] += p * G[(size_t)i * Dv + e];
      }
    }
  }
  return r;
}

}  // namespace emu
}  // namespace dalle
