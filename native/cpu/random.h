// The Philox stream's Gumbel noise for other native kernels (the fused gumbel-softmax of codebook.cc): the same values
// philoxFill(kind "gumbel") writes, so a kernel that draws its noise itself matches randGumbel's tensor exactly.
#pragma once
#include <cstdint>

namespace dalle {

// dst[j] = -ln(-ln((word(offset + i0 + j) + 0.5) 2^-32)) for j < n, on the calling thread (src/core/tensor/rng.ts
// defines the stream: key (k0, k1), word w = lane w % 4 of the block at counter w / 4).
void gumbel_noise(uint32_t k0, uint32_t k1, uint64_t offset, int64_t i0, int64_t n, float* dst);

}  // namespace dalle
