#include "nccl_rendezvous.h"

#include <unistd.h>

#include <thread>

namespace dalle {
namespace cuda {
namespace nccl {

using dalle_collective::DiagnoseRequest;
using dalle_collective::RankState;
using dalle_collective::RankStatus;
using dalle_collective::StoreRefused;
using dalle_collective::StoreUnreachable;
using dalle_collective::deadlineIn;
using dalle_collective::msLeft;
using dalle_collective::seconds;

namespace {

RendezvousConfig checked(const RendezvousConfig& c) {
  auto bad = [](const std::string& what) { throw std::invalid_argument(what); };
  if (c.worldSize < 1 || c.worldSize > static_cast<int>(dalle_collective::kMaxWorldSize)) bad("worldSize must be 1 .. 65536");
  if (c.rank < 0 || c.rank >= c.worldSize) bad("rank must be 0 .. worldSize - 1");
  if (c.masterPort < 1 || c.masterPort > 65535) bad("masterPort must be 1 .. 65535");
  if (c.masterAddr.empty() || c.masterAddr.size() > 255) bad("masterAddr must be a host name or address");
  if (c.timeoutMs < 1) bad("timeoutMs must be > 0");
  if (c.heartbeatMs < 10 || c.heartbeatMs > 60000) bad("heartbeatMs must be 10 .. 60000");
  return c;
}

}  // namespace

// A store request waits up to the timeout, within 1 .. 5 s (as the Gloo group's: native/collective/group.cc).
Rendezvous::Rendezvous(const RendezvousConfig& config)
    : config_(checked(config)), store_(config.masterAddr, config.masterPort, std::min(5000, std::max(1000, config.timeoutMs))) {
  if (config_.rank == 0) server_ = std::make_unique<dalle_collective::StoreServer>(config_.masterAddr, config_.masterPort, config_.worldSize);
}

Rendezvous::~Rendezvous() {
  leave();
}

void Rendezvous::join() {
  dalle_collective::Deadline deadline = deadlineIn(config_.timeoutMs);
  std::string what = "the rendezvous of " + std::to_string(config_.worldSize) + " NCCL ranks at " + store_.endpoint();
  try {
    store_.connect(deadline);
  } catch (const StoreUnreachable& e) {
    throw FaultError({"store-gone",
                      "no store answered at " + store_.endpoint() + " within " + seconds(config_.timeoutMs) + " (" +
                          e.what() + "): rank 0, which serves it, never started, or MASTER_ADDR/MASTER_PORT point " +
                          "elsewhere",
                      0});
  }
  try {
    store_.hello(config_.rank, config_.worldSize, static_cast<uint32_t>(getpid()), dalle_collective::hostName());
  } catch (const StoreRefused& e) {
    throw FaultError({"usage", std::string("rank 0's store refused this rank: ") + e.what(), -1});
  } catch (const StoreUnreachable& e) {
    throw FaultError(fault(what, e.what(), true));
  }
  store_.startHeartbeat(config_.heartbeatMs);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    joined_ = true;
  }
  try {
    for (;;) {
      std::pair<int, int> joined = store_.joined();
      if (joined.first == config_.worldSize) return;
      if (joined.second > 0 || msLeft(deadline) <= 0) throw std::runtime_error(joined.second > 0 ? "a rank left" : "timed out");
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min<long long>(pollMs(), msLeft(deadline))));
    }
  } catch (const std::exception& e) {
    throw FaultError(fault(what, e.what(), true));
  }
}

void Rendezvous::publish(const std::string& key, const std::vector<char>& value) {
  try {
    store_.set(key, value);
  } catch (const std::exception& e) {
    throw FaultError(fault("publishing " + key + " in the store", e.what(), true));
  }
}

std::vector<char> Rendezvous::await(const std::string& key) {
  dalle_collective::Deadline deadline = deadlineIn(config_.timeoutMs);
  std::string what = "waiting for rank 0's " + key + " in the store";
  try {
    for (;;) {
      std::optional<std::vector<char>> value = store_.get(key);
      if (value) return *value;
      // A rank gone (rank 0 above all, which publishes it) will not bring it: no need to wait for the timeout.
      if (store_.joined().second > 0) throw std::runtime_error("a rank is gone");
      if (msLeft(deadline) <= 0) throw std::runtime_error("timed out after " + seconds(config_.timeoutMs));
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min<long long>(pollMs(), msLeft(deadline))));
    }
  } catch (const std::exception& e) {
    throw FaultError(fault(what, e.what(), true));
  }
}

Fault Rendezvous::diagnose(const std::string& what, const std::string& cause, bool rendezvous) {
  DiagnoseRequest req;
  req.selfRank = config_.rank;
  req.worldSize = config_.worldSize;
  req.silentAfterMs = silentAfterMs();
  req.what = what;
  req.cause = cause;
  req.rendezvous = rendezvous;
  req.timeoutMs = config_.timeoutMs;
  req.pollMs = 2 * pollMs();
  return dalle_collective::diagnose(store_, req);
}

Fault Rendezvous::fault(const std::string& what, const std::string& cause, bool rendezvous) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (failed_) return first_;
  }
  Fault f = diagnose(what, cause, rendezvous);
  dalle_collective::reportFault(store_, f);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (failed_) return first_;  // another thread diagnosed meanwhile: one finding per group
    failed_ = true;
    first_ = f;
  }
  if (server_) dalle_collective::awaitOthersFailing(store_, config_.timeoutMs, silentAfterMs(), pollMs());
  return f;
}

void Rendezvous::leave() {
  bool healthy;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (left_) return;
    left_ = true;
    healthy = joined_ && !failed_;
  }
  if (server_ && healthy) {
    // Rank 0 serves the store: it stays up (bounded) until the others have left, so that a rank finishing its last
    // operation a moment later does not find the store gone and report rank 0 as dead.
    dalle_collective::awaitOthersLeaving(store_, config_.timeoutMs, pollMs());
  }
  store_.goodbye();
  if (server_) server_->stop();
}

}  // namespace nccl
}  // namespace cuda
}  // namespace dalle
