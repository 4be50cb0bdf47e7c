// conv2d dev harness (llm.c style): a float64 reference, a check of the library's kernels on every ISA and thread
// count against it (and bitwise equality across thread counts), then a benchmark at the dVAE's shapes.
//   native/dev/conv/build.sh && native/dev/bin/conv_dev check
//   native/dev/bin/conv_dev bench [reps] [filter]        (GFLOP/s against 2 threads x 64 FLOP/cycle x 3.3 GHz)
// Key: B batch, C in channels, Co out channels, H x W image, k kernel (odd, same padding, stride 1).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "conv.h"
#include "cpu_features.h"
#include "threadpool.h"

using namespace dalle;

struct Shape {
  const char* name;
  int64_t B, C, Co, H, W, k;
  bool dx;
};

static void ref_forward(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                        std::vector<double>& y, const Shape& s) {
  const int64_t p = s.k / 2;
  y.assign(s.B * s.Co * s.H * s.W, 0.0);
  for (int64_t n = 0; n < s.B; n++)
    for (int64_t o = 0; o < s.Co; o++)
      for (int64_t h = 0; h < s.H; h++)
        for (int64_t q = 0; q < s.W; q++) {
          double acc = b.empty() ? 0.0 : b[o];
          for (int64_t c = 0; c < s.C; c++)
            for (int64_t kh = 0; kh < s.k; kh++)
              for (int64_t kw = 0; kw < s.k; kw++) {
                int64_t hi = h + kh - p, wi = q + kw - p;
                if (hi < 0 || hi >= s.H || wi < 0 || wi >= s.W) continue;
                acc += (double)x[((n * s.C + c) * s.H + hi) * s.W + wi] * w[((o * s.C + c) * s.k + kh) * s.k + kw];
              }
          y[((n * s.Co + o) * s.H + h) * s.W + q] = acc;
        }
}

static void ref_backward(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& dy,
                         std::vector<double>& dx, std::vector<double>& dw, std::vector<double>& db, const Shape& s) {
  const int64_t p = s.k / 2;
  dx.assign(x.size(), 0.0);
  dw.assign(w.size(), 0.0);
  db.assign(s.Co, 0.0);
  for (int64_t n = 0; n < s.B; n++)
    for (int64_t o = 0; o < s.Co; o++)
      for (int64_t h = 0; h < s.H; h++)
        for (int64_t q = 0; q < s.W; q++) {
          double g = dy[((n * s.Co + o) * s.H + h) * s.W + q];
          db[o] += g;
          for (int64_t c = 0; c < s.C; c++)
            for (int64_t kh = 0; kh < s.k; kh++)
              for (int64_t kw = 0; kw < s.k; kw++) {
                int64_t hi = h + kh - p, wi = q + kw - p;
                if (hi < 0 || hi >= s.H || wi < 0 || wi >= s.W) continue;
                int64_t xi = ((n * s.C + c) * s.H + hi) * s.W + wi, wj = ((o * s.C + c) * s.k + kh) * s.k + kw;
                dx[xi] += g * w[wj];
                dw[wj] += g * x[xi];
              }
        }
}

// max |a - r| / (atol + |r|) style check: |a - r| <= tol * (scale), scale = sqrt(sum of squared terms) proxy: here
// the reference magnitude plus the typical term size.
static double max_err(const std::vector<float>& a, const std::vector<double>& r, double floor_) {
  double worst = 0;
  for (size_t i = 0; i < r.size(); i++) {
    double e = std::fabs(a[i] - r[i]) / (std::fabs(r[i]) + floor_);
    if (!(e <= worst)) worst = e;
  }
  return worst;
}

static std::vector<float> randv(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& f : v) f = u(rng);
  return v;
}

