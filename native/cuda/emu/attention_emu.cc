// Runs the CUDA attention kernels (native/cuda/attention_kernels.cuh, the same source nvcc compiles) on the CPU:
// one OS thread per CUDA thread, __syncthreads as a barrier, one block at a time with its shared memory, fp32 only.
// Compares forward (o, lse) and backward (dq, dk, dv) with a dense double-precision reference that applies the mask
// pair by pair, for the masks given on the command line. test/cuda/emu.test.ts builds and runs it.
//   attention_emu KIND TEXT GRID K B H D DV SEED  ->  one JSON line with the worst errors
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "dialect.h"

#include "../attention_kernels.cuh"

using namespace dalle::cuda;
using namespace dalle::attn_plan;

int main(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr, "usage: attention_emu KIND TEXT GRID K B H D DV SEED\n");
    return 2;
  }
  const std::string kind = argv[1];
  MaskSpec s{kind == "row" ? kRow : kind == "column" ? kColumn : kConv, std::atoi(argv[2]), std::atoi(argv[3]),
             std::atoi(argv[4])};
  const int B = std::atoi(argv[5]), H = std::atoi(argv[6]), D = std::atoi(argv[7]), Dv = std::atoi(argv[8]);
  const std::string bad = check_spec(s);
  if (!bad.empty()) {
    std::fprintf(stderr, "%s\n", bad.c_str());
    return 2;
  }
  const AttnLaunch L = attention_launch(s, B, H, D, Dv);
  if (!L.error.empty()) {
    std::fprintf(stderr, "%s\n", L.error.c_str());
    return 2;
  }
  const int T = seq_len(s);
  const float scale = 1.0f / std::sqrt((float)D);
  std::mt19937 rng(std::atoi(argv[9]));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto randv = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
  };
  const size_t nq = (size_t)B * H * T * D, nv = (size_t)B * H * T * Dv, nr = (size_t)B * H * T;
  std::vector<float> q = randv(nq), k = randv(nq), v = randv(nv), dO = randv(nv);
  std::vector<float> o(nv, NAN), lse(nr, NAN), dq(nq, NAN), dk(nq, NAN), dv(nv, NAN), delta(nr, NAN);

  const TilePlan plan = build_tile_plan(s, kAttnTile, kAttnTile);
  const PlanDev pd{plan.row_start.data(), plan.key_tile.data(), plan.full_q.data(),
                   plan.col_start.data(), plan.query_tile.data(), plan.full_k.data()};
  const unsigned gx = (unsigned)L.grid_x, gy = (unsigned)L.grid_y;
  launch(gx, gy, kAttnTile, [&] {
    attn_fwd_kernel<float, kAttnMaxWidth>(q.data(), k.data(), v.data(), o.data(), lse.data(), T, D, Dv, scale, s, pd);
  });
  launch(1, 1, 256, [&] {
    attn_delta_kernel<float>(o.data(), dO.data(), delta.data(), (int64_t)nr, Dv);
  });
  launch(gx, gy, kAttnTile, [&] {
    attn_dq_kernel<float, kAttnMaxWidth>(q.data(), k.data(), v.data(), dO.data(), lse.data(), delta.data(), dq.data(), T,
                                         D, Dv, scale, s, pd);
  });
  launch(gx, gy, kAttnTile, [&] {
    attn_dkv_kernel<float, kAttnMaxWidth>(q.data(), k.data(), v.data(), dO.data(), lse.data(), delta.data(), dk.data(),
                                          dv.data(), T, D, Dv, scale, s, pd);
  });

  // Dense reference in double: P = softmax over allowed keys; dP = dO V^T; dS = P (dP - rowsum(dO O)).
  double eo = 0, el = 0, eq = 0, ek = 0, ev = 0;
  // An element never written is NaN: infinitely wrong (std::max would drop a NaN).
  auto err = [](double got, double want) {
    return std::isfinite(got) ? std::fabs(got - want) / (1e-5 + 1e-4 * std::fabs(want)) : INFINITY;
  };
  for (int bh = 0; bh < B * H; bh++) {
    const float* Q = q.data() + (size_t)bh * T * D;
    const float* K = k.data() + (size_t)bh * T * D;
    const float* V = v.data() + (size_t)bh * T * Dv;
    const float* G = dO.data() + (size_t)bh * T * Dv;
    std::vector<double> P((size_t)T * T, 0.0), Or((size_t)T * Dv, 0.0), DQ((size_t)T * D, 0.0), DK((size_t)T * D, 0.0),
        DV((size_t)T * Dv, 0.0);
    for (int i = 0; i < T; i++) {
      double m = -INFINITY;
      std::vector<double> sc(T, -INFINITY);
      for (int j = 0; j < T; j++) {
        if (!allowed_seq(s, i, j)) continue;
        double d = 0;
        for (int e = 0; e < D; e++) d += (double)Q[i * D + e] * K[j * D + e];
        sc[j] = d * scale;
        m = std::max(m, sc[j]);
      }
      double sum = 0;
      for (int j = 0; j < T; j++) sum += sc[j] == -INFINITY ? 0 : std::exp(sc[j] - m);
      el = std::max(el, err(lse[(size_t)bh * T + i], m + std::log(sum)));
      for (int j = 0; j < T; j++) P[(size_t)i * T + j] = sc[j] == -INFINITY ? 0 : std::exp(sc[j] - m) / sum;
      for (int j = 0; j < T; j++)
        for (int e = 0; e < Dv; e++) Or[(size_t)i * Dv + e] += P[(size_t)i * T + j] * V[j * Dv + e];
      double dl = 0;
      for (int e = 0; e < Dv; e++) dl += (double)G[i * Dv + e] * Or[(size_t)i * Dv + e];
      for (int j = 0; j < T; j++) {
        const double p = P[(size_t)i * T + j];
        if (p == 0) continue;
        double dp = 0;
        for (int e = 0; e < Dv; e++) dp += (double)G[i * Dv + e] * V[j * Dv + e];
        const double ds = p * (dp - dl) * scale;
        for (int e = 0; e < D; e++) {
          DQ[(size_t)i * D + e] += ds * K[j * D + e];
          DK[(size_t)j * D + e] += ds * Q[i * D + e];
        }
        for (int e = 0; e < Dv; e++) DV[(size_t)j * Dv + e] += p * G[i * Dv + e];
      }
    }
    for (size_t x = 0; x < (size_t)T * Dv; x++) {
      eo = std::max(eo, err(o[(size_t)bh * T * Dv + x], Or[x]));
      ev = std::max(ev, err(dv[(size_t)bh * T * Dv + x], DV[x]));
    }
    for (size_t x = 0; x < (size_t)T * D; x++) {
      eq = std::max(eq, err(dq[(size_t)bh * T * D + x], DQ[x]));
      ek = std::max(ek, err(dk[(size_t)bh * T * D + x], DK[x]));
    }
  }
  // NaN anywhere (an element never written) makes the error NaN; report it as such.
  std::printf("{\"T\": %d, \"tiles\": %zu, \"o\": %.4g, \"lse\": %.4g, \"dq\": %.4g, \"dk\": %.4g, \"dv\": %.4g}\n", T,
              plan.key_tile.size(), eo, el, eq, ek, ev);
  return 0;
}
