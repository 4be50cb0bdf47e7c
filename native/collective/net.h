// Plain POSIX TCP for the store: connect, listen, and whole frames with a deadline. Blocking sockets driven by poll(2),
// so no call waits past its deadline; every failure comes back as a sentence naming the peer and errno's text.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace dalle_collective {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline deadlineIn(long long ms) { return Clock::now() + std::chrono::milliseconds(ms); }
inline long long msLeft(Deadline d) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now()).count();
  return left > 0 ? left : 0;
}

/** Why a connect failed: Refused (nobody listens yet: worth retrying) or anything else. */
enum class ConnectFailure { None, Refused, Other };

/** A connected TCP socket to host:port, or -1 with `why` set. Tries every address getaddrinfo gives. */
int connectTcp(const std::string& host, int port, Deadline deadline, ConnectFailure* failure, std::string* why);

/** A listening socket on host:port (0.0.0.0 when host is not an address of this machine), or -1 with `why` set. */
int listenTcp(const std::string& host, int port, std::string* why);

/** Writes all of `frame`; false (with `why`) on error, a closed peer, or the deadline. */
bool sendAll(int fd, const std::vector<char>& frame, Deadline deadline, std::string* why);

/**
 * Reads one frame's body (the bytes after the length) into `body`; false (with `why`) on error, a closed peer,
 * a length of 0 or over maxBytes, or the deadline.
 */
bool recvFrame(int fd, std::vector<char>* body, Deadline deadline, std::string* why, uint32_t maxBytes);

/** The numeric local address of a connected socket ("127.0.0.1"): the interface that reaches the peer. */
std::string localAddressOf(int fd);

std::string hostName();

void closeFd(int fd);

}  // namespace dalle_collective
