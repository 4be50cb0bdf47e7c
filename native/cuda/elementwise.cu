// Elementwise kernels on the device (native/cpu/elementwise.cc): GELU (tanh approximation) forward / backward.
#include <cmath>
#include <type_traits>

#include "common.cuh"

namespace dalle {
namespace cuda {
namespace {

// ---- gelu (tanh approximation, as x * sigmoid(2u)) ----

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluK = 0.044715f;

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

template <class T>
__global__ void gelu_fwd_kernel(const T* x, T* y, int64_t n) {
  GRID_STRIDE(i, n) y[i] = from_f32<T>(gelu_f(to_f32(x[i])));
}

template <class T>
__global__ void gelu_bwd_kernel(const T* x, const T* g, T* dx, int64_t n) {
  GRID_STRIDE(i, n) dx[i] = from_f32<T>(to_f32(g[i]) * gelu_grad_f(to_f32(x[i])));
}

}  // namespace

std::string gelu_forward(DType dt, const void* x, void* y, int64_t n) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    gelu_fwd_kernel<T><<<blocks, kThreads>>>((const T*)x, (T*)y, n);
    return launch_error("gelu");
  });
}

std::string gelu_backward(DType dt, const void* x, const void* g, void* dx, int64_t n) {
  const int64_t blocks = elementwise_blocks(n);
  if (blocks == 0) return "";
  return dispatch(dt, [&](auto* t_) {
    using T = std::remove_pointer_t<decltype(t_)>;
    gelu_bwd_kernel<T><<<blocks, kThreads>>>((const T*)x, (const T*)g, (T*)dx, n);
    return launch_error("gelu backward");
  });
}

}  // namespace cuda
}  // namespace dalle
