// Runs the CUDA backend's op kernels (native/cuda/*_kernels.cuh, the same device code nvcc compiles) on the CPU in the
// emulation dialect (dialect.h) on fresh random inputs, odd sizes included, with small grids so that grid-stride
// loops wrap and row blocks of several widths, and compares each with a float64 (or exact) reference.
// test/cuda/ops-emu.test.ts builds and runs it.
//   ops_emu check SEED      -> one JSON object: for each check, the worst error (|got - want| / (atol + rtol |want|),
//                              <= 1 passes) or the number of mismatching elements of an exact op (0 passes)
//   ops_emu philox K0 K1 OFFSET N KIND A B FILE
//                           -> FILE: the N f32 values of philoxFill (KIND uniform | normal | gumbel), to compare
//                              with the CPU kernel
//   ops_emu cast IN TO_I32 TO_F32
//                           -> the 32-bit words of IN cast as f32 -> i32 (TO_I32) and as i32 -> f32 (TO_F32), to
//                              compare with the CPU kernel
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "dialect.h"

#include "../blas1_kernels.cuh"
#include "../cast_kernels.cuh"
#include "../dense_attention_kernels.cuh"
#include "../copy_kernels.cuh"
#include "../elementwise_kernels.cuh"
#include "../embedding_kernels.cuh"
#include "../pool_kernels.cuh"
#include "../random_kernels.cuh"
#include "../reduce_kernels.cuh"
#include "../softmax_kernels.cuh"

using namespace dalle::cuda;

namespace {

std::mt19937 rng;
std::map<std::string, double> results;  // check -> worst error or mismatch count

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

int64_t randint(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }

// Keeps the worst value of a check.
void record(const std::string& check, double v) {
  auto it = results.find(check);
  if (it == results.end() || !(v <= it->second)) results[check] = v;  // NaN sticks
}

double rel_err(double got, double want, double atol = 1e-6, double rtol = 1e-5) {
  if (std::isnan(want)) return std::isnan(got) ? 0 : INFINITY;
  if (std::isinf(want)) return got == want ? 0 : INFINITY;
  return std::isfinite(got) ? std::fabs(got - want) / (atol + rtol * std::fabs(want)) : INFINITY;
}

unsigned small_grid(int64_t n, unsigned threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>(blocks, 3));  // 3 blocks at most: the loops wrap
}

// A random shape of rank 1..4 with odd extents, its row-major strides, and a permuted (transposed) view's strides.
struct Shape {
  std::vector<int64_t> dims;
  int64_t n = 1;
};

Shape random_shape(int rank, int64_t max_extent) {
  Shape s;
  for (int d = 0; d < rank; d++) {
    s.dims.push_back(randint(1, max_extent) | (d % 2 ? 0 : 1));
    s.n *= s.dims.back();
  }
  return s;
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> st(dims.size());
  int64_t s = 1;
  for (size_t d = dims.size(); d-- > 0;) {
    st[d] = s;
    s *= dims[d];
  }
  return st;
}

// Element offset of row-major index i in `dims` under `strides`.
int64_t offset_of(int64_t i, const std::vector<int64_t>& dims, const std::vector<int64_t>& st) {
  int64_t off = 0;
  for (size_t d = dims.size(); d-- > 0;) {
    off += (i % dims[d]) * st[d];
    i /= dims[d];
  }
  return off;
}

// ---- fill, stridedCopy ----

