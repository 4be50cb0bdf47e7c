// Runs the KV-cache decode kernel (native/cuda/attention_decode_kernels.cuh, the source nvcc compiles) on the CPU in
// the emulation dialect and compares each step with the float64 reference row (attention_reference.h dense_row) on
// the same inputs. test/cuda/attention-decode-emu.test.ts builds and runs it.
//   attention_decode_emu KIND TEXT GRID K B H D DV DTYPE SEED   (DTYPE f32 | f16 | bf16)
// The caches are laid out as the prior's (B + 1, H, T + 3, width): more sequences and positions than used, so the
// strides matter; q is (B, 1, H, D) seen as (B, H, 1, D). Every cache slot the step's mask row does not allow (and
// every slot past it) holds NaN: a kernel that read one would print NaN. Steps: the first and last text positions,
// the first image positions and the last; for each, the decode of position pos against the cache filled up to pos.
//   -> one JSON line: {"steps": n, "o": max |got - want| / (atol + rtol |want|), "lse": likewise}, <= 1 passes; not
//      finite counts as 1e300. The inputs are exact in the element type and the arithmetic is fp32, so only the
//      output's rounding separates the types: o (atol, rtol) f32 (1e-5, 1e-4), f16 (1e-4, 2^-10), bf16 (1e-3, 2^-7)
//      (twice the unit roundoff); lse (fp32 everywhere) (1e-5, 1e-4).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "dialect.h"

#include "../attention_decode_kernels.cuh"
#include "attention_reference.h"

using namespace dalle::cuda;
using namespace dalle::attn_plan;

namespace {

template <class E>
int run(const MaskSpec& s, int B, int H, int D, int Dv, unsigned seed, double atol, double rtol) {
  if (D < 1 || Dv < 1 || D > kAttnMaxWidth || Dv > kAttnMaxWidth || max_row_runs(s) > kDecodeMaxRuns) {
    std::fprintf(stderr, "unsupported shape\n");
    return 2;
  }
  const int T = seq_len(s), Tc = T + 3, Bc = B + 1;
  const float scale = 1.0f / std::sqrt((float)D);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rand16 = [&]() { return to_f32(from_f32<E>(nd(rng))); };  // a value E holds exactly
  // Full caches (every position), widened to fp32 for the reference: (Bc, H, Tc, width).
  std::vector<float> kf((size_t)Bc * H * Tc * D), vf((size_t)Bc * H * Tc * Dv), qf((size_t)B * H * T * D);
  for (auto& x : kf) x = rand16();
  for (auto& x : vf) x = rand16();
  for (auto& x : qf) x = rand16();  // qf: the query of every position, (B, H, T, D)
  const std::vector<int> steps = {0, s.text_len > 0 ? s.text_len - 1 : 0, s.text_len, s.text_len + 1,
                                  s.text_len + s.grid, T - 1};
  double eo = 0, el = 0;
  auto err = [](double got, double want, double a, double r) {
    return std::isfinite(got) ? std::fabs(got - want) / (a + r * std::fabs(want)) : 1e300;
  };
  for (int pos : steps) {
    if (pos >= T) continue;
    // The cache as the kernel sees it: NaN wherever row pos of the mask does not look.
    std::vector<E> kc(kf.size(), from_f32<E>(NAN)), vc(vf.size(), from_f32<E>(NAN));
    for (int b = 0; b < Bc; b++)
      for (int h = 0; h < H; h++)
        for (int j = 0; j <= pos; j++) {
          if (!allowed_seq(s, pos, j)) continue;
          const size_t row = ((size_t)b * H + h) * Tc + j;
          for (int e = 0; e < D; e++) kc[row * D + e] = from_f32<E>(kf[row * D + e]);
          for (int e = 0; e < Dv; e++) vc[row * Dv + e] = from_f32<E>(vf[row * Dv + e]);
        }
    std::vector<E> q((size_t)B * H * D);  // (B, 1, H, D)
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++)
        for (int e = 0; e < D; e++)
          q[((size_t)b * H + h) * D + e] = from_f32<E>(qf[(((size_t)b * H + h) * T + pos) * D + e]);
    std::vector<E> o((size_t)B * H * Dv, from_f32<E>(NAN));
    std::vector<float> lse((size_t)B * H, NAN);
    const DecodeStrides qs{(int64_t)H * D, D, (int64_t)H * D}, ks{(int64_t)H * Tc * D, (int64_t)Tc * D, D},
        vs{(int64_t)H * Tc * Dv, (int64_t)Tc * Dv, Dv};
    launch((unsigned)(B * H), 1, kDecodeThreads, [&] {
      attn_decode_kernel<E>(q.data(), qs, kc.data(), ks, vc.data(), vs, o.data(), lse.data(), H, pos, D, Dv, scale,
                            s);
    });
    std::vector<float> K((size_t)T * D), V((size_t)T * Dv);
    std::vector<double> want(Dv);
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++) {
        const size_t base = ((size_t)b * H + h) * Tc;
        std::copy(kf.begin() + base * D, kf.begin() + (base + T) * D, K.begin());
        std::copy(vf.begin() + base * Dv, vf.begin() + (base + T) * Dv, V.begin());
        const double wl = dalle::emu::dense_row(s, pos, qf.data() + (((size_t)b * H + h) * T + pos) * D, K.data(),
                                                V.data(), T, D, Dv, scale, want.data());
        el = std::max(el, err(lse[(size_t)b * H + h], wl, 1e-5, 1e-4));
        for (int e = 0; e < Dv; e++) eo = std::max(eo, err(to_f32(o[((size_t)b * H + h) * Dv + e]), want[e], atol, rtol));
      }
  }
  std::printf("{\"steps\": %zu, \"o\": %.4g, \"lse\": %.4g}\n", steps.size(), eo, el);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 11) {
    std::fprintf(stderr, "usage: attention_decode_emu KIND TEXT GRID K B H D DV DTYPE SEED\n");
    return 2;
  }
  const std::string kind = argv[1], dtype = argv[9];
  const MaskSpec s{kind == "row" ? kRow : kind == "column" ? kColumn : kConv, std::atoi(argv[2]), std::atoi(argv[3]),
                   std::atoi(argv[4])};
  const std::string bad = check_spec(s);
  if (!bad.empty()) {
    std::fprintf(stderr, "%s\n", bad.c_str());
    return 2;
  }
  const int B = std::atoi(argv[5]), H = std::atoi(argv[6]), D = std::atoi(argv[7]), Dv = std::atoi(argv[8]);
  const unsigned seed = (unsigned)std::atoi(argv[10]);
  if (dtype == "f32") return run<float>(s, B, H, D, Dv, seed, 1e-5, 1e-4);
  if (dtype == "f16") return run<__half>(s, B, H, D, Dv, seed, 1e-4, 1.0 / 1024);
  if (dtype == "bf16") return run<__nv_bfloat16>(s, B, H, D, Dv, seed, 1e-3, 1.0 / 128);
  std::fprintf(stderr, "DTYPE must be f32, f16 or bf16\n");
  return 2;
}
