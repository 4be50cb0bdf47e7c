// Device code of fill and stridedCopy (native/cpu/copy.cc), free of the CUDA runtime: copy.cu launches it, and
// emu/ops_emu.cc runs it on the CPU (test/cuda/ops-emu.test.ts).
#pragma once
#include <cstdint>
#include <vector>

#include "grid.cuh"
#include "op_codes.h"

namespace dalle {
namespace cuda {

// A shape (row-major, contiguous output order) and up to two operand stride sets, in elements, passed by value.
struct StridedShape {
  int32_t rank = 0;
  int64_t shape[kMaxRank] = {0};
  int64_t st[2][kMaxRank] = {{0}};
};

// Drops size-1 dimensions and merges a dimension into the one before it when that is contiguous for every operand
// (native/cpu/elementwise.cc make_plan): fewer divisions per element. n: the element count. Host code.
inline StridedShape collapse_shape(int operands, const std::vector<int64_t>& shape, const std::vector<int64_t>* strides,
                                   int64_t* n) {
  StridedShape p;
  *n = 1;
  for (size_t d = 0; d < shape.size(); d++) {
    const int64_t s = shape[d];
    *n *= s;
    if (s == 1) continue;
    bool merge = p.rank > 0;
    for (int k = 0; k < operands && merge; k++) merge = p.st[k][p.rank - 1] == strides[k][d] * s;
    if (merge) {
      p.shape[p.rank - 1] *= s;
      for (int k = 0; k < operands; k++) p.st[k][p.rank - 1] = strides[k][d];
    } else {
      p.shape[p.rank] = s;
      for (int k = 0; k < operands; k++) p.st[k][p.rank] = strides[k][d];
      p.rank++;
    }
  }
  if (p.rank == 0) {  // one element
    p.rank = 1;
    p.shape[0] = 1;
  }
  return p;
}

namespace {

// Offsets of element i (row-major in shape) in the two operands.
__device__ __forceinline__ void strided_offsets(const StridedShape& s, int64_t i, int64_t* o0, int64_t* o1) {
  int64_t a = 0, b = 0;
  for (int d = s.rank - 1; d >= 0; d--) {
    const int64_t idx = i % s.shape[d];
    i /= s.shape[d];
    a += idx * s.st[0][d];
    b += idx * s.st[1][d];
  }
  *o0 = a;
  *o1 = b;
}

// p[i] = v: T is the bit pattern's width (uint32_t for f32 / i32, uint16_t for u16).
template <class T>
__global__ void fill_kernel(T* p, int64_t n, T v) {
  GRID_STRIDE(i, n) p[i] = v;
}

// dst[offset_0(i)] = src[offset_1(i)] for every element i of the shape (st[0]: dst strides, st[1]: src strides).
template <class T>
__global__ void strided_copy_kernel(T* dst, const T* src, StridedShape s, int64_t n) {
  GRID_STRIDE(i, n) {
    int64_t od, os;
    strided_offsets(s, i, &od, &os);
    dst[od] = src[os];
  }
}

}  // namespace
}  // namespace cuda
}  // namespace dalle