void check_copy() {
  for (int rep = 0; rep < 6; rep++) {
    const int64_t n = randint(1, 3000);
    std::vector<uint32_t> p(n + 2, 7u);
    const uint32_t bits = 0xC0490FDBu;  // -3.14159f
    launch(small_grid(n, 64), 1, 64, [&] { fill_kernel<uint32_t>(p.data() + 1, n, bits); });
    int64_t bad = p[0] != 7u || p[n + 1] != 7u;
    for (int64_t i = 1; i <= n; i++) bad += p[i] != bits;
    std::vector<uint16_t> h(n, 0);
    launch(small_grid(n, 32), 1, 32, [&] { fill_kernel<uint16_t>(h.data(), n, (uint16_t)0x3c00); });
    for (int64_t i = 0; i < n; i++) bad += h[i] != 0x3c00;
    record("fill", (double)bad);
  }
  // A transposed view of each rank 1..8 (and a broadcast source) made contiguous, into a strided destination.
  for (int rank = 1; rank <= kMaxRank; rank++) {
    const Shape s = random_shape(rank, rank > 5 ? 3 : 7);
    std::vector<int64_t> perm(rank);
    for (int d = 0; d < rank; d++) perm[d] = rank - 1 - d;
    std::vector<int64_t> src_dims(rank);
    for (int d = 0; d < rank; d++) src_dims[d] = s.dims[perm[d]];
    const std::vector<int64_t> src_cont = contiguous_strides(src_dims);
    std::vector<int64_t> ss(rank);
    for (int d = 0; d < rank; d++) ss[perm[d]] = src_cont[d];  // x.permute(perm) strides
    if (rank > 2) ss[1] = 0;                                  // and one broadcast dimension
    std::vector<int64_t> ds = contiguous_strides(s.dims);
    for (auto& v : ds) v *= 2;  // every other slot of the destination
    std::vector<float> src = randn(s.n), dst(2 * s.n, -99.0f);
    StridedShape sh;
    sh.rank = rank;
    for (int d = 0; d < rank; d++) {
      sh.shape[d] = s.dims[d];
      sh.st[0][d] = ds[d];
      sh.st[1][d] = ss[d];
    }
    launch(small_grid(s.n, 64), 1, 64, [&] { strided_copy_kernel<float>(dst.data(), src.data(), sh, s.n); });
    int64_t bad = 0;
    for (int64_t i = 0; i < s.n; i++) {
      bad += dst[offset_of(i, s.dims, ds)] != src[offset_of(i, s.dims, ss)];
      bad += dst[offset_of(i, s.dims, ds) + 1] != -99.0f;  // the slots between are untouched
    }
    record("stridedCopy", (double)bad);
  }
}

// ---- elementwise ----

double unary_ref(int code, double v, double alpha, double beta) {
  switch (code) {
    case kAffine: return (double)(float)alpha * v + (double)(float)beta;
    case kExp: return std::exp(v);
    case kLog: return std::log(v);
    case kSigmoid: return 1.0 / (1.0 + std::exp(-v));
    case kTanh: return std::tanh(v);
    case kRelu: return v < 0 ? 0 : v;
    case kGelu: return 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    case kSqrt: return std::sqrt(v);
    default: return v * v;
  }
}

double gelu_grad_ref(double x) {
  const double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), t = std::tanh(u);
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
}

double binary_ref(int code, double a, double b) {
  switch (code) {
    case kAdd: return a + b;
    case kSub: return a - b;
    case kMul: return a * b;
    case kDiv: return a / b;
    case kReluGrad: return b > 0 ? a : 0;
    case kSigmoidGrad: return a * b * (1.0 - b);
    case kTanhGrad: return a * (1.0 - b * b);
    default: return a * gelu_grad_ref(b);
  }
}

const char* kUnaryNames[] = {"affine", "exp", "log", "sigmoid", "tanh", "relu", "gelu", "sqrt", "square"};
const char* kBinaryNames[] = {"add", "sub", "mul", "div", "reluGrad", "sigmoidGrad", "tanhGrad", "geluGrad"};

