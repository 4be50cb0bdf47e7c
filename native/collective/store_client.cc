#include "store_client.h"

namespace dalle_collective {

StoreClient::~StoreClient() {
  stopHeartbeat();
  closeFd(fd_);
}

void StoreClient::connect(Deadline deadline) {
  std::string why;
  for (;;) {
    ConnectFailure failure;
    int fd = connectTcp(host_, port_, deadline, &failure, &why);
    if (fd >= 0) {
      std::lock_guard<std::mutex> lock(io_);
      fd_ = fd;
      return;
    }
    if (failure != ConnectFailure::Refused || msLeft(deadline) <= 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<long long>(100, msLeft(deadline))));
    if (msLeft(deadline) <= 0) break;
  }
  throw StoreUnreachable(why);
}

std::vector<char> StoreClient::request(std::vector<char> frame) {
  std::lock_guard<std::mutex> lock(io_);
  Deadline deadline = deadlineIn(requestMs_);
  if (fd_ < 0) throw StoreUnreachable(broken_.empty() ? "not connected to the store" : broken_);
  std::string why;
  std::vector<char> body;
  if (!sendAll(fd_, frame, deadline, &why) || !recvFrame(fd_, &body, deadline, &why, kMaxReplyBytes)) {
    // A half-read reply would desynchronise the stream: the connection is done.
    broken_ = why;
    closeFd(fd_);
    fd_ = -1;
    throw StoreUnreachable(why);
  }
  if (!body.empty() && static_cast<Msg>(body[0]) == Msg::Error) {
    BodyReader r(body.data(), body.size());
    r.type();
    throw StoreRefused(r.str(kMaxFrameBytes, "an error message"));
  }
  return body;
}

void StoreClient::hello(int rank, int worldSize, uint32_t pid, const std::string& host) {
  std::string h = host.size() > kMaxHostBytes ? host.substr(0, kMaxHostBytes) : host;
  request(BodyWriter(Msg::Hello).u32(kMagic).u32(kProtocolVersion).u32(rank).u32(worldSize).u32(pid).blob(h).frame());
}

void StoreClient::set(const std::string& key, const std::vector<char>& value) {
  if (key.size() > kMaxKeyBytes || value.size() > kMaxValueBytes) {
    throw StoreRefused("a store entry over the limits (key " + std::to_string(key.size()) + " bytes, value " +
                       std::to_string(value.size()) + " bytes)");
  }
  request(BodyWriter(Msg::Set).blob(key).blob(value).frame());
}

std::optional<std::vector<char>> StoreClient::get(const std::string& key) {
  std::vector<char> body = request(BodyWriter(Msg::Get).blob(key).frame());
  try {
    BodyReader r(body.data(), body.size());
    if (r.type() != Msg::Value) throw ProtocolError("not a Value");
    bool found = r.u8() != 0;
    std::vector<char> value = r.bytes(kMaxValueBytes, "a value");
    r.end();
    if (!found) return std::nullopt;
    return value;
  } catch (const ProtocolError& e) {
    throw StoreUnreachable(std::string("the store's reply to Get is malformed: ") + e.what());
  }
}

std::vector<size_t> StoreClient::missing(const std::vector<std::string>& keys) {
  std::vector<size_t> out;
  for (size_t start = 0; start < keys.size(); start += kMaxKeysPerCheck) {
    size_t n = std::min<size_t>(kMaxKeysPerCheck, keys.size() - start);
    BodyWriter w(Msg::Check);
    w.u32(static_cast<uint32_t>(n));
    for (size_t i = 0; i < n; i++) w.blob(keys[start + i]);
    std::vector<char> body = request(w.frame());
    try {
      BodyReader r(body.data(), body.size());
      if (r.type() != Msg::Missing) throw ProtocolError("not a Missing");
      uint32_t count = r.u32();
      if (count > n) throw ProtocolError("more missing keys than asked");
      for (uint32_t i = 0; i < count; i++) {
        uint32_t index = r.u32();
        if (index >= n) throw ProtocolError("a key index out of range");
        out.push_back(start + index);
      }
      r.end();
    } catch (const ProtocolError& e) {
      throw StoreUnreachable(std::string("the store's reply to Check is malformed: ") + e.what());
    }
  }
  return out;
}