static int check() {
  std::mt19937 rng(1234);
  std::vector<Shape> shapes = {
      {"k3 tiny", 1, 1, 1, 1, 1, 3, true},      {"k3 odd", 3, 3, 7, 5, 7, 3, true},
      {"k3 33", 3, 33, 7, 7, 5, 3, true},       {"k3 16x16", 2, 7, 33, 16, 16, 3, true},
      {"k3 wide", 1, 5, 9, 3, 37, 3, true},     {"k5 odd", 3, 7, 3, 7, 5, 5, true},
      {"k5 16", 1, 3, 17, 16, 16, 5, true},     {"k7", 3, 3, 7, 7, 16, 7, true},
      {"k7 in", 2, 3, 16, 19, 21, 7, true},     {"k1", 3, 33, 7, 5, 7, 1, true},
      {"k1 16", 2, 16, 33, 16, 16, 1, true},    {"k9", 1, 2, 3, 5, 11, 9, true},
      {"k3 32x32", 3, 5, 6, 32, 32, 3, true},  {"k3 37x35", 2, 9, 10, 37, 35, 3, true},
      {"k1 40x33", 3, 7, 5, 40, 33, 1, true},  {"k1 c80", 2, 80, 70, 16, 52, 1, true},
      {"k3 hw1", 3, 4, 5, 1, 1, 3, true},       {"k3 40", 2, 9, 10, 9, 40, 3, true},
  };
  const char* isas[] = {"portable", "avx2", "avx512"};
  int failures = 0;
  for (const Shape& s : shapes) {
    auto x = randv(s.B * s.C * s.H * s.W, rng), w = randv(s.Co * s.C * s.k * s.k, rng), b = randv(s.Co, rng);
    auto dy = randv(s.B * s.Co * s.H * s.W, rng);
    std::vector<double> ry, rdx, rdw, rdb;
    ref_forward(x, w, b, ry, s);
    ref_backward(x, w, dy, rdx, rdw, rdb, s);
    for (const char* isa : isas) {
      set_isa_cap(!strcmp(isa, "portable") ? Isa::Portable : !strcmp(isa, "avx2") ? Isa::Avx2 : Isa::Avx512);
      std::vector<float> out[2][4];
      for (int t = 1; t <= 2; t++) {
        set_num_threads(t);
        std::vector<float> y(ry.size(), NAN), dx(x.size(), NAN), dw(w.size(), NAN), db(s.Co, NAN);
        conv2d_forward(x.data(), w.data(), b.data(), y.data(), s.B, s.C, s.Co, s.H, s.W, s.k);
        conv2d_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), s.B, s.C, s.Co, s.H, s.W, s.k);
        // error relative to |ref| + sqrt(terms) (fp32 rounding grows like the square root of the sum length)
        double ey = max_err(y, ry, std::sqrt((double)s.C * s.k * s.k));
        double edx = max_err(dx, rdx, std::sqrt((double)s.Co * s.k * s.k));
        double edw = max_err(dw, rdw, std::sqrt((double)s.B * s.H * s.W));
        double edb = max_err(db, rdb, std::sqrt((double)s.B * s.H * s.W));
        bool ok = ey < 1e-5 && edx < 1e-5 && edw < 1e-5 && edb < 1e-5;
        printf("%-9s %-8s t%d  y %.1e dx %.1e dw %.1e db %.1e %s\n", s.name, isa, t, ey, edx, edw, edb,
               ok ? "ok" : "FAIL");
        failures += !ok;
        out[t - 1][0] = y, out[t - 1][1] = dx, out[t - 1][2] = dw, out[t - 1][3] = db;
      }
      for (int i = 0; i < 4; i++)
        if (memcmp(out[0][i].data(), out[1][i].data(), out[0][i].size() * 4)) {
          printf("%-9s %-8s output %d differs between 1 and 2 threads\n", s.name, isa, i);
          failures++;
        }
    }
  }
  set_isa_cap(Isa::Avx512);
  printf(failures ? "%d FAILURES\n" : "all ok\n", failures);
  return failures ? 1 : 0;
}

