// The store's wire format (native/collective/README.md, "Store protocol"): every message is a frame
//   u32 body length (little-endian, 1 .. kMaxFrameBytes), then the body: u8 type, then the type's fields,
// fields being u8, u32 (little-endian), or bytes (u32 length, then the bytes). Both ends read through BodyReader,
// which refuses a field that runs past the body; a malformed frame closes the connection.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace dalle_collective {

// Limits on what a peer may send: a key names one value, a value holds one rank's Gloo addresses (about 100 bytes per
// peer, so 1 MiB is ~10k ranks), a Check lists at most kMaxKeysPerCheck keys.
constexpr uint32_t kMagic = 0x31434c44;  // "DLC1"
constexpr uint32_t kProtocolVersion = 1;
constexpr uint32_t kMaxKeyBytes = 1024;
constexpr uint32_t kMaxValueBytes = 1 << 20;
constexpr uint32_t kMaxHostBytes = 255;
constexpr uint32_t kMaxKeysPerCheck = 512;
constexpr uint32_t kMaxWorldSize = 65536;
constexpr uint32_t kMaxKindBytes = 32;
constexpr uint32_t kMaxReportBytes = 2048;
constexpr uint32_t kMaxFrameBytes = kMaxValueBytes + kMaxKeyBytes + 64;
// Replies may be larger (a status of every rank: ~300 bytes each, plus up to kMaxReportsInStatus fault reports).
constexpr uint32_t kMaxReportsInStatus = 64;
constexpr uint32_t kMaxReplyBytes = 64u << 20;
// A Check frame of kMaxKeysPerCheck keys of kMaxKeyBytes (plus their lengths) fits one frame.
static_assert(kMaxKeysPerCheck * (kMaxKeyBytes + 4) < kMaxFrameBytes, "a full Check fits a frame");

enum class Msg : uint8_t {
  // client -> server
  Hello = 1,      // u32 magic, u32 version, u32 rank, u32 worldSize, u32 pid, bytes host
  Set = 2,        // bytes key, bytes value
  Get = 3,        // bytes key
  Check = 4,      // u32 n, n x bytes key                 -> Missing
  Heartbeat = 5,  // (nothing; no reply)
  Status = 6,     // (nothing)                            -> StatusReply
  Goodbye = 7,    // (nothing; no reply; the client closes next)
  Report = 8,     // u32 blamed rank + 1 (0: not known), bytes kind, bytes message  -> Ok
  Joined = 9,     // (nothing)                            -> Count
  // server -> client
  Ok = 0x81,           // (nothing)
  Error = 0x82,        // bytes message
  Value = 0x83,        // u8 found, bytes value
  Missing = 0x84,      // u32 n, n x u32 index of a key not set
  StatusReply = 0x85,  // u32 worldSize, per rank: u8 RankState, u32 pid, u32 ageMs, bytes host,
                       //   u8 reported, then if reported: u32 blamed rank + 1, bytes kind, bytes message
                       //   (the message left empty after the first kMaxReportsInStatus reports)
  Count = 0x86,        // u32 ranks connected, u32 ranks gone (lost or left)
};

// A rank as the store sees it. ageMs in a StatusReply: since the last heartbeat (Connected) or since the connection
// closed (Left, Lost); 0 for NeverJoined.
enum class RankState : uint8_t { NeverJoined = 0, Connected = 1, Left = 2, Lost = 3 };

/** A malformed frame (a field past the end, a length over its limit): the connection is closed. */
struct ProtocolError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class BodyWriter {
 public:
  explicit BodyWriter(Msg type) { bytes_.resize(4); bytes_.push_back(static_cast<char>(type)); }
  BodyWriter& u8(uint8_t v) {
    bytes_.push_back(static_cast<char>(v));
    return *this;
  }
  BodyWriter& u32(uint32_t v) {
    for (int i = 0; i < 4; i++) bytes_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  BodyWriter& blob(const char* data, size_t n) {
    u32(static_cast<uint32_t>(n));
    bytes_.insert(bytes_.end(), data, data + n);
    return *this;
  }
  BodyWriter& blob(const std::string& s) { return blob(s.data(), s.size()); }
  BodyWriter& blob(const std::vector<char>& v) { return blob(v.data(), v.size()); }
  /** The whole frame, length prefix filled in. */
  std::vector<char> frame() {
    uint32_t n = static_cast<uint32_t>(bytes_.size() - 4);
    for (int i = 0; i < 4; i++) bytes_[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return std::move(bytes_);
  }

 private:
  std::vector<char> bytes_;
};

inline uint32_t readU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

class BodyReader {
 public:
  BodyReader(const char* data, size_t n) : p_(data), end_(data + n) {}
  Msg type() { return static_cast<Msg>(u8()); }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(*p_++);
  }
  uint32_t u32() {
    need(4);
    uint32_t v = readU32(p_);
    p_ += 4;
    return v;
  }
  /** A length-prefixed field of at most `limit` bytes. */
  std::string str(uint32_t limit, const char* what) {
    uint32_t n = u32();
    if (n > limit) throw ProtocolError(std::string(what) + " of " + std::to_string(n) + " bytes is over the limit of " + std::to_string(limit));
    need(n);
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  std::vector<char> bytes(uint32_t limit, const char* what) {
    std::string s = str(limit, what);
    return std::vector<char>(s.begin(), s.end());
  }
  void end() {
    if (p_ != end_) throw ProtocolError(std::to_string(end_ - p_) + " stray bytes after a message");
  }

 private:
  void need(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) throw ProtocolError("a message ends inside a field");
  }
  const char* p_;
  const char* end_;
};

}  // namespace dalle_collective
