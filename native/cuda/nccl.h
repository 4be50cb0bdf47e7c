// A data-parallel rank's NCCL communicator (NCCL loaded at run time: nccl_api.h), with its own communication stream,
// a device bucket for packed buffers, pinned staging for host arrays, and a watchdog thread (nccl_watchdog.h) that
// settles operations as their completion events fire, and aborts the communicator when one exceeds the timeout or
// NCCL reports an asynchronous error. No N-API here: nccl_napi.cc turns completions into Promises.
//
// Ordering (all operations are issued on the JavaScript thread, in issue order, so every rank issues the same NCCL
// calls in the same order): the CUDA backend computes on the legacy default stream of the device. A device-buffer
// reduction records an event there and makes the communication stream wait for it (the gradients are written), packs,
// reduces, unpacks on the communication stream, records its completion event, and makes the compute stream wait for
// that before any later kernel (which may read the gradients or reuse their memory). Host arrays go through pinned
// staging, so issuing never blocks the caller; the watchdog copies the result back when the operation completes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nccl_api.h"
#include "nccl_plan.h"
#include "nccl_watchdog.h"

namespace dalle {
namespace cuda {
namespace nccl {

enum class HostType { F32, F64, U8 };

/**
 * How an operation ended. kind: "" (ok) | timeout | nccl | cuda | closed | usage; `what` names the operation
 * ("allReduceBuffers #3 (sum, 12 buffers, 4096 f32)"), `cause` says what happened to it. `culprit` is false for an
 * operation that failed only because an earlier failure (`firstWhat`, `firstCause`) ended the communicator.
 */
struct Outcome {
  bool ok = true;
  std::string kind;
  std::string what;
  std::string cause;
  bool culprit = true;
  std::string firstWhat;
  std::string firstCause;
  std::string message() const { return what.empty() ? cause : what + " failed: " + cause; }
};

using Done = std::function<void(const Outcome&)>;

class Communicator {
 public:
  /**
   * ncclCommInitRank of `rank` among `worldSize` on CUDA device `device` (blocks until every rank has called it with
   * the same id: run it off the JavaScript thread), then starts the watchdog. Throws std::runtime_error with NCCL's
   * or CUDA's words.
   */
  static std::shared_ptr<Communicator> create(int rank, int worldSize, const UniqueId& id, int device, int timeoutMs);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // The operations: issued at once on the communication stream, `done` called once on the watchdog thread when they
  // complete or fail (or on this thread when refused: a usage error, an earlier failure, closed).

  /** In place over f32 device buffers (`spans`), packed into one message (nccl_plan.h). */
  void allReduceBuffers(const std::vector<Span>& spans, RedOp op, Done done);
  /** In place over a host array of `count` values; the array must stay alive and untouched until `done`. */
  void allReduceHost(void* data, size_t count, HostType type, RedOp op, Done done);
  /** Rank `root`'s `bytes` bytes at `data` into every rank's `data`. */
  void broadcastHost(void* data, size_t bytes, int root, Done done);

  /**
   * Leaves: pending operations fail (kind closed); the communicator is destroyed (aborted when operations were
   * pending); the watchdog stops; device and pinned memory are freed once the stream is idle. Idempotent.
   */
  void close();

  int rank() const { return rank_; }
  int worldSize() const { return worldSize_; }
  int device() const { return device_; }

 private:
  Communicator(const Library& lib, int rank, int worldSize, int device, int timeoutMs);

  struct Record {
    Done done;
    cudaEvent_t ready = nullptr;  // on the compute stream (device buffers only)
    cudaEvent_t finished = nullptr;
    bool issued = false;          // `finished` recorded: until then the event says nothing
    void* pinned = nullptr;       // host operations: staging, and where the result goes
    size_t pinnedBytes = 0;
    void* hostOut = nullptr;
    size_t hostBytes = 0;
  };
  /** An operation between begin and finish: its number and events (its Record may be failed meanwhile). */
  struct Begun {
    uint64_t id = 0;
    cudaEvent_t ready = nullptr;
    cudaEvent_t finished = nullptr;
  };

  /** Reserves the next operation (its events, its number): refused (done called) after a failure or close. */
  bool begin(const std::string& what, bool computeOrdered, Begun* out, Done& done);
  /** Marks it issued, or fails the communicator when issuing did (`err` non-empty, kind nccl or cuda). */
  void finish(const Begun& b, const std::string& kind, const std::string& err);
  void* bucket(size_t bytes, std::string* err);
  void* pinned(size_t bytes, std::string* err);
  cudaEvent_t event(std::string* err);
  void hostOperation(const std::string& what, void* data, size_t bytes, size_t count, DataType type, RedOp op, int root,
                     Done& done);
  /** Takes the records of a step's operations out of records_ (mutex_ held). */
  std::map<uint64_t, Record> takeRecords(const WatchdogStep& step);
  /** Copies host results back, frees the records' resources, calls their `done` (mutex_ not held). */
  void settle(const WatchdogStep& step, std::map<uint64_t, Record>& records);
  void release(Record& r);
  void abortComm();
  void watch();
  std::string describe(const char* name, uint64_t n, const std::string& detail) const;

  const Api& api_;
  int rank_, worldSize_, device_;
  Comm comm_ = nullptr;
  cudaStream_t stream_ = nullptr;

  std::mutex mutex_;  // guards everything below, never held across an NCCL call
  std::condition_variable wake_;
  OpTracker tracker_;
  std::map<uint64_t, Record> records_;
  uint64_t nextId_ = 0;
  std::vector<cudaEvent_t> freeEvents_;
  std::map<void*, size_t> pinnedSizes_;  // every pinned block, and its size
  std::vector<std::pair<void*, size_t>> freePinned_;
  void* bucket_ = nullptr;
  size_t bucketBytes_ = 0;
  std::vector<void*> retiredBuckets_;  // outgrown, possibly still read by queued work: freed at close
  bool stopping_ = false;
  bool closed_ = false;

  std::mutex commUse_;  // ncclCommGetAsyncError (watchdog) against ncclCommAbort / ncclCommDestroy
  std::atomic<int> issuing_{0};         // operations between begin and finish (the JavaScript thread inside NCCL)
  std::atomic<bool> abortStarted_{false};
  std::atomic<bool> aborted_{false};
  std::thread watchdog_;
};

}  // namespace nccl
}  // namespace cuda
}  // namespace dalle
