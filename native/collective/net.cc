#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "wire.h"

namespace dalle_collective {

namespace {

std::string errnoText(int err) { return std::string(strerror(err)); }

// Waits until fd is ready for `events` or the deadline passes; false on the deadline (errno-free: the caller words it).
bool waitFor(int fd, short events, Deadline deadline) {
  for (;;) {
    long long left = msLeft(deadline);
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, static_cast<int>(left > 1000000 ? 1000000 : left));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return true;  // let the following read/write report the error
  }
}

void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

addrinfo* resolve(const std::string& host, int port, bool passive, std::string* why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* list = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &list);
  if (rc != 0) {
    *why = "cannot resolve " + host + ": " + gai_strerror(rc);
    return nullptr;
  }
  return list;
}

}  // namespace

int connectTcp(const std::string& host, int port, Deadline deadline, ConnectFailure* failure, std::string* why) {
  *failure = ConnectFailure::Other;
  addrinfo* list = resolve(host, port, false, why);
  if (!list) return -1;
  int fd = -1;
  bool refused = false;
  for (addrinfo* a = list; a && fd < 0; a = a->ai_next) {
    int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (s < 0) {
      *why = "socket: " + errnoText(errno);
      continue;
    }
    int rc = connect(s, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      if (!waitFor(s, POLLOUT, deadline)) {
        *why = "connecting to " + host + ":" + std::to_string(port) + " timed out";
        close(s);
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err == 0 ? 0 : -1;
      errno = err;
    }
    if (rc != 0) {
      if (errno == ECONNREFUSED) refused = true;
      *why = "connecting to " + host + ":" + std::to_string(port) + ": " + errnoText(errno);
      close(s);
      continue;
    }
    // Back to blocking: reads and writes below poll first, so none waits past its deadline.
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK);
    setNoDelay(s);
    fd = s;
  }
  freeaddrinfo(list);
  if (fd >= 0) *failure = ConnectFailure::None;
  else if (refused) *failure = ConnectFailure::Refused;
  return fd;
}

int listenTcp(const std::string& host, int port, std::string* why) {
  // The given address first (MASTER_ADDR names this machine), then every interface when it is not one of ours.
  for (const std::string& h : {host, std::string("0.0.0.0")}) {
    addrinfo* list = resolve(h, port, true, why);
    if (!list) continue;
    for (addrinfo* a = list; a; a = a->ai_next) {
      int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (s < 0) continue;
      int one = 1;
      setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (bind(s, a->ai_addr, a->ai_addrlen) == 0 && listen(s, 128) == 0) {
        freeaddrinfo(list);
        return s;
      }
      int err = errno;
      *why = "cannot listen on " + h + ":" + std::to_string(port) + ": " + errnoText(err);
      close(s);
      if (err == EADDRINUSE) {  // the port is taken: another address will not help
        freeaddrinfo(list);
        return -1;
      }
    }
    freeaddrinfo(list);
  }
  return -1;
}

bool sendAll(int fd, const std::vector<char>& frame, Deadline deadline, std::string* why) {
  size_t done = 0;
  while (done < frame.size()) {
    if (!waitFor(fd, POLLOUT, deadline)) {
      *why = "sending to the store timed out";
      return false;
    }
    ssize_t n = send(fd, frame.data() + done, frame.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      *why = "sending to the store: " + errnoText(errno);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

namespace {
bool recvExact(int fd, char* out, size_t n, Deadline deadline, std::string* why) {
  size_t done = 0;
  while (done < n) {
    if (!waitFor(fd, POLLIN, deadline)) {
      *why = "no answer from the store in time";
      return false;
    }
    ssize_t r = recv(fd, out + done, n - done, MSG_DONTWAIT);
    if (r == 0) {
      *why = "the store closed the connection";
      return false;
    }
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      *why = "reading from the store: " + errnoText(errno);
      return false;
    }
    done += static_cast<size_t>(r);
  }
  return true;
}
}  // namespace

bool recvFrame(int fd, std::vector<char>* body, Deadline deadline, std::string* why, uint32_t maxBytes) {
  char head[4];
  if (!recvExact(fd, head, 4, deadline, why)) return false;
  uint32_t n = readU32(head);
  if (n == 0 || n > maxBytes) {
    *why = "the store sent a frame of " + std::to_string(n) + " bytes (not a dalle store?)";
    return false;
  }
  body->resize(n);
  return recvExact(fd, body->data(), n, deadline, why);
}

std::string localAddressOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
  } else if (ss.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

std::string hostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

void closeFd(int fd) {
  if (fd >= 0) close(fd);
}

}  // namespace dalle_collective