std::pair<int, int> StoreClient::joined() {
  std::vector<char> body = request(BodyWriter(Msg::Joined).frame());
  try {
    BodyReader r(body.data(), body.size());
    if (r.type() != Msg::Count) throw ProtocolError("not a Count");
    int connected = static_cast<int>(r.u32()), gone = static_cast<int>(r.u32());
    r.end();
    return {connected, gone};
  } catch (const ProtocolError& e) {
    throw StoreUnreachable(std::string("the store's reply to Joined is malformed: ") + e.what());
  }
}

std::vector<RankStatus> StoreClient::status() {
  std::vector<char> body = request(BodyWriter(Msg::Status).frame());
  try {
    BodyReader r(body.data(), body.size());
    if (r.type() != Msg::StatusReply) throw ProtocolError("not a StatusReply");
    uint32_t world = r.u32();
    if (world > kMaxWorldSize) throw ProtocolError("a world size over the limit");
    std::vector<RankStatus> out(world);
    for (RankStatus& s : out) {
      uint8_t state = r.u8();
      if (state > static_cast<uint8_t>(RankState::Lost)) throw ProtocolError("an unknown rank state");
      s.state = static_cast<RankState>(state);
      s.pid = r.u32();
      s.ageMs = r.u32();
      s.host = r.str(kMaxHostBytes, "a host name");
      if (r.u8() != 0) {
        FaultReport f;
        f.blamed = static_cast<int>(r.u32()) - 1;
        f.kind = r.str(kMaxKindBytes, "a fault kind");
        f.message = r.str(kMaxReportBytes, "a fault message");
        s.report = std::move(f);
      }
    }
    r.end();
    return out;
  } catch (const ProtocolError& e) {
    throw StoreUnreachable(std::string("the store's status reply is malformed: ") + e.what());
  }
}

void StoreClient::report(const FaultReport& f) {
  std::string kind = f.kind.substr(0, kMaxKindBytes), message = f.message.substr(0, kMaxReportBytes);
  request(BodyWriter(Msg::Report).u32(static_cast<uint32_t>(f.blamed + 1)).blob(kind).blob(message).frame());
}

void StoreClient::startHeartbeat(int intervalMs) {
  heartbeat_ = std::thread([this, intervalMs] { heartbeatLoop(intervalMs); });
}

void StoreClient::heartbeatLoop(int intervalMs) {
  std::vector<char> beat = BodyWriter(Msg::Heartbeat).frame();
  std::unique_lock<std::mutex> lock(hbMutex_);
  while (!hbStop_) {
    hbWake_.wait_for(lock, std::chrono::milliseconds(intervalMs), [this] { return hbStop_; });
    if (hbStop_) break;
    lock.unlock();
    {
      std::lock_guard<std::mutex> io(io_);
      std::string why;
      if (fd_ >= 0 && !sendAll(fd_, beat, deadlineIn(intervalMs), &why)) {
        // Part of a frame may have gone: the stream cannot be trusted, and a store that takes no heartbeat for a whole
        // interval (with the socket's buffer full) is stopped or gone. The next request says so.
        broken_ = why;
        closeFd(fd_);
        fd_ = -1;
      }
    }
    lock.lock();
  }
}

void StoreClient::stopHeartbeat() {
  {
    std::lock_guard<std::mutex> lock(hbMutex_);
    hbStop_ = true;
  }
  hbWake_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

void StoreClient::goodbye() {
  stopHeartbeat();
  std::lock_guard<std::mutex> lock(io_);
  if (fd_ >= 0) {
    std::string why;
    sendAll(fd_, BodyWriter(Msg::Goodbye).frame(), deadlineIn(1000), &why);
    closeFd(fd_);
    fd_ = -1;
    broken_ = "this rank left the group";
  }
}

std::string StoreClient::localAddress() const {
  std::lock_guard<std::mutex> lock(io_);
  return fd_ >= 0 ? localAddressOf(fd_) : "";
}

}  // namespace dalle_collective
