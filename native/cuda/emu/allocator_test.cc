// The device caching allocator (native/cuda/device_allocator.h, the same header addon.cc compiles) on the CPU, with a
// fake driver: host memory, a capacity, and counters of its calls. test/cuda/allocator.test.ts builds and runs it.
// Prints one line per failed check and "checks N failed F"; exits 1 when any failed.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "../device_allocator.h"

using dalle::cuda::CachingAllocator;
using dalle::cuda::DeviceAllocStats;
using dalle::cuda::OutOfMemory;

namespace {

int checks = 0, failed = 0;

void expect(bool ok, const std::string& what) {
  checks++;
  if (!ok) {
    failed++;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

#define EXPECT_EQ(a, b) \
  expect((a) == (b), std::string(#a " == " #b ": got ") + std::to_string(a) + ", want " + std::to_string(b))

// Host memory with a byte capacity; counts its calls and what is outstanding.
struct FakeDriver {
  size_t capacity = SIZE_MAX, outstanding = 0;
  uint64_t mallocs = 0, frees = 0, refusals = 0;
  std::set<void*> live;
  std::vector<size_t> sizes;  // of every successful malloc
  void* malloc(size_t bytes) {
    if (outstanding + bytes > capacity) {
      refusals++;
      return nullptr;
    }
    void* p = std::malloc(bytes);
    live.insert(p);
    outstanding += bytes;
    mallocs++;
    sizes.push_back(bytes);
    return p;
  }
  void free(void* p, size_t bytes) {
    if (!live.erase(p)) std::printf("FAIL: the allocator freed %p, which the driver did not hand out\n", p);
    std::free(p);
    outstanding -= bytes;
    frees++;
  }
};

// The allocator over a fake driver (the raw free needs the block's size to keep `outstanding`: remembered here).
struct Rig {
  FakeDriver drv;
  std::unordered_map<void*, size_t> raw_sizes;
  CachingAllocator a{[this](size_t n) {
                       void* p = drv.malloc(n);
                       if (p) raw_sizes[p] = n;
                       return p;
                     },
                     [this](void* p) {
                       const size_t n = raw_sizes[p];
                       raw_sizes.erase(p);
                       drv.free(p, n);
                     }};
};

void size_classes() {
  size_t prev = 0;
  for (size_t b = 0; b < (size_t(1) << 22); b = b < 10000 ? b + 1 : b + b / 7 + 1) {
    const size_t c = CachingAllocator::size_class(b);
    if (c < b || c < prev || c % 256 != 0 || (b > 4096 && (double)(c - b) > 0.125 * (double)b)) {
      expect(false, "size_class(" + std::to_string(b) + ") = " + std::to_string(c) +
                        ": must be >= the request, monotone, a multiple of 256 and waste at most 12.5% above 4 KiB");
      return;
    }
    prev = c;
  }
  EXPECT_EQ(CachingAllocator::size_class(0), (size_t)512);
  EXPECT_EQ(CachingAllocator::size_class(4097), (size_t)4608);
  EXPECT_EQ(CachingAllocator::size_class(1000000), (size_t)1048576);
}

// A training-step-like pattern: parameters kept, activations allocated in a forward pass, freed in reverse with
// gradients and temporaries in between; random sizes (odd ones included) fixed by the seed.
void step(CachingAllocator& a, const std::vector<size_t>& sizes, std::vector<void*>& kept) {
  std::vector<std::pair<void*, size_t>> acts;
  for (size_t s : sizes) {
    acts.push_back({a.alloc(s), s});
    void* tmp = a.alloc(s / 3 + 7);
    a.free(tmp, s / 3 + 7);
  }
  for (size_t i = acts.size(); i-- > 0;) {
    void* grad = a.alloc(acts[i].second);
    a.free(acts[i].first, acts[i].second);
    kept.push_back(grad);
  }
  for (size_t i = 0; i < kept.size(); i++) a.free(kept[i], 0);  // byte count 0: the recorded size
  kept.clear();
}

void warm_pattern_makes_no_driver_calls() {
  Rig r;
  std::mt19937 rng(7);
  std::vector<size_t> sizes;
  for (int i = 0; i < 40; i++) sizes.push_back(1 + rng() % (i % 5 == 0 ? 5000000 : 70000));
  std::vector<void*> kept;
  step(r.a, sizes, kept);
  const DeviceAllocStats warm = r.a.stats();
  expect(warm.driver_allocs > 0 && warm.driver_allocs == r.drv.mallocs, "the first step allocates from the driver");
  for (int s = 0; s < 10; s++) step(r.a, sizes, kept);
  const DeviceAllocStats after = r.a.stats();
  EXPECT_EQ(r.drv.mallocs, warm.driver_allocs);  // no new raw allocations once warm
  EXPECT_EQ(after.driver_allocs, warm.driver_allocs);
  EXPECT_EQ(after.allocs, warm.allocs * 11);
  EXPECT_EQ(after.cache_hits, after.allocs - after.driver_allocs);
  EXPECT_EQ(after.bytes_in_use, (uint64_t)0);
  EXPECT_EQ(after.bytes_cached, (uint64_t)r.drv.outstanding);
  EXPECT_EQ(after.driver_frees, (uint64_t)0);
  // trim gives every cached block back, once.
  r.a.trim();
  const DeviceAllocStats t = r.a.stats();
  EXPECT_EQ(r.drv.frees, r.drv.mallocs);
  EXPECT_EQ(t.driver_frees, r.drv.mallocs);
  EXPECT_EQ(t.bytes_cached, (uint64_t)0);
  EXPECT_EQ(r.drv.outstanding, (size_t)0);
  // The next step allocates from the driver again.
  step(r.a, sizes, kept);
  EXPECT_EQ(r.a.stats().driver_allocs, 2 * warm.driver_allocs);
}

void stats_and_peak() {
  Rig r;
  void* p = r.a.alloc(1000);  // class 1024
  void* q = r.a.alloc(5000);  // class 5120
  DeviceAllocStats s = r.a.stats();
  EXPECT_EQ(s.bytes_in_use, (uint64_t)(1024 + 5120));
  EXPECT_EQ(s.peak_bytes_in_use, (uint64_t)(1024 + 5120));
  r.a.free(q, 5000);
  s = r.a.stats();
  EXPECT_EQ(s.bytes_in_use, (uint64_t)1024);
  EXPECT_EQ(s.bytes_cached, (uint64_t)5120);
  EXPECT_EQ(s.peak_bytes_in_use, (uint64_t)(1024 + 5120));
  r.a.reset_peak();
  EXPECT_EQ(r.a.stats().peak_bytes_in_use, (uint64_t)1024);
  void* q2 = r.a.alloc(4700);  // same class 5120: the cached block
  expect(q2 == q, "a request of the same size class reuses the cached block");
  s = r.a.stats();
  EXPECT_EQ(s.cache_hits, (uint64_t)1);
  EXPECT_EQ(s.driver_allocs, (uint64_t)2);
  EXPECT_EQ(s.bytes_cached, (uint64_t)0);
  void* z = r.a.alloc(0);
  expect(z != nullptr && z != p && z != q2, "alloc(0) gives a distinct block");
  r.a.free(z, 0);
  r.a.free(p, 1000);
  r.a.free(q2, 4700);
  r.a.free(nullptr, 0);  // a no-op, as free(NULL)
  EXPECT_EQ(r.a.stats().bytes_in_use, (uint64_t)0);
}

void bad_frees() {
  Rig r;
  void* p = r.a.alloc(1000);
  bool threw = false;
  try {
    r.a.free(p, 9000);  // another size class
  } catch (const std::invalid_argument& e) {
    threw = std::string(e.what()).find("size class of 1024") != std::string::npos;
  }
  expect(threw, "a free with the byte count of another size class is refused, naming the block's class");
  r.a.free(p, 1000);
  threw = false;
  try {
    r.a.free(p, 1000);
  } catch (const std::invalid_argument& e) {
    threw = std::string(e.what()).find("not a live block") != std::string::npos;
  }
  expect(threw, "a double free is refused");
  EXPECT_EQ(r.a.stats().bytes_cached, (uint64_t)1024);  // counted once
}

void out_of_memory() {
  Rig r;
  r.drv.capacity = 1 << 20;
  // Fill the cache: 6 blocks of 128 KiB freed (768 KiB cached), 128 KiB kept in use.
  std::vector<void*> ps;
  for (int i = 0; i < 7; i++) ps.push_back(r.a.alloc(128 << 10));
  for (int i = 1; i < 7; i++) r.a.free(ps[i], 128 << 10);
  // 512 KiB fits only once the cache is given back: trim, retry, success.
  void* big = r.a.alloc(512 << 10);
  expect(big != nullptr, "a request that fits after trimming the cache succeeds");
  DeviceAllocStats s = r.a.stats();
  EXPECT_EQ(r.drv.refusals, (uint64_t)1);
  EXPECT_EQ(s.driver_frees, (uint64_t)6);
  EXPECT_EQ(s.bytes_cached, (uint64_t)0);
  EXPECT_EQ(s.bytes_in_use, (uint64_t)(640 << 10));
  // 512 KiB more cannot fit even with an empty cache: a clear error with the numbers.
  r.a.free(r.a.alloc(64 << 10), 64 << 10);  // 64 KiB cached, given back before the retry
  std::string msg;
  try {
    r.a.alloc(500000);
  } catch (const OutOfMemory& e) {
    msg = e.what();
  }
  expect(msg.find("asked for 500000 bytes") != std::string::npos && msg.find("655360 bytes in use") != std::string::npos &&
             msg.find("65536 bytes cached") != std::string::npos,
         "the out-of-memory error names the bytes asked, in use and cached: '" + msg + "'");
  s = r.a.stats();
  EXPECT_EQ(r.drv.refusals, (uint64_t)3);
  EXPECT_EQ(s.bytes_in_use, (uint64_t)(640 << 10));
  EXPECT_EQ(s.bytes_cached, (uint64_t)0);
  r.a.free(big, 512 << 10);
  r.a.free(ps[0], 128 << 10);
  r.a.trim();
  EXPECT_EQ(r.drv.outstanding, (size_t)0);
}

}  // namespace

int main() {
  size_classes();
  warm_pattern_makes_no_driver_calls();
  stats_and_peak();
  bad_frees();
  out_of_memory();
  std::printf("checks %d failed %d\n", checks, failed);
  return failed ? 1 : 0;
}
