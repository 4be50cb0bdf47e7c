// Launch-shape helpers shared by every kernel, free of the CUDA runtime so that the emulation (emu/dialect.h) compiles
// the same device code with g++: the grid-stride loop, the elementwise block width, block-level shared arrays.
#pragma once
#include <cstdint>

namespace dalle {
namespace cuda {

constexpr int kThreads = 256;  // threads per block of the elementwise kernels (attention_plan.h elementwise_blocks)

}  // namespace cuda
}  // namespace dalle

// A fixed-size shared array in a kernel: `DALLE_SHARED float red[256];`. Under the emulation (emu/dialect.h, one
// block at a time) a static variable, which all the block's threads share.
#ifdef DALLE_EMU
#define DALLE_SHARED static
#else
#define DALLE_SHARED __shared__
#endif

// for (i = this thread's first element; i < n; i += every thread of the grid)
#define GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)
