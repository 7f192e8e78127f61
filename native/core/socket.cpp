#include "socket.h"

#include <cstring>
#include <chrono>
#include <thread>
#include <vector>

#ifdef _WIN32
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <csignal>
#include <cerrno>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#endif

namespace tccl::net {

#ifdef _WIN32
static constexpr NativeSocket kInvalid = INVALID_SOCKET;
static int closeNative(NativeSocket s) { return closesocket(s); }
static int pollOne(NativeSocket s, short events, int timeoutMs) {
  WSAPOLLFD p{};
  p.fd = s;
  p.events = events;
  return WSAPoll(&p, 1, timeoutMs) > 0 && (p.revents & (events | POLLHUP | POLLERR)) ? 1 : 0;
}
#else
static constexpr NativeSocket kInvalid = -1;
static int closeNative(NativeSocket s) { return ::close(s); }
static int pollOne(NativeSocket s, short events, int timeoutMs) {
  pollfd p{};
  p.fd = s;
  p.events = events;
  int r;
  do {
    r = ::poll(&p, 1, timeoutMs);
  } while (r < 0 && errno == EINTR);
  return r > 0 && (p.revents & (events | POLLHUP | POLLERR)) ? 1 : 0;
}
#endif

void initSockets() {
#ifdef _WIN32
  static bool done = [] {
    WSADATA data;
    return WSAStartup(MAKEWORD(2, 2), &data) == 0;
  }();
  (void)done;
#else
  // A write to a peer that has gone away must fail with EPIPE, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
#endif
}

// Winsock codes are not errno values, so strerror() would name the wrong error on Windows.
static std::string socketErrorText(int code) {
#ifdef _WIN32
  return "winsock error " + std::to_string(code);
#else
  return std::strerror(code);
#endif
}

std::string lastSocketError() {
#ifdef _WIN32
  return socketErrorText(WSAGetLastError());
#else
  return socketErrorText(errno);
#endif
}

NativeSocket Socket::invalidSocket() { return kInvalid; }

Socket::~Socket() { close(); }
Socket::Socket(Socket&& other) noexcept : fd_(other.fd_) { other.fd_ = kInvalid; }
Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.fd_;
    other.fd_ = kInvalid;
  }
  return *this;
}

bool Socket::valid() const { return fd_ != kInvalid; }

static bool setBlocking(NativeSocket s, bool blocking) {
#ifdef _WIN32
  u_long mode = blocking ? 0 : 1;
  return ioctlsocket(s, FIONBIO, &mode) == 0;
#else
  int flags = fcntl(s, F_GETFL, 0);
  if (flags < 0) return false;
  flags = blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK);
  return fcntl(s, F_SETFL, flags) == 0;
#endif
}

// A non-blocking socket for one address of a dial, bound to `source` when one is given; kInvalid (and `error`) if
// either step fails.
static NativeSocket openForDial(const addrinfo* ai, const std::string& source, const std::string& target, std::string& error) {
  NativeSocket s = ::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
  if (s == kInvalid) {
    error = "socket(): " + lastSocketError();
    return kInvalid;
  }
  setBlocking(s, false);
  if (source.empty()) return s;
  addrinfo shints{};
  shints.ai_family = ai->ai_family;
  shints.ai_socktype = SOCK_STREAM;
  shints.ai_flags = AI_NUMERICHOST;
  addrinfo* src = nullptr;
  bool bound = getaddrinfo(source.c_str(), "0", &shints, &src) == 0 && src && ::bind(s, src->ai_addr, static_cast<int>(src->ai_addrlen)) == 0;
  if (src) freeaddrinfo(src);
  if (!bound) {
    error = "cannot bind source address " + source + " to dial " + target + ": " + lastSocketError();
    closeNative(s);
    return kInvalid;
  }
  return s;
}

