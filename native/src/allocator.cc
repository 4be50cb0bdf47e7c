// Size classes: multiples of 64 bytes up to 4 KiB, then 8 classes per power of two (at most 12.5% waste).
// Blocks of 1 MiB and more come from mmap (2 MiB-rounded, MADV_HUGEPAGE) so a large activation buffer is backed by
// huge pages; smaller ones from posix_memalign. Nothing goes back to the OS until cache_trim().
#include "allocator.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace dalle {
namespace {

constexpr size_t kAlign = 64;
constexpr size_t kMmapThreshold = size_t(1) << 20;
constexpr size_t kHugePage = size_t(2) << 20;

std::mutex mu;
std::unordered_map<size_t, std::vector<void*>> free_lists;  // size class -> cached blocks
AllocStats stats;

// Touches every page of a new block once. A cached block is later reused for requests of any size in its class; without
// this, a larger request than the block's first one would touch fresh pages (and fault) in the middle of a step.
void prefault(void* p, size_t bytes) {
  volatile char* c = static_cast<volatile char*>(p);
  for (size_t off = 0; off < bytes; off += 4096) c[off] = 0;
  if (bytes) c[bytes - 1] = 0;
}

void* os_alloc(size_t cls) {
#if defined(__linux__)
  if (cls >= kMmapThreshold) {
    void* p = mmap(nullptr, cls, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    madvise(p, cls, MADV_HUGEPAGE);
#endif
    prefault(p, cls);
    return p;
  }
#endif
  void* p = nullptr;
  if (posix_memalign(&p, kAlign, cls) != 0 || !p) throw std::bad_alloc();
  prefault(p, cls);
  return p;
}

void os_free(void* p, size_t cls) {
#if defined(__linux__)
  if (cls >= kMmapThreshold) {
    munmap(p, cls);
    return;
  }
#endif
  free(p);
}

}  // namespace

size_t size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= 4096) return (bytes + kAlign - 1) / kAlign * kAlign;
  if (bytes >= kMmapThreshold) return (bytes + kHugePage - 1) / kHugePage * kHugePage;
  // 8 steps per power of two: step = 2^(floor(log2(bytes)) - 3)
  size_t top = size_t(1) << (63 - __builtin_clzll(bytes));
  size_t step = top >> 3;
  size_t cls = (bytes + step - 1) / step * step;
  return cls < kMmapThreshold ? cls : kMmapThreshold;
}

void* cache_alloc(size_t bytes) {
  size_t cls = size_class(bytes);
  {
    std::lock_guard<std::mutex> lock(mu);
    stats.allocs++;
    auto it = free_lists.find(cls);
    if (it != free_lists.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      stats.cache_hits++;
      stats.bytes_cached -= cls;
      stats.bytes_in_use += cls;
      if (stats.bytes_in_use > stats.peak_bytes_in_use) stats.peak_bytes_in_use = stats.bytes_in_use;
      return p;
    }
  }
  void* p = os_alloc(cls);
  std::lock_guard<std::mutex> lock(mu);
  stats.os_allocs++;
  stats.bytes_in_use += cls;
  if (stats.bytes_in_use > stats.peak_bytes_in_use) stats.peak_bytes_in_use = stats.bytes_in_use;
  return p;
}

void cache_free(void* p, size_t bytes) {
  if (!p) return;
  size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(mu);
  free_lists[cls].push_back(p);
  stats.bytes_in_use -= cls;
  stats.bytes_cached += cls;
}

AllocStats alloc_stats() {
  std::lock_guard<std::mutex> lock(mu);
  return stats;
}

void cache_trim() {
  std::lock_guard<std::mutex> lock(mu);
  for (auto& kv : free_lists) {
    for (void* p : kv.second) os_free(p, kv.first);
    stats.bytes_cached -= kv.first * kv.second.size();
    kv.second.clear();
  }
}

void reset_peak() {
  std::lock_guard<std::mutex> lock(mu);
  stats.peak_bytes_in_use = stats.bytes_in_use;
}

}  // namespace dalle
