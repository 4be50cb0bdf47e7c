// The CUDA backend's launchers: plain C++ declarations shared by the kernels (*.cu, nvcc) and the N-API layer
// (addon.cc, the host compiler). Every pointer is a device address; every launcher runs on the default stream and
// returns "" on success or a message (a CUDA / cuBLASLt error, or a bad argument). Each op mirrors a CPU kernel in
// native/cpu (named at each declaration); on a GPU, the op harness on cuda:0 and test/cuda/gpu.test.ts compare them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "attention_plan.h"
#include "op_codes.h"

namespace dalle {
namespace cuda {

// Element types: fp32, IEEE fp16, bfloat16 (16-bit types are raw bit patterns on the JavaScript side, as in the CPU
// addon). Compute is always fp32. i32 is an element type of cast only (indices, as the CPU addon's cast).
enum DType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI32 = 3 };

inline int64_t dtype_bytes(DType d) { return d == kF32 || d == kI32 ? 4 : 2; }

// ---- attention.cu: block-sparse attention of the prior (attention_plan.h), flash-attention style; exported as
// blockSparseAttentionForward / blockSparseAttentionBackward (the engine's attentionForward / Backward are the dense
// kernels of dense_attention.cu below) ----
// q, k, o (B, H, T, D) / v (B, H, T, Dv) contiguous, sequence order; lse (B, H, T) f32, the log-sum-exp of each row
// (as native/cpu/attention.cc). The backward writes dq, dk, dv (contiguous, dtype dt) and uses `delta` (B, H, T) f32
// as scratch (rowsum(dO * O)).
std::string attention_forward(DType dt, const attn_plan::MaskSpec& spec, const void* q, const void* k, const void* v,
                              void* o, float* lse, int64_t B, int64_t H, int64_t D, int64_t Dv, float scale);
std::string attention_backward(DType dt, const attn_plan::MaskSpec& spec, const void* q, const void* k, const void* v,
                               const void* o, const void* dout, const float* lse, void* dq, void* dk, void* dv,
                               float* delta, int64_t B, int64_t H, int64_t D, int64_t Dv, float scale);
// KV-cache decode (attention_decode_kernels.cuh): q (B, H, 1, D) with strides {batch, head}, caches k (B', H, Tc, D),
// v (B', H, Tc, Dv) with strides {batch, head, time} (elements; last dimension contiguous), o (B, H, 1, Dv) contiguous,
// lse (B, H) f32; the query is sequence position `position` against the cached positions its mask row allows.
std::string attention_decode(DType dt, const attn_plan::MaskSpec& spec, const void* q, const int64_t q_strides[2],
                             const void* k, const int64_t k_strides[3], const void* v, const int64_t v_strides[3],
                             void* o, float* lse, int64_t B, int64_t H, int64_t position, int64_t D, int64_t Dv,
                             float scale);

// ---- dense_attention.cu: the engine's attentionForward / attentionBackward (native/cpu/attention.cc), f32 ----
// Shapes, strides (elements: batch, head, time; unit last stride), the (Tq, Tk) i32 mask or null, scale, causal.
struct DenseAttnGeometry {
  int64_t B, H, Tq, Tk, D, Dv;
  int64_t qs[3], ks[3], vs[3], os[3];  // q, k, v, dO
  const int32_t* mask;
  float scale;
  bool causal;
};
// out (B, H, Tq, Dv), lse (B, H, Tq) contiguous.
std::string dense_attention_forward(const DenseAttnGeometry& g, const float* q, const float* k, const float* v,
                                    float* out, float* lse);
// dq (B, H, Tq, D), dk (B, H, Tk, D), dv (B, H, Tk, Dv) contiguous, each may be null (not wanted); lse from the
// forward. Uses the device workspace for delta (B, H, Tq).
std::string dense_attention_backward(const DenseAttnGeometry& g, const float* q, const float* k, const float* v,
                                     const float* dout, const float* lse, float* dq, float* dk, float* dv);

// ---- blas1.cu: the engine's vector kernels (native/cpu/blas1.cc), f32 ----
std::string axpy(int64_t n, float alpha, const float* x, float* y);
std::string scale(int64_t n, float alpha, float* x);
// The float64 sum of squares of each tensor (ptrs[t], sizes[t] elements) into *sums (host, count values), the CPU
// kernel's chunks summed in its order. One launch, one copy back: synchronizes.
std::string sum_squares(const std::vector<const float*>& ptrs, const std::vector<int64_t>& sizes, double* sums);

// ---- cast.cu, elementwise.cu, adamw.cu, precision.cu, norm.cu, loss.cu, conv.cu ----
// cast (native/cpu/copy.cc): f32 -> f16 / bf16 round to nearest even (NaN stays NaN), 16-bit -> f32 exact; i32 through
// f32 (to i32: truncation toward zero, saturating, NaN -> 0).
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

// ---- the ops the TypeScript engine looks up by name on either backend (the CPU kernel's name and meaning; device
// code in *_kernels.cuh, emulated on the CPU by test/cuda/ops-emu.test.ts). `flag` is a device u64 (flag_slot()). ----
// copy.cu (native/cpu/copy.cc): fill n items of 4 or 2 bytes with a bit pattern; strided copy of items of 1, 2, 4 or
// 8 bytes, rank <= 8, strides in elements.
std::string fill(void* dst, int64_t n, uint32_t bits, int item_bytes);
std::string strided_copy(void* dst, const void* src, int64_t item_bytes, const std::vector<int64_t>& shape,
                         const std::vector<int64_t>& dst_strides, const std::vector<int64_t>& src_strides);
// elementwise.cu (native/cpu/elementwise.cc op codes): y contiguous; operands strided, stride 0 where broadcast.
std::string ew_unary(int code, float* y, const float* x, const std::vector<int64_t>& shape,
                     const std::vector<int64_t>& xs, float alpha, float beta);
std::string ew_unary_flat(int code, int64_t n, float* y, const float* x, float alpha, float beta);
std::string ew_binary(int code, float* y, const float* a, const std::vector<int64_t>& as, const float* b,
                      const std::vector<int64_t>& bs, const std::vector<int64_t>& shape);
std::string ew_binary_flat(int code, int64_t n, float* y, const float* a, const float* b);
// softmax.cu (native/cpu/softmax.cc): over the last axis of (R, C); backward from the forward output y.
std::string softmax_forward(const float* x, float* y, int64_t R, int64_t C, bool log);
std::string softmax_backward(const float* y, const float* g, float* dx, int64_t R, int64_t C, bool log);
// reduce.cu (native/cpu/reduce.cc): code 0 sum * scale, 1 max with the first argmax (idx may be null), over R of
// (outer, R, inner); max backward scatters g into dx (already zero), refusing an index outside [0, R).
std::string reduce(int code, const float* x, int64_t outer, int64_t R, int64_t inner, float* out, int32_t* idx,
                   double scale);
std::string reduce_max_backward(float* dx, const float* g, const int32_t* idx, int64_t outer, int64_t R, int64_t inner,
                                unsigned long long* flag);
// embedding.cu (native/cpu/embedding.cc): indices checked first (an error names the index, its position in
// idx_shape and V; nothing written); the backward overwrites dtable (V, C) with the scatter-add of g (N, C).
std::string embedding_forward(const float* table, int64_t V, int64_t C, const int32_t* idx,
                              const std::vector<int64_t>& idx_shape, float* out, unsigned long long* flag);
std::string embedding_backward(const float* g, const int32_t* idx, int64_t N, int64_t V, int64_t C, float* dtable,
                               unsigned long long* flag);
// pool.cu (native/cpu/pool.cc): NCHW f32, H x W the forward op's input.
std::string maxpool2x2_forward(const float* x, float* y, int32_t* argmax, int64_t B, int64_t C, int64_t H, int64_t W);
std::string maxpool2x2_backward(const float* dy, const int32_t* argmax, float* dx, int64_t B, int64_t C, int64_t H,
                                int64_t W);
std::string upsample2x_forward(const float* x, float* y, int64_t B, int64_t C, int64_t H, int64_t W);
std::string upsample2x_backward(const float* dy, float* dx, int64_t B, int64_t C, int64_t H, int64_t W);
// random.cu (native/cpu/random.cc philoxFill): kind 0 uniform, 1 normal, 2 gumbel.
std::string philox_fill(float* dst, int64_t n, uint32_t k0, uint32_t k1, uint64_t offset, int kind, double a, double b);

// A device u64 for a kernel to report the first bad position in (addon.cc; synchronous users only).
std::string flag_slot(unsigned long long** out);

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