void check_elementwise() {
  for (int code = 0; code < kUnaryCodes; code++) {
    for (int rank = 1; rank <= 4; rank++) {
      const Shape s = random_shape(rank, 9);
      // x: the shape's transpose, read through strides (a non-contiguous operand)
      std::vector<int64_t> rev(s.dims.rbegin(), s.dims.rend());
      std::vector<int64_t> xs = contiguous_strides(rev);
      std::reverse(xs.begin(), xs.end());
      std::vector<float> x = randn(s.n, 2.0f);
      if (code == kLog || code == kSqrt) for (auto& v : x) v = std::fabs(v) + 1e-3f;
      std::vector<float> y(s.n, NAN), yf(s.n, NAN);
      const float alpha = 1.7f, beta = -0.3f;
      int64_t n = 0;
      const StridedShape sh = collapse_shape(1, s.dims, &xs, &n);
      launch(small_grid(n, 64), 1, 64, [&] { ew_unary_kernel(code, y.data(), x.data(), sh, n, alpha, beta); });
      launch(small_grid(n, 32), 1, 32, [&] { ew_unary_flat_kernel(code, yf.data(), x.data(), n, alpha, beta); });
      double e = 0, ef = 0;
      for (int64_t i = 0; i < n; i++) {
        e = std::max(e, rel_err(y[i], unary_ref(code, x[offset_of(i, s.dims, xs)], alpha, beta)));
        ef = std::max(ef, rel_err(yf[i], unary_ref(code, x[i], alpha, beta)));
      }
      record(std::string("ewUnary.") + kUnaryNames[code], e);
      record(std::string("ewUnaryFlat.") + kUnaryNames[code], ef);
    }
  }
  for (int code = 0; code < kBinaryCodes; code++) {
    for (int rank = 1; rank <= 4; rank++) {
      const Shape s = random_shape(rank, 9);
      // a: contiguous with its first dimension broadcast (stride 0); b: broadcast along the last dimension.
      std::vector<int64_t> as = contiguous_strides(s.dims), bs = contiguous_strides(s.dims);
      as[0] = 0;
      bs[rank - 1] = 0;
      std::vector<float> a = randn(s.n), b = randn(s.n);
      if (code == kSigmoidGrad) for (auto& v : b) v = 1.0f / (1.0f + std::exp(-v));
      if (code == kTanhGrad) for (auto& v : b) v = std::tanh(v);
      if (code == kDiv) for (auto& v : b) v = v < 0 ? v - 0.5f : v + 0.5f;
      std::vector<float> y(s.n, NAN), yf(s.n, NAN);
      const std::vector<int64_t> st[2] = {as, bs};
      int64_t n = 0;
      const StridedShape sh = collapse_shape(2, s.dims, st, &n);
      launch(small_grid(n, 64), 1, 64, [&] { ew_binary_kernel(code, y.data(), a.data(), b.data(), sh, n); });
      launch(small_grid(n, 32), 1, 32, [&] { ew_binary_flat_kernel(code, yf.data(), a.data(), b.data(), n); });
      double e = 0, ef = 0;
      for (int64_t i = 0; i < n; i++) {
        const double want = binary_ref(code, a[offset_of(i, s.dims, as)], b[offset_of(i, s.dims, bs)]);
        e = std::max(e, rel_err(y[i], want, 1e-6, 2e-5));
        ef = std::max(ef, rel_err(yf[i], binary_ref(code, a[i], b[i]), 1e-6, 2e-5));
      }
      record(std::string("ewBinary.") + kBinaryNames[code], e);
      record(std::string("ewBinaryFlat.") + kBinaryNames[code], ef);
    }
  }
}

// ---- softmax ----

void check_softmax() {
  for (unsigned threads : {32u, 64u, 128u}) {
    for (bool log : {false, true}) {
      const int64_t R = randint(1, 5), C = randint(1, 400) | 1;
      std::vector<float> x = randn(R * C, 3.0f), g = randn(R * C), y(R * C, NAN), dx(R * C, NAN);
      launch((unsigned)R, 1, threads, [&] { softmax_fwd_kernel(x.data(), y.data(), C, log); });
      launch((unsigned)R, 1, threads, [&] { softmax_bwd_kernel(y.data(), g.data(), dx.data(), C, log); });
      double ef = 0, eb = 0;
      for (int64_t r = 0; r < R; r++) {
        double m = -INFINITY, s = 0, sg = 0, sgy = 0;
        for (int64_t j = 0; j < C; j++) m = std::max(m, (double)x[r * C + j]);
        for (int64_t j = 0; j < C; j++) s += std::exp(x[r * C + j] - m);
        std::vector<double> p(C);
        for (int64_t j = 0; j < C; j++) {
          p[j] = std::exp(x[r * C + j] - m) / s;
          sg += g[r * C + j];
          sgy += g[r * C + j] * p[j];
        }
        for (int64_t j = 0; j < C; j++) {
          const double want = log ? x[r * C + j] - m - std::log(s) : p[j];
          const double dwant = log ? g[r * C + j] - p[j] * sg : p[j] * (g[r * C + j] - sgy);
          ef = std::max(ef, rel_err(y[r * C + j], want, 1e-6, 1e-5));
          eb = std::max(eb, rel_err(dx[r * C + j], dwant, 1e-5, 1e-4));
        }
      }
      record(log ? "logSoftmaxForward" : "softmaxForward", ef);
      record(log ? "logSoftmaxBackward" : "softmaxBackward", eb);
    }
  }
}

// ---- reductions ----

