// The rendezvous of NCCL ranks, over the same TCP store as the Gloo backend (native/collective: store_server.cc,
// store_client.cc, liveness.cc, compiled into the CUDA addon too, so that NCCL needs no libgloo): rank 0 serves the
// store; every rank joins it and sends heartbeats; rank 0 publishes NCCL's unique id under a key and the others wait
// for it; and when an NCCL operation fails or times out, the store's record of every rank (how its connection ended,
// its last heartbeat) names the rank at fault, exactly as for Gloo (native/collective/README.md, "How a failure names
// the rank at fault"). No N-API and no CUDA here: nccl_napi.cc runs each call on a thread of its own.
#pragma once

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "liveness.h"
#include "store_client.h"
#include "store_server.h"

namespace dalle {
namespace cuda {
namespace nccl {

using dalle_collective::Fault;

struct RendezvousConfig {
  int rank = 0;
  int worldSize = 1;
  std::string masterAddr = "127.0.0.1";
  int masterPort = 29500;
  /** The rendezvous, a key's wait, and how long a rank may stay silent. */
  int timeoutMs = 300000;
  /** How often the store hears from this rank; silent for 3 intervals counts as stopped. */
  int heartbeatMs = 1000;
};

/** A failure already worded as a Fault (kind, message, the rank at fault). */
struct FaultError : std::runtime_error {
  explicit FaultError(Fault f) : std::runtime_error(f.message), fault(std::move(f)) {}
  Fault fault;
};

class Rendezvous {
 public:
  /** Checks the config (std::invalid_argument); rank 0 starts listening at once (std::runtime_error: kind listen). */
  explicit Rendezvous(const RendezvousConfig& config);
  ~Rendezvous();

  /** Connects, says Hello, starts the heartbeat, and waits until every rank has; throws FaultError. */
  void join();
  /** Sets `key` (rank 0: NCCL's unique id); throws FaultError. */
  void publish(const std::string& key, const std::vector<char>& value);
  /** Waits for `key` up to the timeout (or until a rank is gone); throws FaultError naming the cause. */
  std::vector<char> await(const std::string& key);
  /**
   * The fault behind a failed operation `what` (its `cause` in NCCL's or CUDA's words): the store names the rank that
   * exited, went silent, never joined or left. Reports it to the store (so others see this rank as a victim), and on
   * rank 0 waits (bounded) until the others have failed too, since rank 0's exit takes the store with it. The first
   * call diagnoses; later calls return its finding.
   */
  Fault fault(const std::string& what, const std::string& cause, bool rendezvous);
  /**
   * Leaves: rank 0 keeps serving until the others have left (at most min(timeout, 10 s)) unless the group failed,
   * then every rank says Goodbye (so it is not reported as dead). Idempotent.
   */
  void leave();

  const RendezvousConfig& config() const { return config_; }

 private:
  int pollMs() const { return std::min(200, std::max(20, config_.worldSize)); }
  int silentAfterMs() const { return 3 * config_.heartbeatMs; }
  Fault diagnose(const std::string& what, const std::string& cause, bool rendezvous);

  RendezvousConfig config_;
  std::unique_ptr<dalle_collective::StoreServer> server_;
  dalle_collective::StoreClient store_;
  std::mutex mutex_;  // guards the fields below
  bool joined_ = false;
  bool failed_ = false;
  bool left_ = false;
  Fault first_;
};

}  // namespace nccl
}  // namespace cuda
}  // namespace dalle