Socket Socket::startConnect(const std::string& host, uint16_t port, std::string& error, const std::string& source) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  // Peers are named by address; a host name costs one blocking look-up here (see docs/architecture.md).
  int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    error = "cannot resolve " + host + ": " + gai_strerror(rc);
    return Socket();
  }
  Socket out;
  for (addrinfo* ai = res; ai && !out.valid(); ai = ai->ai_next) {
    NativeSocket s = openForDial(ai, source, host + ":" + service, error);
    if (s == kInvalid) continue;
    int r = ::connect(s, ai->ai_addr, static_cast<int>(ai->ai_addrlen));
#ifdef _WIN32
    bool started = r == 0 || WSAGetLastError() == WSAEWOULDBLOCK;
#else
    bool started = r == 0 || errno == EINPROGRESS;
#endif
    if (started) {
      out = Socket(s);
    } else {
      error = "connect to " + host + ":" + service + ": " + lastSocketError();
      closeNative(s);
    }
  }
  freeaddrinfo(res);
  return out;
}

int Socket::connectResult() const {
  if (!valid()) return -1;
  int soError = 0;
  socklen_t len = sizeof(soError);
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, reinterpret_cast<char*>(&soError), &len) != 0) return -1;
  return soError;
}

void Socket::abort() {
  if (!valid()) return;
  linger l{};
  l.l_onoff = 1;
  l.l_linger = 0;
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&l), sizeof(l));
  close();
}

std::string errorText(int code) { return socketErrorText(code); }

bool isResourceExhaustion(int code) {
#ifdef _WIN32
  return code == WSAEMFILE || code == WSAENOBUFS;
#else
  return code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM;
#endif
}

Socket Socket::connectTo(const std::string& host, uint16_t port, int timeoutMs, std::string& error, const std::string& source) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    error = "cannot resolve " + host + ": " + gai_strerror(rc);
    return Socket();
  }
  Socket out;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    NativeSocket s = openForDial(ai, source, host + ":" + service, error);
    if (s == kInvalid) continue;
    int r = ::connect(s, ai->ai_addr, static_cast<int>(ai->ai_addrlen));
    bool ok = r == 0;
    if (!ok) {
#ifdef _WIN32
      bool inProgress = WSAGetLastError() == WSAEWOULDBLOCK;
#else
      bool inProgress = errno == EINPROGRESS;
#endif
      if (inProgress && pollOne(s, POLLOUT, timeoutMs)) {
        int soError = 0;
        socklen_t len = sizeof(soError);
        getsockopt(s, SOL_SOCKET, SO_ERROR, reinterpret_cast<char*>(&soError), &len);
        ok = soError == 0;
        if (!ok) error = "connect to " + host + ":" + service + ": " + socketErrorText(soError);
      } else if (inProgress) {
        error = "connect to " + host + ":" + service + " timed out after " + std::to_string(timeoutMs) + " ms";
      } else {
        error = "connect to " + host + ":" + service + ": " + lastSocketError();
      }
    }
    if (ok) {
      setBlocking(s, true);
      out = Socket(s);
      break;
    }
    closeNative(s);
  }
  freeaddrinfo(res);
  return out;
}

void Socket::applyOptions(const SocketOptions& o) {
  if (!valid()) return;
  int one = 1;
  if (o.noDelay) setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&one), sizeof(one));
  if (o.keepAlive) setsockopt(fd_, SOL_SOCKET, SO_KEEPALIVE, reinterpret_cast<const char*>(&one), sizeof(one));
  if (o.keepAlive) {
#if defined(TCP_KEEPIDLE)
    if (o.keepIdleS > 0) setsockopt(fd_, IPPROTO_TCP, TCP_KEEPIDLE, reinterpret_cast<const char*>(&o.keepIdleS), sizeof(int));
#elif defined(TCP_KEEPALIVE)
    if (o.keepIdleS > 0) setsockopt(fd_, IPPROTO_TCP, TCP_KEEPALIVE, reinterpret_cast<const char*>(&o.keepIdleS), sizeof(int));
#endif
#if defined(TCP_KEEPINTVL)
    if (o.keepIntervalS > 0) setsockopt(fd_, IPPROTO_TCP, TCP_KEEPINTVL, reinterpret_cast<const char*>(&o.keepIntervalS), sizeof(int));
#endif
#if defined(TCP_KEEPCNT)
    if (o.keepCount > 0) setsockopt(fd_, IPPROTO_TCP, TCP_KEEPCNT, reinterpret_cast<const char*>(&o.keepCount), sizeof(int));
#endif
  }