void check_reduce() {
  for (int rep = 0; rep < 8; rep++) {
    const int64_t outer = randint(1, 4), R = rep % 4 == 0 ? randint(300, 2000) : randint(1, 40),
                  inner = rep % 2 ? 1 : randint(1, 50);
    std::vector<float> x = randn(outer * R * inner);
    // ties and a NaN: the first maximum / the first NaN must win
    if (rep == 3) for (auto& v : x) v = std::round(v);
    if (rep == 5) x[x.size() / 2] = NAN;
    const double scale = rep % 3 == 0 ? 1.0 / (double)R : 1.0;
    for (int code : {kReduceSum, kReduceMax}) {
      std::vector<float> out(outer * inner, NAN);
      std::vector<int32_t> idx(outer * inner, -7);
      if (inner == 1) {
        launch((unsigned)outer, 1, rep % 4 == 1 ? 32 : 128,
               [&] { reduce_rows_kernel(code, x.data(), R, out.data(), idx.data(), scale); });
      } else {
        launch(small_grid(outer * inner, 32), 1, 32,
               [&] { reduce_cols_kernel(code, x.data(), outer, R, inner, out.data(), idx.data(), scale); });
      }
      double e = 0, bad_idx = 0;
      for (int64_t o = 0; o < outer; o++) {
        for (int64_t c = 0; c < inner; c++) {
          double s = 0;
          float best = x[o * R * inner + c];
          int32_t arg = 0;
          for (int64_t r = 0; r < R; r++) {
            const float v = x[(o * R + r) * inner + c];
            s += v;
            if (v > best || (std::isnan(v) && !std::isnan(best))) {
              best = v;
              arg = (int32_t)r;
            }
          }
          const int64_t i = o * inner + c;
          if (code == kReduceSum) {
            e = std::max(e, rel_err(out[i], s * scale, 1e-6, 1e-6));
          } else {
            bad_idx += idx[i] != arg;
            e = std::max(e, std::isnan(best) ? (std::isnan(out[i]) ? 0.0 : INFINITY) : (out[i] == best ? 0.0 : INFINITY));
          }
        }
      }
      const std::string kind = inner == 1 ? "rows" : "cols";
      if (code == kReduceSum) {
        record("reduce.sum." + kind, e);
      } else {
        record("reduce.max." + kind, e);
        record("reduce.argmax." + kind, bad_idx);
      }
    }
    // max backward: scatter g to the argmax positions; a bad index is skipped and reported.
    std::vector<int32_t> idx(outer * inner);
    for (auto& v : idx) v = (int32_t)randint(0, R - 1);
    std::vector<float> g = randn(outer * inner), dx(outer * R * inner, 0.0f);
    unsigned long long bad = ~0ull;
    launch(small_grid(outer * inner, 32), 1, 32,
           [&] { reduce_max_bwd_kernel(dx.data(), g.data(), idx.data(), outer, R, inner, &bad); });
    double mism = bad != ~0ull;
    for (int64_t o = 0; o < outer; o++)
      for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < inner; c++)
          mism += dx[(o * R + r) * inner + c] != (idx[o * inner + c] == r ? g[o * inner + c] : 0.0f);
    idx.back() = (int32_t)R;  // out of range: reported as its position + 1
    launch(1, 1, 32, [&] { reduce_max_bwd_kernel(dx.data(), g.data(), idx.data(), outer, R, inner, &bad); });
    mism += bad != (unsigned long long)idx.size();
    record("reduceMaxBackward", mism);
  }
}

// ---- embedding ----

