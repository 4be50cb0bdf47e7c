// The rendezvous store that rank 0 serves (as PyTorch's TCPStore): keys and values for Gloo's connectFullMesh, and
// the liveness record of every rank (host, pid, last heartbeat, how its connection ended) that error messages name.
// One thread, poll(2) over the listening socket and every connection; no request waits on another, so a stopped or
// malicious client holds up nobody. Protocol and limits: wire.h.
#pragma once

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "net.h"
#include "wire.h"

namespace dalle_collective {

class StoreServer {
 public:
  /** Listens on host:port at once (throws std::runtime_error naming the address and the reason), then serves. */
  StoreServer(const std::string& host, int port, int worldSize);
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  /** Stops serving and closes every connection (idempotent; joins the thread). */
  void stop();

 private:
  struct Conn {
    int fd = -1;
    std::vector<char> in;
    std::vector<char> out;
    int rank = -1;          // set by Hello
    bool done = false;      // close once `out` is flushed
    Deadline helloBy;
  };
  struct RankRecord {
    RankState state = RankState::NeverJoined;
    uint32_t pid = 0;
    std::string host;
    Clock::time_point last;  // last heartbeat (Connected) or when the connection ended (Left, Lost)
    bool reported = false;   // the rank's own operation failed; what it found:
    uint32_t blamedPlusOne = 0;
    std::string kind, message;
  };

  void serve();
  void acceptAll();
  void readFrom(Conn& c);
  void writeTo(Conn& c);
  void handle(Conn& c, const char* body, size_t n);
  void reply(Conn& c, std::vector<char> frame);
  void dropConnection(Conn& c);
  std::vector<char> statusFrame() const;

  int worldSize_;
  int listenFd_ = -1;
  int wakeRead_ = -1;
  int wakeWrite_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::vector<Conn> conns_;
  std::vector<RankRecord> ranks_;
  std::map<std::string, std::vector<char>> values_;
  size_t valueBytes_ = 0;
};

}  // namespace dalle_collective
