// The caching allocator of device memory, as pure logic: no CUDA here, the raw allocate / free functions are
// parameters, so emu/allocator_test.cc runs it on the CPU with a fake driver that counts calls
// (test/cuda/allocator.test.ts) and addon.cc plugs in cudaMalloc / cudaFree.
//
// Why: cudaMalloc and cudaFree synchronize the device and cost tens of microseconds to milliseconds; a training step
// allocates and frees hundreds of tensors. Freed blocks are kept in per-size-class free lists and reused, so a
// steady-state step makes no driver call. Reuse is stream-ordered: every kernel and copy of the addon runs on the one
// (default) stream, so a block freed by the host after it queued kernels that use the block can be handed to the next
// request at once: whatever the new owner queues runs after those kernels. Nothing goes back to the driver until
// trim(), or until the driver refuses a request: then the cache is trimmed and the request retried once, and a second
// refusal is an OutOfMemory naming the bytes asked, in use and cached.
//
// Size classes in the manner of the CPU allocator (native/src/allocator.cc) but coarser at the small end: multiples of
// 512 bytes (not 64) up to 4 KiB, then 8 classes per power of two (at most 12.5 % waste), with no 2 MiB rounding of
// big blocks (no huge pages to align to). src/core/models/prior/size-cuda.ts mirrors this for the memory estimate. Every block is a whole driver allocation (cudaMalloc aligns to 256 bytes).
// Thread-safe. Freeing an address that is not a live block, or with a byte count of another size class, throws
// std::invalid_argument (a double free on the device would corrupt two tensors silently).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace dalle {
namespace cuda {

struct DeviceAllocStats {
  uint64_t bytes_in_use = 0;       // handed out, by size class
  uint64_t bytes_cached = 0;       // freed and kept for reuse
  uint64_t peak_bytes_in_use = 0;  // since the start or the last reset_peak()
  uint64_t allocs = 0;             // calls to alloc
  uint64_t cache_hits = 0;         // served from a free list
  uint64_t driver_allocs = 0;      // successful raw allocations (cudaMalloc)
  uint64_t driver_frees = 0;       // raw frees (cudaFree), by trim or by the retry after a refusal
};

// The driver refused a request even after the cache was given back.
struct OutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class CachingAllocator {
 public:
  // raw_alloc(bytes) -> address, or nullptr when the driver refuses; raw_free(address).
  using RawAlloc = std::function<void*(size_t)>;
  using RawFree = std::function<void(void*)>;

  static constexpr size_t kSmallStep = 512;
  static constexpr size_t kSmallMax = 4096;

  CachingAllocator(RawAlloc raw_alloc, RawFree raw_free)
      : raw_alloc_(std::move(raw_alloc)), raw_free_(std::move(raw_free)) {}
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // The bytes a request really takes.
  static size_t size_class(size_t bytes) {
    if (bytes == 0) bytes = 1;
    if (bytes <= kSmallMax) return (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
    const size_t top = size_t(1) << (63 - __builtin_clzll((unsigned long long)bytes));
    const size_t step = top >> 3;  // 8 steps per power of two
    return (bytes + step - 1) / step * step;
  }

  void* alloc(size_t bytes) {
    const size_t cls = size_class(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.allocs++;
    auto it = free_.find(cls);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      stats_.cache_hits++;
      stats_.bytes_cached -= cls;
      hand_out(p, cls);
      return p;
    }
    void* p = raw_alloc_(cls);
    if (!p) {
      const uint64_t cached = stats_.bytes_cached;
      trim_locked();
      p = raw_alloc_(cls);
      if (!p) {
        throw OutOfMemory("out of device memory: asked for " + std::to_string(bytes) + " bytes (a block of " +
                          std::to_string(cls) + "), with " + std::to_string(stats_.bytes_in_use) +
                          " bytes in use by tensors and " + std::to_string(cached) +
                          " bytes cached (given back to the driver before the retry); use a smaller batch or model");
      }
    }
    stats_.driver_allocs++;
    hand_out(p, cls);
    return p;
  }

  // bytes: the size passed to alloc, or 0 to take the block's recorded size.
  void free(void* p, size_t bytes) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) {
      throw std::invalid_argument("free of device address " + std::to_string((uintptr_t)p) +
                                  ", which is not a live block of this allocator (freed twice, or never allocated)");
    }
    const size_t cls = it->second;
    if (bytes != 0 && size_class(bytes) != cls) {
      throw std::invalid_argument("free of device address " + std::to_string((uintptr_t)p) + " with " +
                                  std::to_string(bytes) + " bytes, but the block was allocated for a size class of " +
                                  std::to_string(cls) + " bytes");
    }
    live_.erase(it);
    free_[cls].push_back(p);
    stats_.bytes_in_use -= cls;
    stats_.bytes_cached += cls;
  }

  // Gives every cached block back to the driver.
  void trim() {
    std::lock_guard<std::mutex> lock(mu_);
    trim_locked();
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }

  DeviceAllocStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  void hand_out(void* p, size_t cls) {
    live_[p] = cls;
    stats_.bytes_in_use += cls;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }

  void trim_locked() {
    for (auto& kv : free_) {
      for (void* p : kv.second) {
        raw_free_(p);
        stats_.driver_frees++;
      }
      stats_.bytes_cached -= kv.first * kv.second.size();
      kv.second.clear();
    }
  }

  RawAlloc raw_alloc_;
  RawFree raw_free_;
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  std::unordered_map<void*, size_t> live_;               // handed-out block -> its size class
  DeviceAllocStats stats_;
};

}  // namespace cuda
}  // namespace dalle