void check_embedding() {
  for (int rep = 0; rep < 4; rep++) {
    const int64_t V = randint(1, 50), C = randint(1, 70), N = randint(1, 200);
    std::vector<float> table = randn(V * C), g = randn(N * C), out(N * C, NAN), dt(V * C, 0.0f);
    std::vector<int32_t> idx(N);
    for (auto& v : idx) v = (int32_t)randint(0, V - 1);  // repeated indices: the backward sums them
    unsigned long long bad = ~0ull;
    launch(small_grid(N, 32), 1, 32, [&] { embedding_check_kernel(idx.data(), N, V, &bad); });
    double mism = bad != ~0ull;
    launch(small_grid(N * C, 64), 1, 64, [&] { embedding_fwd_kernel(table.data(), C, idx.data(), N, out.data()); });
    for (int64_t i = 0; i < N; i++)
      for (int64_t c = 0; c < C; c++) mism += out[i * C + c] != table[idx[i] * C + c];
    launch(small_grid(C, 32), 1, 32, [&] { embedding_bwd_kernel(g.data(), idx.data(), N, C, dt.data()); });
    // The CPU kernel's order (positions in order, f32 sums): the same bits.
    std::vector<float> want(V * C, 0.0f);
    for (int64_t i = 0; i < N; i++)
      for (int64_t c = 0; c < C; c++) want[idx[i] * C + c] += g[i * C + c];
    for (int64_t k = 0; k < V * C; k++) mism += dt[k] != want[k];
    idx[N / 2] = rep % 2 ? -1 : (int32_t)V;
    idx[N - 1] = (int32_t)V + 5;
    launch(small_grid(N, 32), 1, 32, [&] { embedding_check_kernel(idx.data(), N, V, &bad); });
    mism += bad != (unsigned long long)(N / 2 + 1);
    record("embedding", mism);
  }
}

// ---- pool ----

void check_pool() {
  for (int rep = 0; rep < 4; rep++) {
    const int64_t planes = randint(1, 6), H = 2 * randint(1, 7), W = 2 * randint(1, 9);
    std::vector<float> x = randn(planes * H * W);
    if (rep == 1) for (auto& v : x) v = std::round(v);  // ties: the first in window order wins
    if (rep == 2) x[3] = NAN;
    const int64_t no = planes * (H / 2) * (W / 2);
    std::vector<float> y(no, -5.0f), dy = randn(no), dx(planes * H * W, NAN), up(planes * 4 * H * W, NAN),
        dup = randn(planes * 4 * H * W), dxu(planes * H * W, NAN);
    std::vector<int32_t> am(no, -1);
    launch(small_grid(no, 32), 1, 32, [&] { maxpool2x2_fwd_kernel(x.data(), y.data(), am.data(), planes, H, W); });
    launch(small_grid(planes * H * W, 64), 1, 64,
           [&] { maxpool2x2_bwd_kernel(dy.data(), am.data(), dx.data(), planes, H, W); });
    launch(small_grid(planes * 4 * H * W, 64), 1, 64, [&] { upsample2x_fwd_kernel(x.data(), up.data(), planes, H, W); });
    launch(small_grid(planes * H * W, 32), 1, 32, [&] { upsample2x_bwd_kernel(dup.data(), dxu.data(), planes, H, W); });
    double mp = 0, us = 0;
    const int64_t Ho = H / 2, Wo = W / 2;
    for (int64_t p = 0; p < planes; p++) {
      for (int64_t i = 0; i < Ho; i++) {
        for (int64_t j = 0; j < Wo; j++) {
          const int64_t o = (p * Ho + i) * Wo + j;
          float best = NAN;
          int32_t arg = -1;
          for (int32_t t = 0; t < 4; t++) {
            const float v = x[(p * H + 2 * i + t / 2) * W + 2 * j + t % 2];
            if (arg < 0 || v > best || (std::isnan(v) && !std::isnan(best))) {
              best = v;
              arg = t;
            }
          }
          mp += am[o] != arg || !(y[o] == best || (std::isnan(y[o]) && std::isnan(best)));
          for (int32_t t = 0; t < 4; t++) mp += dx[(p * H + 2 * i + t / 2) * W + 2 * j + t % 2] != (t == arg ? dy[o] : 0.0f);
        }
      }
      for (int64_t h = 0; h < 2 * H; h++)
        for (int64_t w = 0; w < 2 * W; w++) {
          const float v = up[(p * 2 * H + h) * 2 * W + w], want = x[(p * H + h / 2) * W + w / 2];
          us += !(v == want || (std::isnan(v) && std::isnan(want)));
        }
      for (int64_t h = 0; h < H; h++)
        for (int64_t w = 0; w < W; w++) {
          const float* r0 = dup.data() + (p * 2 * H + 2 * h) * 2 * W + 2 * w;
          const float* r1 = r0 + 2 * W;
          us += dxu[(p * H + h) * W + w] != (r0[0] + r0[1]) + (r1[0] + r1[1]);
        }
    }
    record("maxpool2x2", mp);
    record("upsample2x", us);
  }
}

// ---- axpy, scale, sum of squares (several tensors in one launch) ----

