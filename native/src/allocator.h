// The caching allocator behind every CPU tensor. Page faults cost 13-20 us each on our VMs, so freed blocks are kept
// in per-size-class free lists and reused; a steady-state training step takes no new pages. Large blocks come from
// mmap with MADV_HUGEPAGE. All blocks are 64-byte aligned. Thread-safe.
#pragma once
#include <cstddef>
#include <cstdint>

namespace dalle {

struct AllocStats {
  uint64_t bytes_in_use = 0;     // handed out, by size class
  uint64_t bytes_cached = 0;     // freed and kept for reuse
  uint64_t peak_bytes_in_use = 0;
  uint64_t allocs = 0;           // calls to cache_alloc
  uint64_t cache_hits = 0;       // served from a free list
  uint64_t os_allocs = 0;        // new memory taken from the OS
};

void* cache_alloc(size_t bytes);       // throws std::bad_alloc when the OS refuses
void cache_free(void* p, size_t bytes);  // bytes: the size passed to cache_alloc
size_t size_class(size_t bytes);       // the rounded size a request really takes
AllocStats alloc_stats();
void cache_trim();                     // gives every cached block back to the OS
void reset_peak();

}  // namespace dalle
