// Device code of the engine's vector kernels outside ops (native/cpu/blas1.cc: axpy, scale, sumSquares), free of the
// CUDA runtime: blas1.cu launches it, emu/ops_emu.cc runs it on the CPU.
//   axpy:   y += alpha * x            scale:  x *= alpha            (f32, grid-stride)
//   sum of squares: float64, in chunks of kSumSquaresChunk elements, as the CPU kernel's blocks: one CUDA block a
//   chunk writes the chunk's sum into partial[chunk]; the host adds the partials of a tensor in chunk order, then the
//   tensors in list order. Several tensors go in one launch: chunk c belongs to the tensor t with
//   first_chunk[t] <= c < first_chunk[t + 1] (a prefix table on the device, searched by bisection).
#pragma once
#include "smem_reduce.cuh"

namespace dalle {
namespace cuda {
namespace {

constexpr int64_t kSumSquaresChunk = 1 << 14;  // native/cpu/blas1.cc kBlock
constexpr int kSumSquaresThreads = 256;        // a power of two <= kMaxBlock (smem_reduce)

__global__ void axpy_kernel(int64_t n, float alpha, const float* x, float* y) {
  GRID_STRIDE(i, n) y[i] += alpha * x[i];
}

__global__ void scale_kernel(int64_t n, float alpha, float* x) {
  GRID_STRIDE(i, n) x[i] *= alpha;
}

// Tensor t: ptrs[t] (f32), sizes[t] elements; first_chunk (count + 1) the prefix sums of the chunk counts.
// Grid: one block a chunk (blockIdx.x + gridDim.x * blockIdx.y, for more chunks than one grid row holds).
__global__ void sum_squares_kernel(const float* const* ptrs, const int64_t* sizes, const int64_t* first_chunk,
                                   int64_t count, double* partial) {
  DALLE_SHARED double red[kMaxBlock];
  const int64_t c = blockIdx.x + (int64_t)gridDim.x * blockIdx.y;
  if (c >= first_chunk[count]) return;  // the whole block leaves together: no barrier is skipped by some threads only
  int64_t lo = 0, hi = count;  // the last t with first_chunk[t] <= c
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (first_chunk[mid] <= c) lo = mid;
    else hi = mid;
  }
  const float* x = ptrs[lo];
  const int64_t begin = (c - first_chunk[lo]) * kSumSquaresChunk;
  const int64_t end = begin + kSumSquaresChunk < sizes[lo] ? begin + kSumSquaresChunk : sizes[lo];
  double s = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) s += (double)x[i] * (double)x[i];
  s = smem_reduce(s, red, AddOp());
  if (threadIdx.x == 0) partial[c] = s;
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
