// A rank's one connection to rank 0's store (rank 0 included): requests and replies under one lock, and a background
// thread that sends a heartbeat every `heartbeatMs` on the same connection, so the store knows the process is alive
// even while its JavaScript thread computes, and notices within a few heartbeats when it is stopped (SIGSTOP) or gone.
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "net.h"
#include "wire.h"

namespace dalle_collective {

/** The store did not answer, or the connection to it broke: rank 0 (which serves it) is gone or unreachable. */
struct StoreUnreachable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/** The store answered with a refusal (a Hello refused, the store full). */
struct StoreRefused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/** A fault a rank reported when its own operation failed (it is a victim, not the cause). */
struct FaultReport {
  int blamed = -1;  // the rank it found at fault; -1: not known
  std::string kind;
  std::string message;
};

struct RankStatus {
  RankState state = RankState::NeverJoined;
  uint32_t pid = 0;
  uint32_t ageMs = 0;
  std::string host;
  std::optional<FaultReport> report;
};

class StoreClient {
 public:
  /** Every request waits at most requestMs for its reply; a store slower than that counts as gone. */
  StoreClient(std::string host, int port, int requestMs) : host_(std::move(host)), port_(port), requestMs_(requestMs) {}
  ~StoreClient();
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  /** Connects, retrying while nobody listens yet (rank 0 starting later), until `deadline`; throws StoreUnreachable. */
  void connect(Deadline deadline);
  /** Joins as `rank`; throws StoreRefused with the store's reason (same rank twice, world sizes differ). */
  void hello(int rank, int worldSize, uint32_t pid, const std::string& host);
  void set(const std::string& key, const std::vector<char>& value);
  std::optional<std::vector<char>> get(const std::string& key);
  /** Indices into `keys` of those not set yet. */
  std::vector<size_t> missing(const std::vector<std::string>& keys);
  std::vector<RankStatus> status();
  /** How many ranks are connected, and how many have gone (lost or left): a small reply, for polling. */
  std::pair<int, int> joined();
  /** Records this rank's failure, so that others do not blame it for leaving afterwards. */
  void report(const FaultReport& report);
  void startHeartbeat(int intervalMs);
  /** Tells the store this rank leaves on purpose (so it is not reported as dead), then closes. */
  void goodbye();
  /** The local address of the connection: the interface that reaches rank 0, which Gloo's pairs use too. */
  std::string localAddress() const;
  std::string endpoint() const { return host_ + ":" + std::to_string(port_); }

 private:
  std::vector<char> request(std::vector<char> frame);
  void heartbeatLoop(int intervalMs);
  void stopHeartbeat();

  std::string host_;
  int port_;
  int requestMs_;
  mutable std::mutex io_;  // one request/reply (or heartbeat) at a time on fd_
  int fd_ = -1;
  std::string broken_;     // why the connection is unusable, once it is
  std::mutex hbMutex_;
  std::condition_variable hbWake_;
  bool hbStop_ = false;
  std::thread heartbeat_;
};

}  // namespace dalle_collective