#if defined(TCP_USER_TIMEOUT)
  if (o.userTimeoutMs > 0) {
    unsigned int ut = static_cast<unsigned int>(o.userTimeoutMs);
    setsockopt(fd_, IPPROTO_TCP, TCP_USER_TIMEOUT, reinterpret_cast<const char*>(&ut), sizeof(ut));
  }
#endif
  if (o.bufferBytes > 0) {
    int b = o.bufferBytes;
    setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, reinterpret_cast<const char*>(&b), sizeof(b));
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, reinterpret_cast<const char*>(&b), sizeof(b));
  }
#ifdef TCP_NOTSENT_LOWAT
  if (o.notSentLowWater > 0) {
    int lowat = o.notSentLowWater;
    setsockopt(fd_, IPPROTO_TCP, TCP_NOTSENT_LOWAT, reinterpret_cast<const char*>(&lowat), sizeof(lowat));
  }
#endif
#ifdef __APPLE__
  setsockopt(fd_, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#endif
}

bool Socket::sendAll(const void* data, size_t len) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    int chunk = static_cast<int>(len > (1u << 30) ? (1u << 30) : len);
#if defined(_WIN32)
    int n = ::send(fd_, p, chunk, 0);
#elif defined(MSG_NOSIGNAL)
    ssize_t n = ::send(fd_, p, chunk, MSG_NOSIGNAL);
#else
    ssize_t n = ::send(fd_, p, chunk, 0);
