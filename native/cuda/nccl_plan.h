// How allReduceBuffers packs device buffers (tensor storages, or windows of them) into one message: every non-empty
// buffer at its offset in one contiguous f32 bucket, in the order given (the same on every rank, so offsets agree),
// or, when there is only one non-empty buffer, no bucket at all (it is reduced where it is). Pure logic, no CUDA: nccl.cc
// uses it, and native/cuda/emu/nccl_host_test.cc runs it on the CPU for test/cuda/nccl-host.test.ts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace dalle {
namespace cuda {
namespace nccl {

/** A run of `count` f32 values at device address `address`. */
struct Span {
  uint64_t address = 0;
  uint64_t count = 0;
};

/** Buffer `index` (of the caller's list) occupies bucket elements [offset, offset + count). */
struct PackEntry {
  size_t index = 0;
  uint64_t offset = 0;
  uint64_t count = 0;
};

struct PackPlan {
  std::vector<PackEntry> entries;  // non-empty buffers only, in the caller's order
  uint64_t total = 0;              // f32 values in the message
  bool inPlace = false;            // one non-empty buffer: reduced at its own address, no copies
  std::string error;               // why the request is refused ("" when it is not)
};

/**
 * The plan for `spans`, or an error naming the buffer: a null address with a non-zero count, a run that wraps the
 * address space, two buffers that overlap (their shared values would be packed twice and unpacked in an unspecified
 * order), or more than `maxTotal` values in all.
 */
inline PackPlan planPack(const std::vector<Span>& spans, uint64_t maxTotal) {
  PackPlan plan;
  std::vector<size_t> byAddress;
  for (size_t i = 0; i < spans.size(); i++) {
    const Span& s = spans[i];
    if (s.count == 0) continue;
    if (s.address == 0) {
      plan.error = "buffer " + std::to_string(i) + " has a null address and " + std::to_string(s.count) + " values";
      return plan;
    }
    if (s.count > maxTotal || s.address + 4 * s.count < s.address) {
      plan.error = "buffer " + std::to_string(i) + " (" + std::to_string(s.count) + " values) is too large";
      return plan;
    }
    if (plan.total + s.count > maxTotal) {
      plan.error = "more than " + std::to_string(maxTotal) + " values in one bucket";
      return plan;
    }
    plan.entries.push_back({i, plan.total, s.count});
    plan.total += s.count;
    byAddress.push_back(i);
  }
  std::sort(byAddress.begin(), byAddress.end(), [&](size_t a, size_t b) { return spans[a].address < spans[b].address; });
  for (size_t k = 1; k < byAddress.size(); k++) {
    const Span& prev = spans[byAddress[k - 1]];
    if (prev.address + 4 * prev.count > spans[byAddress[k]].address) {
      size_t a = std::min(byAddress[k - 1], byAddress[k]), b = std::max(byAddress[k - 1], byAddress[k]);
      plan.error = "buffers " + std::to_string(a) + " and " + std::to_string(b) + " overlap";
      plan.entries.clear();
      plan.total = 0;
      return plan;
    }
  }
  plan.inPlace = plan.entries.size() == 1;
  return plan;
}

}  // namespace nccl
}  // namespace cuda
}  // namespace dalle