void check_blas1() {
  for (int rep = 0; rep < 4; rep++) {
    const int64_t n = randint(1, 5000) | 1;
    const float alpha = rep % 2 ? -0.75f : 1.3f;
    std::vector<float> x = randn(n), y = randn(n), y0 = y, z = x;
    launch(small_grid(n, 64), 1, 64, [&] { axpy_kernel(n, alpha, x.data(), y.data()); });
    launch(small_grid(n, 32), 1, 32, [&] { scale_kernel(n, alpha, z.data()); });
    double bad = 0;
    for (int64_t i = 0; i < n; i++) bad += y[i] != y0[i] + alpha * x[i];  // one f32 multiply-add, as the CPU loop
    for (int64_t i = 0; i < n; i++) bad += z[i] != x[i] * alpha;
    record("axpy+scale", bad);
  }
  // Tensors of 0, 1, odd and several-chunk sizes in one launch; the grid wraps into y (2 chunks a row).
  const std::vector<int64_t> sizes = {0, 1, 3 * kSumSquaresChunk + 17, 0, 999, kSumSquaresChunk, 5};
  std::vector<std::vector<float>> data;
  std::vector<const float*> ptrs;
  std::vector<int64_t> first(sizes.size() + 1, 0);
  for (size_t t = 0; t < sizes.size(); t++) {
    data.push_back(randn(sizes[t], 3.0f));
    ptrs.push_back(data.back().data());
    first[t + 1] = first[t] + (sizes[t] + kSumSquaresChunk - 1) / kSumSquaresChunk;
  }
  const int64_t chunks = first.back();
  std::vector<double> partial(chunks, NAN);
  launch(2, (unsigned)((chunks + 1) / 2), 64,
         [&] { sum_squares_kernel(ptrs.data(), sizes.data(), first.data(), (int64_t)sizes.size(), partial.data()); });
  double e = 0;
  for (size_t t = 0; t < sizes.size(); t++) {
    for (int64_t c = first[t]; c < first[t + 1]; c++) {
      double want = 0;  // the CPU kernel's chunk, summed in order in float64
      const int64_t lo = (c - first[t]) * kSumSquaresChunk, hi = std::min(lo + kSumSquaresChunk, sizes[t]);
      for (int64_t i = lo; i < hi; i++) want += (double)data[t][i] * data[t][i];
      e = std::max(e, rel_err(partial[c], want, 1e-12, 1e-12));
    }
  }
  record("sumSquares", e);
}

// ---- dense attention (native/cpu/attention.cc's attentionForward / attentionBackward) ----

