// Softmax cross-entropy forward and backward (native/cpu/loss.cc): one block per row for lse / nll, totals summed in
// a fixed order by one block, targets checked on the device (the smallest bad row is reported).
#include <cmath>

#include "common.cuh"
#include "block_reduce.cuh"

namespace dalle {
namespace cuda {
namespace {

// ---- cross-entropy ----

struct TargetsDev {
  const int32_t* t;
  const float* w;
  bool has_ignore;
  int32_t ignore;
  __device__ bool ignored(int64_t n) const { return has_ignore && t[n] == ignore; }
  __device__ double weight(int64_t n) const { return w ? (double)w[n] : 1.0; }
};

// One block per row: lse and nll; a bad target sets *bad to row + 1 (the smallest such row wins).
__global__ void ce_rows_kernel(const float* x, int64_t V, TargetsDev tg, float* lse, float* nll,
                               unsigned long long* bad) {
  __shared__ float red[32];
  const int64_t n = blockIdx.x;
  if (tg.ignored(n)) {
    if (threadIdx.x == 0) {
      lse[n] = 0;
      nll[n] = 0;
    }
    return;
  }
  const int32_t t = tg.t[n];
  if (t < 0 || t >= V) {
    if (threadIdx.x == 0) atomicMin(bad, (unsigned long long)(n + 1));
    return;
  }
  const float* xr = x + n * V;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, xr[j]);
  m = block_max(m, red);
  float s = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(xr[j] - m);
  s = block_sum(s, red);
  if (threadIdx.x == 0) {
    const float l = m + logf(s);
    lse[n] = l;
    nll[n] = l - xr[t];
  }
}

// ws[0] = sum w * nll, ws[1] = sum w over rows not ignored, summed in a fixed order by one block.
__global__ void ce_totals_kernel(const float* nll, int64_t N, TargetsDev tg, double* ws) {
  __shared__ double red[32];
  double s = 0, d = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    if (tg.ignored(n)) continue;
    const double w = tg.weight(n);
    s += w * (double)nll[n];
    d += w;
  }
  s = block_sum(s, red);
  d = block_sum(d, red);
  if (threadIdx.x == 0) {
    ws[0] = s;
    ws[1] = d;
  }
}

__global__ void ce_loss_kernel(const double* ws, bool mean, float* out) {
  const double total = ws[0], denom = ws[1];
  out[0] = (float)(mean ? (denom != 0 ? total / denom : 0.0) : total);
}

__global__ void ce_bwd_kernel(const float* x, int64_t N, int64_t V, TargetsDev tg, bool mean, const float* lse,
                              const float* nll, const float* gp, float* dx, float* dw, const double* ws) {
  const double total = ws[0], denom = ws[1], g = gp[0];
  const double scale = mean ? (denom != 0 ? g / denom : 0.0) : g;
  const double loss = mean ? (denom != 0 ? total / denom : 0.0) : total;
  const int64_t n = blockIdx.x;
  const bool ign = tg.ignored(n);
  if (dw && threadIdx.x == 0) dw[n] = ign ? 0.0f : (float)(mean ? scale * ((double)nll[n] - loss) : g * (double)nll[n]);
  if (!dx) return;
  float* dr = dx + n * V;
  if (ign || scale == 0) {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dr[j] = 0.0f;
    return;
  }
  const float coef = (float)(tg.weight(n) * scale);
  const float l = lse[n];
  const int32_t t = tg.t[n];
  const float* xr = x + n * V;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const float p = expf(xr[j] - l) * coef;
    dr[j] = j == t ? p - coef : p;
  }
}

__global__ void ce_check_kernel(int64_t N, int64_t V, TargetsDev tg, unsigned long long* bad) {
  GRID_STRIDE(n, N) {
    if (tg.ignored(n)) continue;
    const int32_t t = tg.t[n];
    if (t < 0 || t >= V) atomicMin(bad, (unsigned long long)(n + 1));
  }
}

}  // namespace

namespace {
// The smallest bad row, or 0; copies one value back (synchronizes).
std::string check_bad_targets(const char* op, unsigned long long* bad_dev, const int32_t* targets, int64_t V,
                              bool has_ignore, int32_t ignore) {
  unsigned long long bad = 0;
  std::string e = cuda_error(op, cudaMemcpy(&bad, bad_dev, sizeof(bad), cudaMemcpyDeviceToHost));
  if (!e.empty()) return e;
  if (bad == ~0ull || bad == 0) return "";
  int32_t t = 0;
  cudaMemcpy(&t, targets + (bad - 1), sizeof(t), cudaMemcpyDeviceToHost);
  return std::string(op) + ": target " + std::to_string(t) + " at row " + std::to_string(bad - 1) +
         " is out of range for " + std::to_string(V) + " classes" +
         (has_ignore ? " (and is not the ignoreIndex " + std::to_string(ignore) + ")" : "");
}
}  // namespace

std::string cross_entropy_forward(const float* logits, int64_t N, int64_t V, const int32_t* targets, const float* weights,
                                  bool has_ignore, int32_t ignore, bool mean, float* out, float* lse, float* nll,
                                  double* ws) {
  const TargetsDev tg{targets, weights, has_ignore, ignore};
  unsigned long long* bad = (unsigned long long*)(ws + 2);
  std::string e = cuda_error("crossEntropy", cudaMemset(bad, 0xff, sizeof(unsigned long long)));
  if (!e.empty()) return e;
  if (N > 2147483647) return "crossEntropy: too many rows";
  if (N > 0) ce_rows_kernel<<<(unsigned)N, row_threads(V)>>>(logits, V, tg, lse, nll, bad);
  ce_totals_kernel<<<1, 1024>>>(nll, N, tg, ws);
  ce_loss_kernel<<<1, 1>>>(ws, mean, out);
  e = launch_error("crossEntropy");
  if (!e.empty()) return e;
  return check_bad_targets("crossEntropy", bad, targets, V, has_ignore, ignore);
}

std::string cross_entropy_backward(const float* logits, int64_t N, int64_t V, const int32_t* targets,
                                   const float* weights, bool has_ignore, int32_t ignore, bool mean, const float* lse,
                                   const float* nll, const float* g, float* dlogits, float* dweights, double* ws) {
  if (N == 0) return "";
  if (N > 2147483647) return "crossEntropy backward: too many rows";
  const TargetsDev tg{targets, weights, has_ignore, ignore};
  unsigned long long* bad = (unsigned long long*)(ws + 2);
  std::string e = cuda_error("crossEntropy backward", cudaMemset(bad, 0xff, sizeof(unsigned long long)));
  if (!e.empty()) return e;
  ce_check_kernel<<<elementwise_blocks(N), kThreads>>>(N, V, tg, bad);
  e = check_bad_targets("crossEntropy backward", bad, targets, V, has_ignore, ignore);
  if (!e.empty()) return e;
  ce_totals_kernel<<<1, 1024>>>(nll, N, tg, ws);
  ce_bwd_kernel<<<(unsigned)N, row_threads(V)>>>(logits, N, V, tg, mean, lse, nll, g, dlogits, dweights, ws);
  return launch_error("crossEntropy backward");
}

}  // namespace cuda
}  // namespace dalle
