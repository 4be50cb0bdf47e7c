// Elementwise kernels on the device (native/cpu/elementwise.cc): GELU (tanh approximation) forward / backward in the
// three element types, and the f32 maps ewUnary / ewBinary (strided, broadcasting) and their flat forms, whose device
// code is elementwise_kernels.cuh (emulated on the CPU by test/cuda/ops-emu.test.ts).
#include <cmath>
#include <type_traits>

#include "common.cuh"
#include "elementwise_kernels.cuh"

namespace dalle {
namespace cuda {
namespace {

// ---- gelu (tanh approximation, as x * sigmoid(2u)) ----

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

namespace {
unsigned blocks_of(int64_t n) { return (unsigned)elementwise_blocks(n); }
}  // namespace

std::string ew_unary(int code, float* y, const float* x, const std::vector<int64_t>& shape,
                     const std::vector<int64_t>& xs, float alpha, float beta) {
  int64_t n = 0;
  const StridedShape s = collapse_shape(1, shape, &xs, &n);
  if (n == 0) return "";
  ew_unary_kernel<<<blocks_of(n), kThreads>>>(code, y, x, s, n, alpha, beta);
  return launch_error("ewUnary");
}

std::string ew_unary_flat(int code, int64_t n, float* y, const float* x, float alpha, float beta) {
  if (n == 0) return "";
  ew_unary_flat_kernel<<<blocks_of(n), kThreads>>>(code, y, x, n, alpha, beta);
  return launch_error("ewUnaryFlat");
}

std::string ew_binary(int code, float* y, const float* a, const std::vector<int64_t>& as, const float* b,
                      const std::vector<int64_t>& bs, const std::vector<int64_t>& shape) {
  const std::vector<int64_t> st[2] = {as, bs};
  int64_t n = 0;
  const StridedShape s = collapse_shape(2, shape, st, &n);
  if (n == 0) return "";
  ew_binary_kernel<<<blocks_of(n), kThreads>>>(code, y, a, b, s, n);
  return launch_error("ewBinary");
}

std::string ew_binary_flat(int code, int64_t n, float* y, const float* a, const float* b) {
  if (n == 0) return "";
  ew_binary_flat_kernel<<<blocks_of(n), kThreads>>>(code, y, a, b, n);
  return launch_error("ewBinaryFlat");
}

}  // namespace cuda
}  // namespace dalle
