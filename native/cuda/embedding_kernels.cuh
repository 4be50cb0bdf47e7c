// Device code of the embedding lookup and its backward (native/cpu/embedding.cc), free of the CUDA runtime:
// embedding.cu launches it, emu/ops_emu.cc runs it on the CPU. Table (V, C) f32, indices i32 (N).
#pragma once
#include <cstdint>

#include "grid.cuh"

namespace dalle {
namespace cuda {
namespace {

// The smallest position n with an index outside [0, V), plus one, into *bad (left alone when all are valid).
__global__ void embedding_check_kernel(const int32_t* idx, int64_t n, int64_t V, unsigned long long* bad) {
  GRID_STRIDE(i, n) {
    if (idx[i] < 0 || idx[i] >= V) atomicMin(bad, (unsigned long long)(i + 1));
  }
}

// out[n, c] = table[idx[n], c] (indices checked before).
__global__ void embedding_fwd_kernel(const float* table, int64_t C, const int32_t* idx, int64_t n, float* out) {
  GRID_STRIDE(e, n * C) {
    const int64_t i = e / C, c = e % C;
    out[e] = table[(int64_t)idx[i] * C + c];
  }
}

// dtable (V, C) = the scatter-add of g (N, C): one thread per column, positions in order 0, 1, ... (the CPU kernel's
// order, so the sums are the same bits, with no atomics). dtable is zeroed first by the launcher.
__global__ void embedding_bwd_kernel(const float* g, const int32_t* idx, int64_t n, int64_t C, float* dtable) {
  GRID_STRIDE(c, C) {
    for (int64_t i = 0; i < n; i++) dtable[(int64_t)idx[i] * C + c] += g[i * C + c];
  }
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
