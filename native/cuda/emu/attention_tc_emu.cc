// Runs the tensor-core attention kernels (native/cuda/attention_tc_kernels.cuh, the source nvcc compiles) on the CPU in
// the emulation dialect (dialect.h: one OS thread per CUDA thread, the warp-collective mma m16n8k16 and shuffles with
// the PTX ISA's register ownership, fp16 / bf16 in software) and compares forward (o, lse) and backward (dq, dk, dv)
// with the dense float64 reference (attention_reference.h) on the same 16-bit inputs. test/cuda/attention-tc-emu.test.ts
// builds and runs it.
//   attention_tc_emu KIND TEXT GRID K B H D DV DTYPE SEED   (DTYPE f16 | bf16)
//   -> one JSON line: for each output, max |got - want| / rms(want) (lse: max |got - want|); an output element never
//      written (NaN) or not finite counts as infinitely wrong (printed as 1e300).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "dialect.h"

#include "../attention_tc_kernels.cuh"
#include "attention_reference.h"

using namespace dalle::cuda;
using namespace dalle::attn_plan;

namespace {

// The normalized worst error of got (16-bit) against want; 1e300 for anything not finite.
template <class E>
double worst(const std::vector<E>& got, const std::vector<double>& want, bool absolute) {
  double rms = 0;
  for (double w : want) rms += w * w;
  rms = want.empty() ? 1 : std::sqrt(rms / (double)want.size());
  const double denom = absolute || rms == 0 ? 1 : rms;
  double e = 0;
  for (size_t x = 0; x < got.size(); x++) {
    const double g = to_f32(got[x]);
    if (!std::isfinite(g)) return 1e300;
    e = std::max(e, std::fabs(g - want[x]) / denom);
  }
  return e;
}

double worst_f32(const std::vector<float>& got, const std::vector<double>& want) {
  double e = 0;
  for (size_t x = 0; x < got.size(); x++) {
    if (!std::isfinite(got[x])) return 1e300;
    e = std::max(e, std::fabs(got[x] - want[x]));
  }
  return e;
}

template <class E>
int run(const MaskSpec& s, int B, int H, int D, int Dv, unsigned seed) {
  const AttnLaunch L = attention_launch(s, B, H, D, Dv);
  if (!L.error.empty()) {
    std::fprintf(stderr, "%s\n", L.error.c_str());
    return 2;
  }
  const int T = seq_len(s);
  const float scale = 1.0f / std::sqrt((float)D);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Random inputs in T, and the same values widened to fp32 for the reference.
  auto randv = [&](size_t n, std::vector<float>* wide) {
    std::vector<E> v(n);
    wide->resize(n);
    for (size_t x = 0; x < n; x++) {
      v[x] = from_f32<E>(nd(rng));
      (*wide)[x] = to_f32(v[x]);
    }
    return v;
  };
  const size_t nq = (size_t)B * H * T * D, nv = (size_t)B * H * T * Dv, nr = (size_t)B * H * T;
  std::vector<float> qf, kf, vf, gf;
  const std::vector<E> q = randv(nq, &qf), k = randv(nq, &kf), v = randv(nv, &vf), dO = randv(nv, &gf);
  const E nan = from_f32<E>(NAN);
  std::vector<E> o(nv, nan), dq(nq, nan), dk(nq, nan), dv(nv, nan);
  std::vector<float> lse(nr, NAN), delta(nr, NAN);

  const TilePlan plan = build_tile_plan(s, kTcTile, kTcTile);
  const PlanDev pd{plan.row_start.data(), plan.key_tile.data(), plan.full_q.data(),
                   plan.col_start.data(), plan.query_tile.data(), plan.full_k.data()};
  const unsigned gx = (unsigned)L.grid_x, gy = (unsigned)L.grid_y;
  static_assert(kTcSmemDkv <= (int)sizeof(smem), "the emulated shared memory is too small");
  launch(gx, gy, kTcThreads, [&] {
    attn_fwd_tc_kernel<E>(q.data(), k.data(), v.data(), o.data(), lse.data(), T, D, Dv, scale, s, pd);
  });
  launch(1, 1, 256, [&] { attn_delta_kernel<E>(o.data(), dO.data(), delta.data(), (int64_t)nr, Dv); });
  launch(gx, gy, kTcThreads, [&] {
    attn_dq_tc_kernel<E>(q.data(), k.data(), v.data(), dO.data(), lse.data(), delta.data(), dq.data(), T, D, Dv,
                         scale, s, pd);
  });
  launch(gx, gy, kTcThreads, [&] {
    attn_dkv_tc_kernel<E>(q.data(), k.data(), v.data(), dO.data(), lse.data(), delta.data(), dk.data(), dv.data(), T,
                          D, Dv, scale, s, pd);
  });

  const dalle::emu::DenseAttention ref = dalle::emu::dense_attention(s, B * H, D, Dv, scale, qf, kf, vf, gf);
  std::printf("{\"T\": %d, \"tiles\": %zu, \"o\": %.4g, \"lse\": %.4g, \"dq\": %.4g, \"dk\": %.4g, \"dv\": %.4g}\n", T,
              plan.key_tile.size(), worst(o, ref.o, false), worst_f32(lse, ref.lse), worst(dq, ref.dq, false),
              worst(dk, ref.dk, false), worst(dv, ref.dv, false));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 11) {
    std::fprintf(stderr, "usage: attention_tc_emu KIND TEXT GRID K B H D DV DTYPE SEED\n");
    return 2;
  }
  const std::string kind = argv[1], dtype = argv[9];
  const MaskSpec s{kind == "row" ? kRow : kind == "column" ? kColumn : kConv, std::atoi(argv[2]), std::atoi(argv[3]),
                   std::atoi(argv[4])};
  const std::string bad = check_spec(s);
  if (!bad.empty() || (dtype != "f16" && dtype != "bf16")) {
    std::fprintf(stderr, "%s\n", bad.empty() ? "DTYPE must be f16 or bf16" : bad.c_str());
    return 2;
  }
  const int B = std::atoi(argv[5]), H = std::atoi(argv[6]), D = std::atoi(argv[7]), Dv = std::atoi(argv[8]);
  const unsigned seed = (unsigned)std::atoi(argv[10]);
  return dtype == "f16" ? run<__half>(s, B, H, D, Dv, seed) : run<__nv_bfloat16>(s, B, H, D, Dv, seed);
}
