#include "store_server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

namespace dalle_collective {

namespace {
// Bounds on what the store holds and on the clients it serves (the rendezvous needs worldSize values of ~100 bytes
// per peer, and one connection per rank).
constexpr size_t kMaxValues = 65536;
constexpr size_t kMaxStoredBytes = 256u << 20;
constexpr size_t kMaxPendingReplyBytes = 8u << 20;
constexpr int kHelloWithinMs = 10000;
}  // namespace

StoreServer::StoreServer(const std::string& host, int port, int worldSize) : worldSize_(worldSize), ranks_(worldSize) {
  std::string why;
  listenFd_ = listenTcp(host, port, &why);
  if (listenFd_ < 0) throw std::runtime_error("rank 0 " + why);
  fcntl(listenFd_, F_SETFL, fcntl(listenFd_, F_GETFL) | O_NONBLOCK);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    closeFd(listenFd_);
    throw std::runtime_error("rank 0 could not make the store's wake-up pipe");
  }
  wakeRead_ = fds[0];
  wakeWrite_ = fds[1];
  thread_ = std::thread([this] { serve(); });
}

StoreServer::~StoreServer() { stop(); }

void StoreServer::stop() {
  if (!stopping_.exchange(true)) {
    char b = 1;
    (void)!write(wakeWrite_, &b, 1);
  }
  if (thread_.joinable()) thread_.join();
  for (Conn& c : conns_) closeFd(c.fd);
  conns_.clear();
  closeFd(listenFd_);
  closeFd(wakeRead_);
  closeFd(wakeWrite_);
  listenFd_ = wakeRead_ = wakeWrite_ = -1;
}

