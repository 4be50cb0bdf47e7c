// fill and stridedCopy on the device (native/cpu/copy.cc); device code in copy_kernels.cuh.
#include "common.cuh"
#include "copy_kernels.cuh"

namespace dalle {
namespace cuda {

std::string fill(void* dst, int64_t n, uint32_t bits, int item_bytes) {
  if (n == 0) return "";
  const unsigned blocks = (unsigned)elementwise_blocks(n);
  if (item_bytes == 4) fill_kernel<uint32_t><<<blocks, kThreads>>>((uint32_t*)dst, n, bits);
  else fill_kernel<uint16_t><<<blocks, kThreads>>>((uint16_t*)dst, n, (uint16_t)bits);
  return launch_error("fill");
}

std::string strided_copy(void* dst, const void* src, int64_t item, const std::vector<int64_t>& shape,
                         const std::vector<int64_t>& ds, const std::vector<int64_t>& ss) {
  const std::vector<int64_t> st[2] = {ds, ss};
  int64_t n = 0;
  const StridedShape s = collapse_shape(2, shape, st, &n);
  if (n == 0) return "";
  const unsigned blocks = (unsigned)elementwise_blocks(n);
  switch (item) {
    case 1: strided_copy_kernel<uint8_t><<<blocks, kThreads>>>((uint8_t*)dst, (const uint8_t*)src, s, n); break;
    case 2: strided_copy_kernel<uint16_t><<<blocks, kThreads>>>((uint16_t*)dst, (const uint16_t*)src, s, n); break;
    case 4: strided_copy_kernel<uint32_t><<<blocks, kThreads>>>((uint32_t*)dst, (const uint32_t*)src, s, n); break;
    default: strided_copy_kernel<uint64_t><<<blocks, kThreads>>>((uint64_t*)dst, (const uint64_t*)src, s, n); break;
  }
  return launch_error("stridedCopy");
}

}  // namespace cuda
}  // namespace dalle
