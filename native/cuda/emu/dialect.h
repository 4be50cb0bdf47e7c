// The CUDA dialect on the CPU, for the emulation programs (attention_emu.cc, ops_emu.cc) that compile the kernels'
// own device code (*.cuh, the headers nvcc compiles) with g++: the keywords compile away, every CUDA thread is an OS
// thread (threadIdx, blockIdx thread-local), __syncthreads is a barrier, one block runs at a time, atomics take a lock. `extern __shared__`
// (dynamic shared memory) is `smem` below; a fixed-size shared array is declared with DALLE_SHARED (grid.cuh), a
// static variable here (one block at a time: the block's shared memory). fp32, and the 16-bit types `__half` and
// `__nv_bfloat16` in software (round to nearest even, as cuda_fp16.h / cuda_bf16.h). The warp-collective operations of
// the tensor-core kernels (tensor_core.cuh on the GPU: mma_m16n8k16, shfl_xor) are emulated with each lane owning
// exactly the registers the PTX ISA gives it: the lanes of a warp meet at a warp barrier, exchange their registers
// through the warp's buffer, and each computes only its own outputs. No other warp intrinsics.
#pragma once
#define DALLE_EMU 1

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
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

// ---- warps: 32 consecutive threads; a barrier and an exchange buffer each ----
constexpr int kEmuWarp = 32;
constexpr int kEmuMaxWarps = 32;  // 1024 threads
struct WarpExchange {
  uint32_t a[kEmuWarp][4];  // the A fragment registers of each lane
  uint32_t b[kEmuWarp][2];  // the B fragment registers of each lane
  float x[kEmuWarp];        // shuffles
};
inline std::vector<std::unique_ptr<std::barrier<>>> g_warp_barriers;
// Two buffers a warp, used in turn by its successive collectives (every lane runs the same sequence of them, so a
// per-thread count agrees across the warp): one barrier a collective suffices, since a lane can only write a buffer
// again after the next collective's barrier, which every lane reaches only once done reading this one.
inline WarpExchange g_warp_exchange[kEmuMaxWarps][2];
inline thread_local unsigned g_warp_turn = 0;
inline void emu_warp_sync() { g_warp_barriers[threadIdx.x / kEmuWarp]->arrive_and_wait(); }
inline WarpExchange& emu_warp_buffer() { return g_warp_exchange[threadIdx.x / kEmuWarp][g_warp_turn++ & 1u]; }

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

// ---- 16-bit floating-point types in software: raw bits, conversions rounding to nearest even ----
struct __half {
  uint16_t x;
};
struct __nv_bfloat16 {
  uint16_t x;
};

inline float emu_bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t emu_f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float emu_half_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) return (sign ? -1.0f : 1.0f) * std::ldexp((float)m, -24);  // zero, subnormal: m * 2^-24 (exact)
  if (e == 31) return emu_bits_f32(sign | 0x7f800000u | (m << 13));    // inf, NaN
  return emu_bits_f32(sign | ((e + 112) << 23) | (m << 13));
}
inline uint16_t emu_f32_to_half(float f) {
  const uint32_t x = emu_f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds to infinity
  if (ax < 0x38800000u) {  // below 2^-14: a multiple of 2^-24, the nearest (ties to even: nearbyint's default mode)
    return (uint16_t)(sign | (uint32_t)std::nearbyint(emu_bits_f32(ax) * 16777216.0f));
  }
  const uint32_t r = ax - 0x38000000u;  // exponent rebiased 127 -> 15; 13 mantissa bits dropped, ties to even
  return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
}
inline float emu_bf16_to_f32(uint16_t b) { return emu_bits_f32((uint32_t)b << 16); }
inline uint16_t emu_f32_to_bf16(float f) {
  const uint32_t x = emu_f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);  // NaN stays NaN (quiet)
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

