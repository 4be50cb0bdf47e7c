// The engine's dense attention with an arbitrary mask on the device (native/cpu/attention.cc's attentionForward /
// attentionBackward), f32; device code in dense_attention_kernels.cuh: one block a query row (forward, dq) or key row
// (dk, dv), the row's scores in dynamic shared memory. Used by CLIP and by the prior's KV-cached decode step (Tq = 1).
#include "common.cuh"
#include "dense_attention_kernels.cuh"

namespace dalle {
namespace cuda {
namespace {

// Grid of `blocks` blocks in x (at most 2^31 - 1), its dynamic shared memory opted in above 48 KiB when needed.
template <class K>
std::string prepare(const char* op, K kernel, int64_t blocks, int64_t smem_bytes) {
  if (blocks > 2147483647) return std::string(op) + ": too many rows for one grid";
  if (smem_bytes > (48 << 10)) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_bytes);
    if (e != cudaSuccess) {
      return std::string(op) + ": a row needs " + std::to_string(smem_bytes) +
             " bytes of shared memory, more than this GPU gives a block (sequence too long): " + cudaGetErrorString(e);
    }
  }
  return "";
}

}  // namespace

std::string dense_attention_forward(const DenseAttnGeometry& g, const float* q, const float* k, const float* v,
                                    float* out, float* lse) {
  const int64_t rows = g.B * g.H * g.Tq;
  if (rows == 0) return "";
  const int64_t bytes = (g.D + g.Tk) * 4;
  std::string err = prepare("attention", dense_attn_fwd_kernel, rows, bytes);
  if (!err.empty()) return err;
  dense_attn_fwd_kernel<<<(unsigned)rows, kDenseAttnThreads, bytes>>>(g, q, k, v, out, lse);
  return launch_error("attention");
}

std::string dense_attention_backward(const DenseAttnGeometry& g, const float* q, const float* k, const float* v,
                                     const float* dout, const float* lse, float* dq, float* dk, float* dv) {
  const char* op = "attention backward";
  const int64_t BH = g.B * g.H, rows = BH * g.Tq, cols = BH * g.Tk;
  if (BH == 0) return "";
  if (g.Tq == 0 || g.Tk == 0) {  // nothing attends: every gradient is zero
    std::string err;
    if (dq && rows) err = cuda_error(op, cudaMemsetAsync(dq, 0, rows * g.D * 4));
    if (err.empty() && dk && cols) err = cuda_error(op, cudaMemsetAsync(dk, 0, cols * g.D * 4));
    if (err.empty() && dv && cols) err = cuda_error(op, cudaMemsetAsync(dv, 0, cols * g.Dv * 4));
    return err;
  }
  void* ws = nullptr;
  std::string err = workspace((size_t)rows * 4, &ws);
  if (!err.empty()) return std::string(op) + ": " + err;
  float* delta = static_cast<float*>(ws);
  const int64_t qbytes = (g.D + 2 * g.Tk) * 4, kbytes = (g.D + g.Dv + 2 * g.Tq) * 4;
  err = prepare(op, dense_attn_bwd_q_kernel, rows, qbytes);
  if (!err.empty()) return err;
  dense_attn_bwd_q_kernel<<<(unsigned)rows, kDenseAttnThreads, qbytes>>>(g, q, k, v, dout, lse, dq, delta);
  err = launch_error(op);
  if (!err.empty() || (!dk && !dv)) return err;
  err = prepare(op, dense_attn_bwd_kv_kernel, cols, kbytes);
  if (!err.empty()) return err;
  dense_attn_bwd_kv_kernel<<<(unsigned)cols, kDenseAttnThreads, kbytes>>>(g, q, k, v, dout, lse, delta, dk, dv);
  return launch_error(op);
}

}  // namespace cuda
}  // namespace dalle