#endif
    if (n <= 0) {
#ifndef _WIN32
      if (n < 0 && errno == EINTR) continue;
#endif
      return false;
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool Socket::sendAll2(const void* head, size_t headLen, const void* payload, size_t payloadLen) {
#ifdef _WIN32
  return sendAll(head, headLen) && (payloadLen == 0 || sendAll(payload, payloadLen));
#else
  iovec iov[2];
  iov[0].iov_base = const_cast<void*>(head);
  iov[0].iov_len = headLen;
  iov[1].iov_base = const_cast<void*>(payload);
  iov[1].iov_len = payloadLen;
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = payloadLen ? 2 : 1;
#ifdef MSG_NOSIGNAL
  const int flags = MSG_NOSIGNAL;
#else
  const int flags = 0;
#endif
  size_t total = headLen + payloadLen;
  size_t done = 0;
  while (done < total) {
    ssize_t n = ::sendmsg(fd_, &msg, flags);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
    if (done >= total) break;
    // Partial write: continue with plain sends from where it stopped.
    if (done < headLen) {
      return sendAll(static_cast<const char*>(head) + done, headLen - done) && (payloadLen == 0 || sendAll(payload, payloadLen));
    }
    return sendAll(static_cast<const char*>(payload) + (done - headLen), total - done);
  }
  return true;
#endif
}

bool Socket::recvAll(void* data, size_t len) {
  char* p = static_cast<char*>(data);
  while (len > 0) {
    int chunk = static_cast<int>(len > (1u << 30) ? (1u << 30) : len);
#ifdef _WIN32
    int n = ::recv(fd_, p, chunk, 0);
#else
    ssize_t n = ::recv(fd_, p, chunk, 0);
#endif
    if (n <= 0) {
#ifndef _WIN32
      if (n < 0 && errno == EINTR) continue;
#endif
      return false;
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool Socket::waitReadable(int timeoutMs) { return valid() && pollOne(fd_, POLLIN, timeoutMs) == 1; }
bool Socket::waitWritable(int timeoutMs) { return valid() && pollOne(fd_, POLLOUT, timeoutMs) == 1; }

void Socket::shutdownBoth() {
  if (!valid()) return;
#ifdef _WIN32
  ::shutdown(fd_, SD_BOTH);
#else
  ::shutdown(fd_, SHUT_RDWR);
#endif
}

void Socket::shutdownWrite() {
  if (!valid()) return;
#ifdef _WIN32
  ::shutdown(fd_, SD_SEND);
#else
  ::shutdown(fd_, SHUT_WR);
#endif
}

bool Socket::setNonBlocking(bool on) { return valid() && setBlocking(fd_, !on); }

long Socket::writeSome(const ConstBuffer* buffers, int count) {
#ifdef _WIN32
  WSABUF bufs[64];
  if (count > 64) count = 64;
  for (int i = 0; i < count; ++i) {
    bufs[i].buf = const_cast<char*>(static_cast<const char*>(buffers[i].data));
    bufs[i].len = static_cast<ULONG>(buffers[i].len);
  }
  DWORD sent = 0;
  if (WSASend(fd_, bufs, static_cast<DWORD>(count), &sent, 0, nullptr, nullptr) == 0) return static_cast<long>(sent);
  return WSAGetLastError() == WSAEWOULDBLOCK ? 0 : -1;
#else
  iovec iov[64];
  if (count > 64) count = 64;
  for (int i = 0; i < count; ++i) {
    iov[i].iov_base = const_cast<void*>(buffers[i].data);
    iov[i].iov_len = buffers[i].len;
  }
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = static_cast<decltype(msg.msg_iovlen)>(count);
#ifdef MSG_NOSIGNAL
  const int flags = MSG_NOSIGNAL | MSG_DONTWAIT;
#else
  const int flags = MSG_DONTWAIT;
#endif
  for (;;) {
    ssize_t n = ::sendmsg(fd_, &msg, flags);
    if (n >= 0) return static_cast<long>(n);
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  }
#endif
}

long Socket::readSome(void* data, size_t len) {
  int chunk = static_cast<int>(len > (1u << 30) ? (1u << 30) : len);
#ifdef _WIN32
  int n = ::recv(fd_, static_cast<char*>(data), chunk, 0);
  if (n > 0) return n;
  if (n == 0) return -1;
  return WSAGetLastError() == WSAEWOULDBLOCK ? 0 : -2;
#else
  for (;;) {
    ssize_t n = ::recv(fd_, data, static_cast<size_t>(chunk), MSG_DONTWAIT);
    if (n > 0) return static_cast<long>(n);
    if (n == 0) return -1;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -2;
  }
#endif
}

int pollSockets(PollItem* items, size_t count, int timeoutMs) {
#ifdef _WIN32
  thread_local std::vector<WSAPOLLFD> fds;
#else
  thread_local std::vector<pollfd> fds;
#endif
  fds.resize(count);
  for (size_t i = 0; i < count; ++i) {
    fds[i].fd = items[i].fd;
    fds[i].events = static_cast<short>((items[i].wantRead ? POLLIN : 0) | (items[i].wantWrite ? POLLOUT : 0));
    fds[i].revents = 0;
  }
#ifdef _WIN32
  int r = WSAPoll(fds.data(), static_cast<ULONG>(count), timeoutMs);
#else
  int r;
  do {
    r = ::poll(fds.data(), static_cast<nfds_t>(count), timeoutMs);
  } while (r < 0 && errno == EINTR);
#endif
  if (r < 0) {
    // Not expected with valid descriptors; a short pause keeps a persistent error from spinning the caller.
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return 0;
  }
  for (size_t i = 0; i < count; ++i) {
    short ev = fds[i].revents;
    items[i].readable = (ev & POLLIN) != 0;
    items[i].writable = (ev & POLLOUT) != 0;
    items[i].failed = (ev & (POLLERR | POLLHUP | POLLNVAL)) != 0;
  }
  return r;
}

#ifdef _WIN32
// Winsock polls sockets only: the waker is a connected pair of loopback TCP sockets.
Waker::Waker() : readFd_(kInvalid), writeFd_(kInvalid) {
  NativeSocket l = ::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int len = sizeof(a);
  if (l != kInvalid && ::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && ::listen(l, 1) == 0 &&
      getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    writeFd_ = ::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    sockaddr_in mine{}, accepted{};
    int mineLen = sizeof(mine), acceptedLen = sizeof(accepted);
    if (writeFd_ != kInvalid && ::connect(writeFd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
        getsockname(writeFd_, reinterpret_cast<sockaddr*>(&mine), &mineLen) == 0) {
      // Only our own connection is taken: another local process could connect to the listener first.
      for (int tries = 0; tries < 8 && readFd_ == kInvalid; ++tries) {
        NativeSocket s = ::accept(l, reinterpret_cast<sockaddr*>(&accepted), &acceptedLen);
        if (s == kInvalid) break;
        if (accepted.sin_port == mine.sin_port && accepted.sin_addr.s_addr == mine.sin_addr.s_addr) readFd_ = s;
        else closeNative(s);
        acceptedLen = sizeof(accepted);
      }
    }
  }
  if (l != kInvalid) closeNative(l);
  if (readFd_ != kInvalid) setBlocking(readFd_, false);
  if (writeFd_ != kInvalid) {
    setBlocking(writeFd_, false);
    int one = 1;
    setsockopt(writeFd_, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&one), sizeof(one));
  }
}
Waker::~Waker() {
  if (readFd_ != kInvalid) closeNative(readFd_);
  if (writeFd_ != kInvalid) closeNative(writeFd_);
}
void Waker::wake() {
  char b = 1;
  ::send(writeFd_, &b, 1, 0);  // a full pipe already means a pending wake-up
}
void Waker::drain() {
  char buf[256];
  while (::recv(readFd_, buf, sizeof(buf), 0) > 0) {
  }
}
#else
Waker::Waker() : readFd_(kInvalid), writeFd_(kInvalid) {
  int fds[2];
  if (::pipe(fds) == 0) {
    readFd_ = fds[0];
    writeFd_ = fds[1];
    setBlocking(readFd_, false);
    setBlocking(writeFd_, false);
  }
}
Waker::~Waker() {
  if (readFd_ != kInvalid) ::close(readFd_);
  if (writeFd_ != kInvalid) ::close(writeFd_);
}
void Waker::wake() {
  char b = 1;
  ssize_t r = ::write(writeFd_, &b, 1);  // a full pipe already means a pending wake-up
  (void)r;
}
void Waker::drain() {
  char buf[256];
  while (::read(readFd_, buf, sizeof(buf)) > 0) {
  }
}
#endif

void Socket::close() {
  if (valid()) {
    closeNative(fd_);
    fd_ = kInvalid;
  }
}

std::string Socket::peerAddress() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = {0};
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    port = ntohs(a->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

Listener::~Listener() { close(); }

bool Listener::listen(const std::string& host, uint16_t port, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    error = "cannot resolve listen address " + host + ": " + gai_strerror(rc);
    return false;
  }
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    NativeSocket s = ::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (s == kInvalid) continue;
    int one = 1;
#ifdef _WIN32
    // On Windows SO_REUSEADDR lets another process bind the same port and take over its connections;
    // exclusive use is the equivalent of the POSIX default.
    setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, reinterpret_cast<const char*>(&one), sizeof(one));
#else
    // Lets a restarted peer listen again at once on a fixed port whose old connections are in TIME_WAIT.
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const char*>(&one), sizeof(one));
#endif
    if (::bind(s, ai->ai_addr, static_cast<int>(ai->ai_addrlen)) == 0 && ::listen(s, 256) == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof(ss);
      getsockname(s, reinterpret_cast<sockaddr*>(&ss), &len);
      port_ = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                       : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      setBlocking(s, false);  // accept() is driven by a poll loop and must never block it
      fd_ = s;
      break;
    }
    error = "cannot listen on " + host + ":" + service + ": " + lastSocketError();
    closeNative(s);
  }
  freeaddrinfo(res);
  return fd_ != kInvalid;
}

Socket Listener::accept(int timeoutMs) {
  if (fd_ == kInvalid || !pollOne(fd_, POLLIN, timeoutMs)) return Socket();
  NativeSocket s = ::accept(fd_, nullptr, nullptr);
  if (s == kInvalid) return Socket();
  setBlocking(s, true);  // BSDs pass the listener's non-blocking mode on
  return Socket(s);
}

Socket Listener::acceptNow(int& error) {
  error = 0;
  if (fd_ == kInvalid) return Socket();
  NativeSocket s = ::accept(fd_, nullptr, nullptr);
  if (s != kInvalid) {
    setBlocking(s, false);
    return Socket(s);
  }
#ifdef _WIN32
  int e = WSAGetLastError();
  if (e != WSAEWOULDBLOCK && e != WSAECONNRESET) error = e;
#else
  int e = errno;
  if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ECONNABORTED && e != EPROTO) error = e;
#endif
  return Socket();
}

void Listener::close() {
  if (fd_ != kInvalid) {
    closeNative(fd_);
    fd_ = kInvalid;
  }
}

}  // namespace tccl::net