namespace dalle {
namespace cuda {
inline float to_f32(float x) { return x; }
inline float to_f32(__half x) { return emu_half_to_f32(x.x); }
inline float to_f32(__nv_bfloat16 x) { return emu_bf16_to_f32(x.x); }
template <class T>
inline T from_f32(float x) { return (T)x; }
template <>
inline __half from_f32<__half>(float x) { return __half{emu_f32_to_half(x)}; }
template <>
inline __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __nv_bfloat16{emu_f32_to_bf16(x)}; }
// The raw bits of a 16-bit value (tensor_core.cuh: __half_as_ushort / __bfloat16_as_ushort).
inline uint16_t bits16(__half x) { return x.x; }
inline uint16_t bits16(__nv_bfloat16 x) { return x.x; }

// One element of a packed pair register: the low (k even) or high half, as fp32.
template <class T>
inline float emu_pair_elem(uint32_t reg, int high) {
  const uint16_t h = (uint16_t)(high ? reg >> 16 : reg & 0xffffu);
  return to_f32(T{h});
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 d, a, b, d (tensor_core.cuh), lane by lane.
// PTX ISA fragment layouts, with g = lane / 4 and t = lane % 4:
//   A (16 x 16, row): a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][2t+8, 2t+9]
//   B (16 x 8, col):  b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g]
//   C, D (16 x 8):    d[0..1] = D[g][2t, 2t+1], d[2..3] = D[g+8][2t, 2t+1]
// (low half = lower k). Each lane publishes its A and B registers, the warp meets, and each lane computes its four D
// elements from the owners' registers: A[r][k] lives in lane (r % 8) * 4 + (k % 8) / 2, register (r / 8) + 2 (k / 8);
// B[k][n] in lane n * 4 + (k % 8) / 2, register k / 8; the half is k % 2. The products of two 16-bit values are exact
// in fp32; they are summed in fp32 in k order and added to the accumulator.
template <class T>
inline void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  const int lane = (int)(threadIdx.x % kEmuWarp), g = lane / 4, t = lane % 4;
  WarpExchange& X = emu_warp_buffer();
  for (int i = 0; i < 4; i++) X.a[lane][i] = a[i];
  for (int i = 0; i < 2; i++) X.b[lane][i] = b[i];
  emu_warp_sync();
  for (int i = 0; i < 4; i++) {
    const int row = g + 8 * (i / 2), col = 2 * t + (i % 2);
    float sum = 0.0f;
    for (int k = 0; k < 16; k++) {
      const float av = emu_pair_elem<T>(X.a[(row % 8) * 4 + (k % 8) / 2][row / 8 + 2 * (k / 8)], k % 2);
      const float bv = emu_pair_elem<T>(X.b[col * 4 + (k % 8) / 2][k / 8], k % 2);
      sum += av * bv;
    }
    d[i] += sum;
  }
}

// __shfl_xor_sync(0xffffffff, v, mask): the value of lane (lane ^ mask).
inline float shfl_xor(float v, int mask) {
  const int lane = (int)(threadIdx.x % kEmuWarp);
  WarpExchange& X = emu_warp_buffer();
  X.x[lane] = v;
  emu_warp_sync();
  return X.x[lane ^ mask];
}

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
      g_warp_barriers.clear();
      for (unsigned w = 0; w * kEmuWarp < threads; w++) {
        const unsigned lanes = threads - w * kEmuWarp < (unsigned)kEmuWarp ? threads - w * kEmuWarp : kEmuWarp;
        g_warp_barriers.push_back(std::make_unique<std::barrier<>>((std::ptrdiff_t)lanes));
      }
      std::vector<std::thread> ts;
      for (unsigned t = 0; t < threads; t++) {
        ts.emplace_back([&, t] {
          threadIdx.x = t;
          g_warp_turn = 0;
          blockIdx.x = bx;
          blockIdx.y = by;
          kernel();
        });
      }
      for (auto& th : ts) th.join();
    }
  }
}
