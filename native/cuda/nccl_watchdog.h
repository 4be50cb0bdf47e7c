// The watchdog's state machine: the operations in flight on a communicator's stream, in issue order, and what to do
// at each poll. An operation is done when its completion event is; the oldest one pending (the head: on one stream
// nothing after it can finish first) fails when it has been the head for longer than the timeout (a peer died or
// stopped, so NCCL's kernel waits for ever), and every operation fails at once when NCCL reports an asynchronous error
// or the stream a CUDA error. The first failure asks for ncclCommAbort (which ends the waiting kernels, so the compute
// stream that waits on their events goes on) and makes the communicator refuse every later operation with it.
// Pure logic over a clock in ms and a probe: nccl.cc drives it from its watchdog thread with cudaEventQuery and
// ncclCommGetAsyncError; native/cuda/emu/nccl_host_test.cc drives it from scripts (test/cuda/nccl-host.test.ts).
#pragma once

#include <cstdint>
#include <cstdio>
#include <deque>
#include <string>
#include <utility>
#include <vector>

namespace dalle {
namespace cuda {
namespace nccl {

/** What a poll finds about one operation's completion event. */
enum class Probe { Done, Pending, Failed };

/**
 * Why an operation did not complete. kind: timeout | nccl (NCCL's asynchronous error, or NCCL refused the call) | cuda
 * (the stream) | closed; `what` names the operation, `cause` what happened to it.
 */
struct OpFailure {
  uint64_t id = 0;
  std::string kind;
  std::string what;
  std::string cause;
  std::string message() const { return what.empty() ? cause : what + " failed: " + cause; }
};

/** What the caller does after a poll: settle these, and abort the communicator when `abort`. */
struct WatchdogStep {
  std::vector<uint64_t> completed;  // in issue order
  std::vector<OpFailure> failed;
  bool abort = false;
};

inline std::string secondsText(int64_t ms) {
  char buf[32];
  if (ms < 10000) std::snprintf(buf, sizeof buf, "%.1f s", ms / 1000.0);
  else std::snprintf(buf, sizeof buf, "%lld s", static_cast<long long>((ms + 500) / 1000));
  return buf;
}

class OpTracker {
 public:
  explicit OpTracker(int64_t timeoutMs) : timeoutMs_(timeoutMs) {}

  /** Tracks operation `id` (described by `what`) issued at `nowMs`; false after the first failure (see refusal()). */
  bool add(uint64_t id, std::string what, int64_t nowMs) {
    if (broken()) return false;
    if (ops_.empty()) headSince_ = nowMs;
    ops_.push_back({id, std::move(what)});
    return true;
  }

  /**
   * One poll at `nowMs`: `probe(id, &detail)` says whether an operation's completion event has fired (Failed: the
   * stream reported an error, in `detail`); `asyncError` is NCCL's asynchronous error ("" when none).
   */
  template <class ProbeFn>
  WatchdogStep poll(int64_t nowMs, ProbeFn&& probe, const std::string& asyncError) {
    WatchdogStep step;
    if (broken()) return step;
    if (!asyncError.empty()) return failAll("nccl", 0, "NCCL reported an asynchronous error: " + asyncError);
    while (!ops_.empty()) {
      std::string detail;
      Probe p = probe(ops_.front().id, &detail);
      if (p == Probe::Done) {
        step.completed.push_back(ops_.front().id);
        ops_.pop_front();
        headSince_ = nowMs;
        continue;
      }
      WatchdogStep failed;
      if (p == Probe::Failed) failed = failAll("cuda", 0, "a CUDA error on the communication stream: " + detail);
      else if (nowMs - headSince_ > timeoutMs_) failed = failAll("timeout", 0, "it did not complete within " + secondsText(timeoutMs_));
      else break;
      failed.completed = std::move(step.completed);
      return failed;
    }
    return step;
  }

  /**
   * Fails every pending operation: operation `failedId` (0: the oldest pending one) with `cause`, the others as not
   * completed because of it. Later operations are refused with it. `abort` is asked for unless this is a close with
   * nothing pending (a clean close destroys the communicator instead).
   */
  WatchdogStep failAll(const std::string& kind, uint64_t failedId, const std::string& cause) {
    WatchdogStep step;
    if (broken()) return step;
    failure_.kind = kind;
    failure_.cause = cause;
    const uint64_t culprit = failedId == 0 && !ops_.empty() ? ops_.front().id : failedId;
    for (const Pending& op : ops_) {
      if (op.id == culprit) failure_.what = op.what;
    }
    for (const Pending& op : ops_) {
      bool own = op.id == culprit || kind == "closed";
      step.failed.push_back({op.id, kind, op.what, own ? cause : "not completed: " + afterFailure()});
    }
    step.abort = kind != "closed" || !ops_.empty();
    ops_.clear();
    return step;
  }

  bool broken() const { return !failure_.kind.empty(); }
  const OpFailure& failure() const { return failure_; }
  size_t pending() const { return ops_.size(); }

  /** What an operation issued after the first failure is refused with (kind: failure().kind). */
  std::string refusal() const {
    return failure_.kind == "closed" ? "the collective was closed" : afterFailure();
  }

 private:
  std::string afterFailure() const {
    return "the communicator is unusable after an earlier failure: " + failure_.message();
  }

  struct Pending {
    uint64_t id;
    std::string what;
  };
  int64_t timeoutMs_;
  int64_t headSince_ = 0;  // when the oldest pending operation became the oldest
  std::deque<Pending> ops_;
  OpFailure failure_;      // kind "" until the first failure
};

}  // namespace nccl
}  // namespace cuda
}  // namespace dalle