void StoreServer::serve() {
  std::vector<pollfd> fds;
  while (!stopping_.load()) {
    fds.clear();
    fds.push_back({wakeRead_, POLLIN, 0});
    fds.push_back({listenFd_, POLLIN, 0});
    for (Conn& c : conns_) fds.push_back({c.fd, static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
    // 200 ms: pre-Hello connections are timed out even when nothing else happens.
    int r = poll(fds.data(), fds.size(), 200);
    if (r < 0 && errno != EINTR) break;
    if (stopping_.load()) break;
    if (r > 0) {
      if (fds[1].revents & POLLIN) acceptAll();
      // conns_ may have grown in acceptAll: only the first fds.size() - 2 have poll results.
      for (size_t i = 0; i + 2 < fds.size(); i++) {
        Conn& c = conns_[i];
        short ev = fds[i + 2].revents;
        if (ev & (POLLIN | POLLHUP | POLLERR)) readFrom(c);
        if (c.fd >= 0 && (ev & POLLOUT)) writeTo(c);
      }
    }
    Clock::time_point now = Clock::now();
    for (Conn& c : conns_) {
      if (c.fd >= 0 && c.rank < 0 && !c.done && now > c.helloBy) dropConnection(c);
      if (c.fd >= 0 && c.done && c.out.empty()) dropConnection(c);
    }
    std::vector<Conn> open;
    for (Conn& c : conns_) if (c.fd >= 0) open.push_back(std::move(c));
    conns_.swap(open);
  }
}

void StoreServer::acceptAll() {
  for (;;) {
    int fd = accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    // One connection per rank, plus room for ranks reconnecting and stray clients timing out.
    if (conns_.size() >= static_cast<size_t>(2 * worldSize_ + 64)) {
      closeFd(fd);
      continue;
    }
    Conn c;
    c.fd = fd;
    c.helloBy = Clock::now() + std::chrono::milliseconds(kHelloWithinMs);
    conns_.push_back(std::move(c));
  }
}

void StoreServer::readFrom(Conn& c) {
  char buf[65536];
  for (;;) {
    ssize_t n = recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      dropConnection(c);
      return;
    }
    if (n < 0) break;
    c.in.insert(c.in.end(), buf, buf + n);
    // Whole frames out of `in`; a bad length or body closes the connection.
    size_t used = 0;
    while (c.fd >= 0 && c.in.size() - used >= 4) {
      uint32_t len = readU32(c.in.data() + used);
      if (len == 0 || len > kMaxFrameBytes) {
        dropConnection(c);
        return;
      }
      if (c.in.size() - used - 4 < len) break;
      try {
        handle(c, c.in.data() + used + 4, len);
      } catch (const ProtocolError&) {
        dropConnection(c);
        return;
      }
      used += 4 + len;
    }
    if (c.fd < 0) return;
    c.in.erase(c.in.begin(), c.in.begin() + used);
    if (n < static_cast<ssize_t>(sizeof buf)) break;
  }
}

void StoreServer::handle(Conn& c, const char* body, size_t n) {
  if (c.done) return;  // after Goodbye or a refused Hello, nothing more is read
  BodyReader r(body, n);
  Msg type = r.type();
  if (c.rank < 0 && type != Msg::Hello) throw ProtocolError("a request before Hello");
  switch (type) {
    case Msg::Hello: {
      if (c.rank >= 0) throw ProtocolError("a second Hello");
      uint32_t magic = r.u32(), version = r.u32(), rank = r.u32(), world = r.u32(), pid = r.u32();
      std::string host = r.str(kMaxHostBytes, "a host name");
      r.end();
      if (magic != kMagic) throw ProtocolError("not a dalle client");
      std::string refusal;
      if (version != kProtocolVersion) {
        refusal = "protocol version " + std::to_string(version) + " is not rank 0's " + std::to_string(kProtocolVersion) +
                  " (every rank must run the same dalle build)";
      } else if (static_cast<int>(world) != worldSize_) {
        refusal = "this rank was started with world size " + std::to_string(world) + ", rank 0 with " +
                  std::to_string(worldSize_) + " (every rank needs the same WORLD_SIZE)";
      } else if (rank >= world) {
        refusal = "rank " + std::to_string(rank) + " is out of range for world size " + std::to_string(world);
      } else if (ranks_[rank].state != RankState::NeverJoined) {
        const RankRecord& was = ranks_[rank];
        refusal = "rank " + std::to_string(rank) + " already joined from host " + was.host + ", pid " +
                  std::to_string(was.pid) + " (two processes were given the same RANK, or a rank restarted: a group " +
                  "cannot be rejoined, restart every rank)";
      }
      if (!refusal.empty()) {
        reply(c, BodyWriter(Msg::Error).blob(refusal).frame());
        c.done = true;
        return;
      }
      c.rank = static_cast<int>(rank);
      RankRecord& rec = ranks_[rank];
      rec.state = RankState::Connected;
      rec.pid = pid;
      rec.host = host;
      rec.last = Clock::now();
      reply(c, BodyWriter(Msg::Ok).frame());
      return;
    }
    case Msg::Set: {
      std::string key = r.str(kMaxKeyBytes, "a key");
      std::vector<char> value = r.bytes(kMaxValueBytes, "a value");
      r.end();
      auto it = values_.find(key);
      size_t oldBytes = it == values_.end() ? 0 : it->second.size() + it->first.size();
      size_t newTotal = valueBytes_ - oldBytes + key.size() + value.size();
      if ((it == values_.end() && values_.size() >= kMaxValues) || newTotal > kMaxStoredBytes) {
        reply(c, BodyWriter(Msg::Error).blob("the store is full (" + std::to_string(values_.size()) + " keys, " +
                                             std::to_string(valueBytes_) + " bytes)").frame());
        return;
      }
      valueBytes_ = newTotal;
      values_[key] = std::move(value);
      reply(c, BodyWriter(Msg::Ok).frame());
      return;
    }
    case Msg::Get: {
      std::string key = r.str(kMaxKeyBytes, "a key");
      r.end();
      auto it = values_.find(key);
      BodyWriter w(Msg::Value);
      if (it == values_.end()) w.u8(0).blob("", 0);
      else w.u8(1).blob(it->second);
      reply(c, w.frame());
      return;
    }
    case Msg::Check: {
      uint32_t count = r.u32();
      if (count > kMaxKeysPerCheck) throw ProtocolError("too many keys in one Check");
      std::vector<uint32_t> missing;
      for (uint32_t i = 0; i < count; i++) {
        if (values_.find(r.str(kMaxKeyBytes, "a key")) == values_.end()) missing.push_back(i);
      }
      r.end();
      BodyWriter w(Msg::Missing);
      w.u32(static_cast<uint32_t>(missing.size()));
      for (uint32_t i : missing) w.u32(i);
      reply(c, w.frame());
      return;
    }
    case Msg::Heartbeat:
      r.end();
      ranks_[c.rank].last = Clock::now();
      return;
    case Msg::Status:
      r.end();
      reply(c, statusFrame());
      return;
    case Msg::Joined: {
      r.end();
      uint32_t connected = 0, gone = 0;
      for (const RankRecord& rec : ranks_) {
        connected += rec.state == RankState::Connected;
        gone += rec.state == RankState::Lost || rec.state == RankState::Left;
      }
      reply(c, BodyWriter(Msg::Count).u32(connected).u32(gone).frame());
      return;
    }
    case Msg::Report: {
      RankRecord& rec = ranks_[c.rank];
      uint32_t blamed = r.u32();
      if (blamed > static_cast<uint32_t>(worldSize_)) throw ProtocolError("a blamed rank out of range");
      rec.kind = r.str(kMaxKindBytes, "a fault kind");
      rec.message = r.str(kMaxReportBytes, "a fault message");
      r.end();
      rec.blamedPlusOne = blamed;
      rec.reported = true;
      reply(c, BodyWriter(Msg::Ok).frame());
      return;
    }
    case Msg::Goodbye: {
      r.end();
      RankRecord& rec = ranks_[c.rank];
      rec.state = RankState::Left;
      rec.last = Clock::now();
      c.rank = -1;
      c.done = true;
      return;
    }
    default:
      throw ProtocolError("an unknown message type");
  }
}

std::vector<char> StoreServer::statusFrame() const {
  BodyWriter w(Msg::StatusReply);
  w.u32(static_cast<uint32_t>(worldSize_));
  Clock::time_point now = Clock::now();
  uint32_t reports = 0;
  for (const RankRecord& rec : ranks_) {
    long long age = rec.state == RankState::NeverJoined
                        ? 0
                        : std::chrono::duration_cast<std::chrono::milliseconds>(now - rec.last).count();
    w.u8(static_cast<uint8_t>(rec.state)).u32(rec.pid).u32(static_cast<uint32_t>(age < 0 ? 0 : age)).blob(rec.host);
    w.u8(rec.reported ? 1 : 0);
    if (rec.reported) w.u32(rec.blamedPlusOne).blob(rec.kind).blob(reports++ < kMaxReportsInStatus ? rec.message : std::string());
  }
  return w.frame();
}

void StoreServer::reply(Conn& c, std::vector<char> frame) {
  if (c.out.size() + frame.size() > kMaxPendingReplyBytes + kMaxReplyBytes) {
    dropConnection(c);  // a client that sends but never reads (more than one largest reply waiting)
    return;
  }
  c.out.insert(c.out.end(), frame.begin(), frame.end());
  writeTo(c);
}

void StoreServer::writeTo(Conn& c) {
  while (!c.out.empty()) {
    ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      dropConnection(c);
      return;
    }
    c.out.erase(c.out.begin(), c.out.begin() + n);
  }
}

void StoreServer::dropConnection(Conn& c) {
  if (c.fd < 0) return;
  if (c.rank >= 0 && ranks_[c.rank].state == RankState::Connected) {
    // Closed without Goodbye: the process died (or its network did).
    ranks_[c.rank].state = RankState::Lost;
    ranks_[c.rank].last = Clock::now();
  }
  closeFd(c.fd);
  c.fd = -1;
  c.rank = -1;
}

}  // namespace dalle_collective