// One case: strided q, k, v, dO (heads and time swapped in memory), an optional mask with empty rows, causal or not.
void check_dense_attention_case(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv, bool masked,
                                bool causal, const std::string& name) {
  // Layout (B, T, H, width): strides [T H w, w, H w] as a permuted (B, T, H, w) projection.
  auto strides = [&](int64_t T, int64_t w) { return std::vector<int64_t>{T * H * w, w, H * w}; };
  const std::vector<int64_t> qs = strides(Tq, D), ks = strides(Tk, D), vs = strides(Tk, Dv), os = strides(Tq, Dv);
  std::vector<float> q = randn(B * Tq * H * D), k = randn(B * Tk * H * D), v = randn(B * Tk * H * Dv),
                     dO = randn(B * Tq * H * Dv);
  std::vector<int32_t> mask;
  if (masked) {
    mask.resize(Tq * Tk);
    for (auto& m : mask) m = randint(0, 3) != 0;
    if (Tq > 1) for (int64_t j = 0; j < Tk; j++) mask[1 * Tk + j] = 0;  // a row with no allowed key
  }
  DenseAttnGeometry G{};
  G.B = B, G.H = H, G.Tq = Tq, G.Tk = Tk, G.D = D, G.Dv = Dv;
  for (int j = 0; j < 3; j++) G.qs[j] = qs[j], G.ks[j] = ks[j], G.vs[j] = vs[j], G.os[j] = os[j];
  G.mask = masked ? mask.data() : nullptr;
  G.scale = 1.0f / std::sqrt((float)D);
  G.causal = causal;
  const int64_t BH = B * H, rows = BH * Tq, cols = BH * Tk;
  std::vector<float> out(rows * Dv, NAN), lse(rows, NAN), dq(rows * D, NAN), dk(cols * D, NAN), dv(cols * Dv, NAN),
      delta(rows, NAN);
  const unsigned threads = Tk > 40 ? 64 : 32;  // fewer threads than keys: the loops stride
  launch((unsigned)rows, 1, threads, [&] { dense_attn_fwd_kernel(G, q.data(), k.data(), v.data(), out.data(), lse.data()); });
  launch((unsigned)rows, 1, threads, [&] {
    dense_attn_bwd_q_kernel(G, q.data(), k.data(), v.data(), dO.data(), lse.data(), dq.data(), delta.data());
  });
  launch((unsigned)cols, 1, 32, [&] {
    dense_attn_bwd_kv_kernel(G, q.data(), k.data(), v.data(), dO.data(), lse.data(), delta.data(), dk.data(), dv.data());
  });
  // float64 reference
  double ef = 0, el = 0, eq = 0, ekv = 0;
  std::vector<double> rdk(cols * D, 0.0), rdv(cols * Dv, 0.0);
  for (int64_t bh = 0; bh < BH; bh++) {
    const int64_t b = bh / H, h = bh % H;
    auto at = [&](const std::vector<float>& x, const std::vector<int64_t>& st, int64_t t, int64_t c) {
      return (double)x[b * st[0] + h * st[1] + t * st[2] + c];
    };
    for (int64_t i = 0; i < Tq; i++) {
      std::vector<double> s(Tk, -INFINITY), p(Tk, 0.0), dp(Tk, 0.0);
      double m = -INFINITY;
      for (int64_t j = 0; j < Tk; j++) {
        if ((masked && !mask[i * Tk + j]) || (causal && j > i + Tk - Tq)) continue;
        double dot = 0;
        for (int64_t d = 0; d < D; d++) dot += at(q, qs, i, d) * at(k, ks, j, d);
        s[j] = (double)G.scale * dot;
        m = std::max(m, s[j]);
      }
      const int64_t r = bh * Tq + i;
      if (m == -INFINITY) {
        el = std::max(el, lse[r] == -INFINITY ? 0.0 : INFINITY);
        for (int64_t c = 0; c < Dv; c++) ef = std::max(ef, out[r * Dv + c] == 0.0f ? 0.0 : INFINITY);
        for (int64_t d = 0; d < D; d++) eq = std::max(eq, dq[r * D + d] == 0.0f ? 0.0 : INFINITY);
        continue;
      }
      double l = 0;
      for (int64_t j = 0; j < Tk; j++) l += s[j] == -INFINITY ? 0 : std::exp(s[j] - m);
      el = std::max(el, rel_err(lse[r], m + std::log(l), 1e-5, 1e-5));
      double di = 0;
      for (int64_t j = 0; j < Tk; j++) {
        p[j] = s[j] == -INFINITY ? 0 : std::exp(s[j] - m) / l;
        for (int64_t c = 0; c < Dv; c++) dp[j] += at(dO, os, i, c) * at(v, vs, j, c);
        di += p[j] * dp[j];
      }
      for (int64_t c = 0; c < Dv; c++) {
        double o = 0;
        for (int64_t j = 0; j < Tk; j++) o += p[j] * at(v, vs, j, c);
        ef = std::max(ef, rel_err(out[r * Dv + c], o, 1e-5, 1e-4));
      }
      for (int64_t d = 0; d < D; d++) {
        double g = 0;
        for (int64_t j = 0; j < Tk; j++) g += p[j] * (dp[j] - di) * at(k, ks, j, d);
        eq = std::max(eq, rel_err(dq[r * D + d], (double)G.scale * g, 1e-5, 1e-4));
      }
      for (int64_t j = 0; j < Tk; j++) {
        const double ds = p[j] * (dp[j] - di);
        for (int64_t d = 0; d < D; d++) rdk[(bh * Tk + j) * D + d] += (double)G.scale * ds * at(q, qs, i, d);
        for (int64_t c = 0; c < Dv; c++) rdv[(bh * Tk + j) * Dv + c] += p[j] * at(dO, os, i, c);
      }
    }
  }
  for (int64_t x = 0; x < cols * D; x++) ekv = std::max(ekv, rel_err(dk[x], rdk[x], 1e-5, 1e-4));
  for (int64_t x = 0; x < cols * Dv; x++) ekv = std::max(ekv, rel_err(dv[x], rdv[x], 1e-5, 1e-4));
  record("attentionForward." + name, std::max(ef, el));
  record("attentionBackward.dq." + name, eq);
  record("attentionBackward.dkdv." + name, ekv);
}

