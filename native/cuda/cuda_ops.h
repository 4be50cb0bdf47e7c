// The CUDA backend's launchers: plain C++ declarations shared by the kernels (*.cu, nvcc) and the N-API layer
// (addon.cc, the host compiler). Every pointer is a device address; every launcher runs on the default stream and
// returns "" on success or a message (a CUDA / cuBLASLt error, or a bad argument). Each op mirrors a CPU kernel in
// native/cpu (named at each declaration); src/core/cuda/check.ts compares them on random inputs on a GPU machine.
#pragma once
#include <cstdint>
#include <string>

#include "attention_plan.h"

namespace dalle {
namespace cuda {

// Element types: fp32, IEEE fp16, bfloat16 (16-bit types are raw bit patterns on the JavaScript side, as in the CPU
// addon). Compute is always fp32.
enum DType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

inline int64_t dtype_bytes(DType d) { return d == kF32 ? 4 : 2; }

// ---- attention.cu: block-sparse attention of the prior (attention_plan.h), flash-attention style ----
// q, k, o (B, H, T, D) / v (B, H, T, Dv) contiguous, sequence order; lse (B, H, T) f32, the log-sum-exp of each row
// (as native/cpu/attention.cc). The backward writes dq, dk, dv (contiguous, dtype dt) and uses `delta` (B, H, T) f32
// as scratch (rowsum(dO * O)).
std::string attention_forward(DType dt, const attn_plan::MaskSpec& spec, const void* q, const void* k, const void* v,
                              void* o, float* lse, int64_t B, int64_t H, int64_t D, int64_t Dv, float scale);
std::string attention_backward(DType dt, const attn_plan::MaskSpec& spec, const void* q, const void* k, const void* v,
                               const void* o, const void* dout, const float* lse, void* dq, void* dk, void* dv,
                               float* delta, int64_t B, int64_t H, int64_t D, int64_t Dv, float scale);

// ---- kernels.cu ----
// cast (native/cpu/copy.cc): f32 -> f16 / bf16 round to nearest even (NaN stays NaN), 16-bit -> f32 exact.
std::string cast(void* dst, DType dst_dt, const void* src, DType src_dt, int64_t n);
// gelu, tanh approximation (native/cpu/elementwise.cc gelu_f / gelu_grad_f): y = gelu(x); dx = g * gelu'(x).
std::string gelu_forward(DType dt, const void* x, void* y, int64_t n);
std::string gelu_backward(DType dt, const void* x, const void* g, void* dx, int64_t n);
// Fused AdamW on fp32 master weights (native/cpu/blas1.cc adamw); bc1 = 1 / (1 - b1^step), bc2 = 1 / (1 - b2^step).
std::string adamw(int64_t n, float* p, const float* g, float* m, float* v, float lr, float b1, float b2, float eps,
                  float wd, float gscale, float bc1, float bc2);
// Per-resblock unscale and filter (native/cpu/blas1.cc scaleFilter): y = alpha * x (alpha = 1 / scale) with every
// non-finite product (Inf, NaN, overflow) set to 0; x == y allowed. The number of non-finite products is added to
// *count_dev (one u64, which the caller zeroes).
std::string scale_filter(DType dt, const void* x, void* y, int64_t n, float alpha, unsigned long long* count_dev);
// Layer norm over the last axis (native/cpu/norm.cc): x, y, g, dx (R, C) of dt; gain, bias, dgain, dbias (C) f32;
// mean, rstd (R) f32. Backward: any of dx, dgain, dbias may be null.
std::string layer_norm_forward(DType dt, const void* x, const float* gain, const float* bias, void* y, float* mean,
                               float* rstd, int64_t R, int64_t C, float eps);
std::string layer_norm_backward(DType dt, const void* x, const float* gain, const float* mean, const float* rstd,
                                const void* g, void* dx, float* dgain, float* dbias, int64_t R, int64_t C);
// Softmax cross-entropy (native/cpu/loss.cc), f32: logits (N, V), targets i32 (N), weights (N) or null. `ws` is
// device scratch of at least 4 doubles. out: one f32; lse, nll (N). g: device address of the loss gradient.
std::string cross_entropy_forward(const float* logits, int64_t N, int64_t V, const int32_t* targets, const float* weights,
                                  bool has_ignore, int32_t ignore, bool mean, float* out, float* lse, float* nll,
                                  double* ws);
std::string cross_entropy_backward(const float* logits, int64_t N, int64_t V, const int32_t* targets,
                                   const float* weights, bool has_ignore, int32_t ignore, bool mean, const float* lse,
                                   const float* nll, const float* g, float* dlogits, float* dweights, double* ws);
// conv2d helpers (NCHW f32, stride 1, same padding, odd k; native/cpu/conv.cc's GEMM path):
// col (B, C*k*k, H*W) with col[b][(c*k + kh)*k + kw][h*W + w] = x[b][c][h + kh - p][w + kw - p] (zero outside).
std::string im2col(const float* x, float* col, int64_t B, int64_t C, int64_t H, int64_t W, int64_t k);
// dx (B, C, H, W) = the adjoint of im2col applied to dcol (overwrites dx).
std::string col2im(const float* dcol, float* dx, int64_t B, int64_t C, int64_t H, int64_t W, int64_t k);
// y (B, Co, HW) += bias[co];  db[co] = sum over b, hw of dy (overwrites db).
std::string add_channel_bias(float* y, const float* bias, int64_t B, int64_t Co, int64_t HW);
std::string channel_bias_grad(const float* dy, float* db, int64_t B, int64_t Co, int64_t HW);

// ---- gemm.cc: cuBLASLt, loaded at run time (dlopen) so the addon builds and loads without it ----
// Row-major like native/cpu/gemm.h: C = alpha * op(A) @ op(B) + beta * C, op(A) (M, K), op(B) (K, N), C (M, N); matrix
// b of a batch at A + b * stride_a elements (0 broadcasts). A, B, C all of dt; fp32 accumulation (tensor cores for
// fp16 / bf16; fp32 uses them too when tf32 is set).
std::string gemm(DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
                 int64_t lda, int64_t stride_a, const void* Bm, int64_t ldb, int64_t stride_b, float beta, void* C,
                 int64_t ldc, int64_t stride_c, int64_t batch, bool tf32);
// "" when cuBLASLt is loaded (loading it if needed), else why not.
std::string cublaslt_load();

// Device workspace, grown on demand and kept (freed at exit by the driver).
std::string workspace(size_t bytes, void** out);

}  // namespace cuda
}  // namespace dalle
