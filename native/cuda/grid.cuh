// Launch-shape helpers shared by every kernel, free of the CUDA runtime so that the emulation (emu/dialect.h) compiles
// the same device code with g++: the grid-stride loop and the elementwise block width.
#pragma once
#include <cstdint>

namespace dalle {
namespace cuda {

constexpr int kThreads = 256;  // threads per block of the elementwise kernels (attention_plan.h elementwise_blocks)

}  // namespace cuda
}  // namespace dalle

// for (i = this thread's first element; i < n; i += every thread of the grid)
#define GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)