void check_dense_attention() {
  // CLIP's causal text attention and a full one, odd sizes; queries fewer than keys (the last Tq of Tk positions).
  check_dense_attention_case(2, 3, 7, 7, 5, 3, false, true, "causal");
  check_dense_attention_case(1, 2, 9, 45, 7, 9, true, false, "mask");
  check_dense_attention_case(2, 1, 5, 11, 3, 5, true, true, "maskCausal");
  check_dense_attention_case(1, 3, 4, 13, 9, 4, false, false, "full");
  // The prior's KV-cached decode step: one query, the mask row of its position over the cached keys.
  check_dense_attention_case(3, 2, 1, 37, 8, 8, true, false, "decode");
}

int philox(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr, "usage: ops_emu philox K0 K1 OFFSET N KIND A B FILE\n");
    return 2;
  }
  const uint32_t k0 = (uint32_t)std::strtoul(argv[2], nullptr, 10), k1 = (uint32_t)std::strtoul(argv[3], nullptr, 10);
  const uint64_t offset = std::strtoull(argv[4], nullptr, 10);
  const int64_t n = std::atoll(argv[5]);
  const std::string kind = argv[6];
  const int k = kind == "uniform" ? kPhiloxUniform : kind == "normal" ? kPhiloxNormal : kPhiloxGumbel;
  const double a = std::atof(argv[7]), b = std::atof(argv[8]);
  std::vector<float> v(n, NAN);
  launch(small_grid(n, 64), 1, 64, [&] { philox_fill_kernel(v.data(), n, k0, k1, offset, k, a, b); });
  FILE* f = std::fopen(argv[9], "wb");
  if (!f || std::fwrite(v.data(), sizeof(float), v.size(), f) != v.size()) {
    std::fprintf(stderr, "cannot write %s\n", argv[9]);
    return 1;
  }
  std::fclose(f);
  return 0;
}

bool write_words(const char* file, const void* data, size_t n) {
  FILE* f = std::fopen(file, "wb");
  const bool ok = f && std::fwrite(data, 4, n, f) == n;
  if (f) std::fclose(f);
  if (!ok) std::fprintf(stderr, "cannot write %s\n", file);
  return ok;
}

int cast(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: ops_emu cast IN TO_I32 TO_F32\n");
    return 2;
  }
  std::vector<uint32_t> words;
  FILE* f = std::fopen(argv[2], "rb");
  if (!f) return 1;
  uint32_t w;
  while (std::fread(&w, 4, 1, f) == 1) words.push_back(w);
  std::fclose(f);
  const int64_t n = (int64_t)words.size();
  std::vector<float> as_f32(n);
  std::vector<int32_t> as_i32(n), to_i32(n, 12345);
  std::vector<float> to_f32(n, NAN);
  std::memcpy(as_f32.data(), words.data(), n * 4);
  std::memcpy(as_i32.data(), words.data(), n * 4);
  launch(small_grid(n, 64), 1, 64, [&] { cast_f32_to_i32_kernel(to_i32.data(), as_f32.data(), n); });
  launch(small_grid(n, 32), 1, 32, [&] { cast_i32_to_f32_kernel(to_f32.data(), as_i32.data(), n); });
  return write_words(argv[3], to_i32.data(), n) && write_words(argv[4], to_f32.data(), n) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "philox") return philox(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "cast") return cast(argc, argv);
  if (argc != 3 || std::string(argv[1]) != "check") {
    std::fprintf(stderr, "usage: ops_emu check SEED | ops_emu philox K0 K1 OFFSET N KIND A B FILE | ops_emu cast IN TO_I32 TO_F32\n");
    return 2;
  }
  rng.seed((unsigned)std::atoi(argv[2]));
  check_copy();
  check_elementwise();
  check_softmax();
  check_reduce();
  check_embedding();
  check_pool();
  check_blas1();
  check_dense_attention();
  std::printf("{");
  bool first = true;
  for (const auto& kv : results) {
    std::printf("%s\"%s\": %.6g", first ? "" : ", ", kv.first.c_str(), std::isfinite(kv.second) ? kv.second : 1e300);
    first = false;
  }
  std::printf("}\n");
  return 0;
}
