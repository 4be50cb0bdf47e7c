// Device code of the elementwise maps (native/cpu/elementwise.cc: the same op codes and the portable formulas), free
// of the CUDA runtime: elementwise.cu launches it, emu/ops_emu.cc runs it on the CPU. f32; the output is contiguous,
// operands strided (stride 0 where broadcast), as copy_kernels.cuh StridedShape.
#pragma once
#include <cmath>

#include "copy_kernels.cuh"

namespace dalle {
namespace cuda {

namespace {

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluK = 0.044715f;

// gelu, tanh approximation, as x * sigmoid(2u) (no cancellation for negative x)
__device__ __forceinline__ float gelu_f(float x) {
  const float u = kGeluC * x * (1.0f + kGeluK * x * x);
  return x / (1.0f + expf(-2.0f * u));
}

__device__ __forceinline__ float gelu_grad_f(float x) {
  const float x2 = x * x;
  const float u = kGeluC * x * (1.0f + kGeluK * x2);
  const float s = 1.0f / (1.0f + expf(-2.0f * u));
  const float du = 2.0f * kGeluC * (1.0f + 3.0f * kGeluK * x2);
  return s + x * s * (1.0f - s) * du;
}

__device__ __forceinline__ float ew_unary_f(int code, float v, float alpha, float beta) {
  switch (code) {
    case kAffine: return alpha * v + beta;
    case kExp: return expf(v);
    case kLog: return logf(v);
    case kSigmoid: return 1.0f / (1.0f + expf(-v));
    case kTanh: return tanhf(v);
    case kRelu: return v < 0.0f ? 0.0f : v;  // NaN stays NaN
    case kGelu: return gelu_f(v);
    case kSqrt: return sqrtf(v);
    default: return v * v;  // kSquare
  }
}

// a = incoming gradient g; b = the op's input x (relu, gelu) or output y (sigmoid, tanh) for the *Grad codes
__device__ __forceinline__ float ew_binary_f(int code, float a, float b) {
  switch (code) {
    case kAdd: return a + b;
    case kSub: return a - b;
    case kMul: return a * b;
    case kDiv: return a / b;
    case kReluGrad: return b > 0.0f ? a : 0.0f;
    case kSigmoidGrad: return a * (b * (1.0f - b));
    case kTanhGrad: return a * (1.0f - b * b);
    default: return a * gelu_grad_f(b);  // kGeluGrad
  }
}

// y (contiguous) = f(x strided by s.st[0])
__global__ void ew_unary_kernel(int code, float* y, const float* x, StridedShape s, int64_t n, float alpha, float beta) {
  GRID_STRIDE(i, n) {
    int64_t ox, unused;
    strided_offsets(s, i, &ox, &unused);
    y[i] = ew_unary_f(code, x[ox], alpha, beta);
  }
}

__global__ void ew_unary_flat_kernel(int code, float* y, const float* x, int64_t n, float alpha, float beta) {
  GRID_STRIDE(i, n) y[i] = ew_unary_f(code, x[i], alpha, beta);
}

// y (contiguous) = f(a strided by s.st[0], b strided by s.st[1])
__global__ void ew_binary_kernel(int code, float* y, const float* a, const float* b, StridedShape s, int64_t n) {
  GRID_STRIDE(i, n) {
    int64_t oa, ob;
    strided_offsets(s, i, &oa, &ob);
    y[i] = ew_binary_f(code, a[oa], b[ob]);
  }
}

__global__ void ew_binary_flat_kernel(int code, float* y, const float* a, const float* b, int64_t n) {
  GRID_STRIDE(i, n) y[i] = ew_binary_f(code, a[i], b[i]);
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
