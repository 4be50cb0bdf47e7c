// The CUDA dialect on the CPU, for the emulation programs (attention_emu.cc, ops_emu.cc) that compile the kernels'
// own device code (*.cuh, the headers nvcc compiles) with g++: the keywords compile away, every CUDA thread is an OS
// thread (threadIdx, blockIdx thread-local), __syncthreads is a barrier, one block runs at a time, atomics take a lock. `extern __shared__`
// (dynamic shared memory) is `smem` below; a fixed-size shared array is declared with DALLE_SHARED (grid.cuh), a
// static variable here (one block at a time: the block's shared memory). Warp intrinsics are not
// provided: kernels meant for emulation do not use them. fp32 only (to_f32 / from_f32 of float).
#pragma once
#define DALLE_EMU 1

#include <barrier>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(n)
#define __shared__
struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local Dim3 threadIdx, blockIdx;
inline Dim3 blockDim, gridDim;
inline std::barrier<>* g_barrier = nullptr;
inline void __syncthreads() { g_barrier->arrive_and_wait(); }

inline std::mutex g_atomic_mutex;
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  std::lock_guard<std::mutex> lock(g_atomic_mutex);
  const unsigned long long old = *p;
  if (v < old) *p = v;
  return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  std::lock_guard<std::mutex> lock(g_atomic_mutex);
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}

namespace dalle {
namespace cuda {
inline float to_f32(float x) { return x; }
template <class T>
inline T from_f32(float x) { return (T)x; }
namespace {
[[maybe_unused]] alignas(16) float smem[1 << 16];  // the block's dynamic shared memory (blocks run one at a time)
}  // namespace
}  // namespace cuda
}  // namespace dalle

// Runs kernel() over grid (gx, gy) with `threads` threads per block, one block at a time.
template <class F>
void launch(unsigned gx, unsigned gy, unsigned threads, F&& kernel) {
  blockDim.x = threads;
  gridDim.x = gx;
  gridDim.y = gy;
  for (unsigned by = 0; by < gy; by++) {
    for (unsigned bx = 0; bx < gx; bx++) {
      std::barrier<> bar((std::ptrdiff_t)threads);
      g_barrier = &bar;
      std::vector<std::thread> ts;
      for (unsigned t = 0; t < threads; t++) {
        ts.emplace_back([&, t] {
          threadIdx.x = t;
          blockIdx.x = bx;
          blockIdx.y = by;
          kernel();
        });
      }
      for (auto& th : ts) th.join();
    }
  }
}
