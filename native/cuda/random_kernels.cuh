// Device code of philoxFill (native/cpu/random.cc, whose stream src/core/tensor/rng.ts defines): Philox4x32-10, word w
// of a request = lane w % 4 of the block at counter (offset + w) / 4, so value i depends only on (key, offset + i) and
// the device produces the CPU's stream. Free of the CUDA runtime: random.cu launches it, emu/ops_emu.cc runs it on the
// CPU. Uniform values are bit-exact; normal and Gumbel values go through log / sqrt / cos / sin in float64 and are
// rounded to f32 once, as the CPU (the device's float64 functions are within 2 ulp of float64, so a rare value may
// differ from the CPU's by one f32 ulp).
#pragma once
#include <cmath>
#include <cstdint>

#include "grid.cuh"
#include "op_codes.h"

namespace dalle {
namespace cuda {

namespace {

__device__ __forceinline__ void philox_block(uint32_t c0, uint32_t c1, uint32_t k0, uint32_t k1, uint32_t out[4]) {
  uint32_t c2 = 0, c3 = 0;
  for (int r = 0; r < 10; r++) {
    const uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
    const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// Word i of the stream that starts at `offset`.
__device__ __forceinline__ uint32_t philox_word(uint32_t k0, uint32_t k1, uint64_t offset, uint64_t i) {
  const uint64_t w = offset + i, c = w >> 2;
  uint32_t block[4];
  philox_block((uint32_t)c, (uint32_t)(c >> 32), k0, k1, block);
  return block[w & 3];
}

// One thread per value (uniform, Gumbel) or per pair of values (normal: Box-Muller on word pairs 2p, 2p + 1).
__global__ void philox_fill_kernel(float* dst, int64_t n, uint32_t k0, uint32_t k1, uint64_t offset, int kind, double a,
                                   double b) {
  const double two32 = 4294967296.0;
  if (kind == kPhiloxNormal) {
    GRID_STRIDE(p, (n + 1) / 2) {
      const double u1 = ((double)philox_word(k0, k1, offset, 2 * p) + 1.0) / two32;
      const double u2 = (double)philox_word(k0, k1, offset, 2 * p + 1) / two32;
      const double radius = sqrt(-2.0 * log(u1)), angle = 2.0 * 3.14159265358979323846 * u2;
      dst[2 * p] = (float)(a + b * radius * cos(angle));
      if (2 * p + 1 < n) dst[2 * p + 1] = (float)(a + b * radius * sin(angle));
    }
    return;
  }
  const bool exact = a == 0.0 && b == 1.0;
  GRID_STRIDE(i, n) {
    const uint32_t w = philox_word(k0, k1, offset, i);
    if (kind == kPhiloxUniform) {
      const float u = (float)(w >> 8) * 5.9604644775390625e-08f;
      dst[i] = exact ? u : (float)(a + (b - a) * (double)u);
    } else {
      dst[i] = (float)-log(-log(((double)w + 0.5) / two32));
    }
  }
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