// Wall time, or with CPUTIME=1 the process's CPU time divided by the thread count (robust when other processes share
// the two cores: time spent descheduled is not counted; spin-waiting in the pool is).
static double now_ms() {
  static const bool cpu = getenv("CPUTIME") != nullptr;
  if (cpu) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6) / num_threads();
  }
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static int bench(int reps, const char* filter) {
  std::vector<Shape> shapes = {
      {"3x3 64->16 @64", 16, 64, 16, 64, 64, 3, true},    {"3x3 16->16 @64", 16, 16, 16, 64, 64, 3, true},
      {"3x3 16->64 @64", 16, 16, 64, 64, 64, 3, true},    {"3x3 64->32 @32", 16, 64, 32, 32, 32, 3, true},
      {"3x3 32->32 @32", 16, 32, 32, 32, 32, 3, true},    {"3x3 32->128 @32", 16, 32, 128, 32, 32, 3, true},
      {"3x3 128->64 @16", 16, 128, 64, 16, 16, 3, true},  {"3x3 64->64 @16", 16, 64, 64, 16, 16, 3, true},
      {"3x3 64->256 @16", 16, 64, 256, 16, 16, 3, true},  {"7x7 3->64 @64", 16, 3, 64, 64, 64, 7, false},
      {"1x1 16->64 @64", 16, 16, 64, 64, 64, 1, true},    {"1x1 128->64 @64", 16, 128, 64, 64, 64, 1, true},
      {"1x1 256->1024 @16", 16, 256, 1024, 16, 16, 1, true}, {"1x1 1024->128 @16", 16, 1024, 128, 16, 16, 1, true},
      {"1x1 128->16 @64", 16, 128, 16, 64, 64, 1, true},   {"1x1 64->6 @64", 16, 64, 6, 64, 64, 1, true},
      {"1x1 256->128 @32", 16, 256, 128, 32, 32, 1, true}, {"1x1 256->32 @32", 16, 256, 32, 32, 32, 1, true},
      {"1x1 64->128 @32", 16, 64, 128, 32, 32, 1, true},   {"1x1 128->256 @16", 16, 128, 256, 16, 16, 1, true},
  };
  std::mt19937 rng(1);
  const double peak = num_threads() * 64 * 3.3;  // GFLOP/s
  printf("%-20s %9s %9s %9s %9s | GFLOP/s fwd dx dw (%% of %.0f)\n", "shape", "fwd ms", "dx ms", "dw+db ms", "step ms",
         peak);
  for (const Shape& s : shapes) {
    if (filter && !strstr(s.name, filter)) continue;
    auto x = randv(s.B * s.C * s.H * s.W, rng), w = randv(s.Co * s.C * s.k * s.k, rng), b = randv(s.Co, rng);
    auto dy = randv(s.B * s.Co * s.H * s.W, rng);
    std::vector<float> y(dy.size()), dx(x.size()), dw(w.size()), db(s.Co);
    double best[3] = {1e30, 1e30, 1e30};
    for (int r = 0; r < reps + 2; r++) {
      double t0 = now_ms();
      conv2d_forward(x.data(), w.data(), b.data(), y.data(), s.B, s.C, s.Co, s.H, s.W, s.k);
      double t1 = now_ms();
      if (s.dx) conv2d_backward(x.data(), w.data(), dy.data(), dx.data(), nullptr, nullptr, s.B, s.C, s.Co, s.H, s.W, s.k);
      double t2 = now_ms();
      conv2d_backward(x.data(), w.data(), dy.data(), nullptr, dw.data(), db.data(), s.B, s.C, s.Co, s.H, s.W, s.k);
      double t3 = now_ms();
      if (r >= 2) {
        best[0] = std::min(best[0], t1 - t0);
        best[1] = std::min(best[1], t2 - t1);
        best[2] = std::min(best[2], t3 - t2);
      }
    }
    double flop = 2.0 * s.B * s.H * s.W * s.Co * s.C * s.k * s.k / 1e6;  // MFLOP per pass
    printf("%-20s %9.3f %9.3f %9.3f %9.3f | %6.0f %6.0f %6.0f (%2.0f%% %2.0f%% %2.0f%%)\n", s.name, best[0], best[1],
           best[2], best[0] + best[1] + best[2], flop / best[0], s.dx ? flop / best[1] : 0, flop / best[2],
           100 * flop / best[0] / peak, s.dx ? 100 * flop / best[1] / peak : 0, 100 * flop / best[2] / peak);
  }
  return 0;
}

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "check";
  if (mode == "check") return check();
  set_num_threads(getenv("THREADS") ? atoi(getenv("THREADS")) : 2);
  return bench(argc > 2 ? atoi(argv[2]) : 10, argc > 3 ? argv[3] : nullptr);
}
