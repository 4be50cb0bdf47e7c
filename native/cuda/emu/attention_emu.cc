// Runs the CUDA attention kernels (native/cuda/attention_kernels.cuh, the same source nvcc compiles) on the CPU:
// one OS thread per CUDA thread, __syncthreads as a barrier, one block at a time with its shared memory, fp32 only.
// Compares forward (o, lse) and backward (dq, dk, dv) with the dense double-precision reference that applies the mask
// pair by pair (attention_reference.h), for the masks given on the command line. test/cuda/emu.test.ts builds and runs it.
//   attention_emu KIND TEXT GRID K B H D DV SEED  ->  one JSON line with the worst errors
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "dialect.h"

#include "attention_reference.h"

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

  const dalle::emu::DenseAttention ref = dalle::emu::dense_attention(s, B * H, D, Dv, scale, q, k, v, dO);
  // An element never written is NaN: infinitely wrong (std::max would drop a NaN).
  auto err = [](double got, double want) {
    return std::isfinite(got) ? std::fabs(got - want) / (1e-5 + 1e-4 * std::fabs(want)) : INFINITY;
  };
  auto worst = [&](const std::vector<float>& got, const std::vector<double>& want) {
    double e = 0;
    for (size_t x = 0; x < got.size(); x++) e = std::max(e, err(got[x], want[x]));
    return e;
  };
  const double eo = worst(o, ref.o), el = worst(lse, ref.lse), eq = worst(dq, ref.dq), ek = worst(dk, ref.dk),
               ev = worst(dv, ref.dv);
  // NaN anywhere (an element never written) makes the error NaN; report it as such.
  std::printf("{\"T\": %d, \"tiles\": %zu, \"o\": %.4g, \"lse\": %.4g, \"dq\": %.4g, \"dk\": %.4g, \"dv\": %.4g}\n", T,
              plan.key_tile.size(), eo, el, eq, ek, ev);
  return 0;
}
