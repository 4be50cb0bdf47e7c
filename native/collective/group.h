// One process's membership of a data-parallel group over Gloo: the store (served by rank 0, joined by every rank),
// the Gloo context, and the one communication thread that runs the operations in issue order from a FIFO queue.
// No N-API here: addon.cc turns completions into Promises.
#pragma once

#include <gloo/rendezvous/context.h>
#include <gloo/transport/device.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "liveness.h"
#include "store_client.h"
#include "store_server.h"

namespace dalle_collective {

struct GroupConfig {
  int rank = 0;
  int worldSize = 1;
  int localRank = 0;
  std::string masterAddr = "127.0.0.1";
  int masterPort = 29500;
  /** Rendezvous and every operation: Gloo's context timeout. */
  int timeoutMs = 300000;
  /** How often the store hears from this rank; a rank silent for 3 intervals is reported as stopped. */
  int heartbeatMs = 1000;
  /** GLOO_SOCKET_IFNAME: the interface Gloo's pairs use (default: the one that reaches MASTER_ADDR). */
  std::string iface;
};

enum class ReduceOp { Sum, Max, Min };
enum class DType { F32, F64 };

/** How an operation ended: ok, or the fault (message, kind, the rank at fault when known). */
struct Outcome {
  bool ok = true;
  Fault fault;
};

struct HostSpan {
  void* data = nullptr;
  size_t count = 0;
};

struct Op {
  enum class Kind { Connect, AllReduce, AllReduceBuffers, Broadcast, Barrier };
  Kind kind = Kind::Barrier;
  ReduceOp reduce = ReduceOp::Sum;
  DType dtype = DType::F32;
  HostSpan span;                  // AllReduce (dtype), Broadcast (bytes)
  std::vector<HostSpan> buffers;  // AllReduceBuffers (f32 each)
  int root = 0;
  /** Called once on the communication thread (or on the caller's, when the op is refused or dropped). */
  std::function<void(const Outcome&)> done;
};

class Group : public std::enable_shared_from_this<Group> {
 public:
  /** Rank 0 starts listening here (throws std::runtime_error when it cannot); nothing else blocks. */
  static std::shared_ptr<Group> create(const GroupConfig& config);
  ~Group();

  /** Queues `op` behind every earlier one; refused at once (done called here) after a failure or close. */
  void enqueue(Op op);
  /**
   * Leaves the group: queued operations are dropped (done with kind "closed"), the running one finishes, then the
   * store hears Goodbye and Gloo's pairs close. Idempotent; does not wait.
   */
  void close();
  const GroupConfig& config() const { return config_; }

 private:
  explicit Group(const GroupConfig& config);
  void run();
  Outcome execute(Op& op);
  void connect();
  void allReduce(void* data, size_t count, DType dtype, ReduceOp reduce);
  void allReduceBuffers(const std::vector<HostSpan>& buffers, ReduceOp reduce);
  void broadcast(void* data, size_t bytes, int root);
  void barrier();
  void shutDown();
  std::string describe(const Op& op, uint64_t index) const;
  uint32_t nextTag() { return static_cast<uint32_t>(++tag_); }
  /** How often a rank polls the store while waiting: every rank does, so a larger world polls less often. */
  int pollMs() const { return std::min(200, std::max(20, config_.worldSize)); }

  GroupConfig config_;
  std::unique_ptr<StoreServer> server_;
  StoreClient store_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> context_;
  std::vector<float> bucket_;  // AllReduceBuffers' packed message, reused
  uint64_t tag_ = 0;
  uint64_t opsRun_ = 0;

  std::mutex mutex_;  // guards the fields below
  std::condition_variable wake_;
  std::deque<Op> queue_;
  bool closing_ = false;
  bool connected_ = false;
  Fault broken_;  // kind != "" once an operation failed: every later one is refused with it
};

}  // namespace dalle_collective
