// The warp-collective operations of the tensor-core kernels (attention_tc_kernels.cuh), nvcc only: inline PTX behind
// small device functions, so that the emulation dialect (emu/dialect.h) can give the same functions a CPU body with
// the same register ownership. sm_80 and later (the build targets sm_90).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace dalle {
namespace cuda {

// The raw bits of a 16-bit value (packed two to a register for the mma operands).
__device__ __forceinline__ uint16_t bits16(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ uint16_t bits16(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }

// d (16 x 8, fp32) += A (16 x 16) * B (16 x 8), one warp, the PTX ISA's m16n8k16 fragments (emu/dialect.h spells
// them out): a[4] and b[2] hold two 16-bit elements each, low half first.
template <class T>
__device__ __forceinline__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2]);

template <>
__device__ __forceinline__ void mma_m16n8k16<__half>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <>
__device__ __forceinline__ void mma_m16n8k16<__nv_bfloat16>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The value v of lane (this lane ^ mask), every lane of the warp taking part.
__device__ __forceinline__ float shfl_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }

}  // namespace cuda
}  // namespace dalle
