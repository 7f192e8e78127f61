// The one small socket layer: POSIX sockets and Winsock behind the same blocking API.
// Every other file of the core talks to the network only through this header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace tccl::net {

#ifdef _WIN32
using NativeSocket = uintptr_t;
#else
using NativeSocket = int;
#endif

// Must be called once before any socket is used (WSAStartup on Windows; ignores SIGPIPE elsewhere).
void initSockets();
// Text of the last socket error of this thread (errno / WSAGetLastError).
std::string lastSocketError();

struct ConstBuffer {
  const void* data;
  size_t len;
};

struct PollItem {
  NativeSocket fd;
  bool wantRead = true;
  bool wantWrite = false;
  bool readable = false;
  bool writable = false;
  bool failed = false;  // error or hang-up: a read or write then tells which
};

struct SocketOptions {
  int bufferBytes = 4 << 20;  // SO_SNDBUF and SO_RCVBUF; large so one connection can fill a long fat pipe
  bool noDelay = true;
  // Unsent bytes a connection may hold in its kernel buffer before a write blocks (Linux, macOS). Keeping it
  // small makes the K writers of a link take segments in turn instead of the first ones filling megabytes of
  // buffer that then drain at one connection's rate while the others idle. 0 = the OS default.
  int notSentLowWater = 256 << 10;
  bool keepAlive = true;
  // A silently dead path (a peer host gone, a NAT that dropped the mapping) is noticed by the kernel: an idle
  // connection sends a probe after keepIdleS and gives up after keepCount unanswered probes keepIntervalS apart;
  // bytes that stay unacknowledged for userTimeoutMs end the connection too (TCP_USER_TIMEOUT, Linux only; macOS
  // and Windows have no per-socket equivalent and rely on the retransmission limit of the OS). 0 = OS default.
  int keepIdleS = 10;
  int keepIntervalS = 5;
  int keepCount = 3;
  int userTimeoutMs = 20000;
};

class Socket {
 public:
  Socket() = default;
  explicit Socket(NativeSocket fd) : fd_(fd) {}
  ~Socket();
  Socket(Socket&& other) noexcept;
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // Connects within timeoutMs (non-blocking connect + poll), from local address `source` when not empty. Returns an
  // invalid socket and sets `error` on failure.
  static Socket connectTo(const std::string& host, uint16_t port, int timeoutMs, std::string& error, const std::string& source = "");

  // Starts a non-blocking connect and returns at once: the socket is writable once connected (then
  // connectResult() says how it went). Invalid socket and `error` set when it fails at once.
  static Socket startConnect(const std::string& host, uint16_t port, std::string& error, const std::string& source = "");
  // After a started connect became writable (or failed): 0 when connected, else the error code (text: errorText).
  int connectResult() const;

  bool valid() const;
  // Closes with a reset (SO_LINGER 0): no TIME_WAIT, no lingering; for refusing strangers.
  void abort();
  void applyOptions(const SocketOptions& options);
  // Blocking send/receive of exactly len bytes; false on error or end of stream.
  bool sendAll(const void* data, size_t len);
  bool recvAll(void* data, size_t len);
  // Sends a header and a payload as one gathered write when the OS allows (one syscall per frame).
  bool sendAll2(const void* head, size_t headLen, const void* payload, size_t payloadLen);
  // Waits until readable/writable for at most timeoutMs; false on timeout or error.
  bool waitReadable(int timeoutMs);
  bool waitWritable(int timeoutMs);
  // Wakes any thread blocked in send/recv on this socket (they return false); the descriptor stays open.
  void shutdownBoth();
  // Sends FIN after the bytes already queued (the peer reads them, then end of stream); reading still works.
  void shutdownWrite();
  void close();
  std::string peerAddress() const;

  // Non-blocking mode, for sockets driven by an I/O loop (see pollSockets).
  bool setNonBlocking(bool on);
  // One non-blocking gathered write of up to `count` buffers: bytes written (> 0), 0 when the socket would block,
  // -1 on error (the connection is unusable).
  long writeSome(const ConstBuffer* buffers, int count);
  // One non-blocking read: bytes read (> 0), 0 when it would block, -1 at end of stream, -2 on error.
  long readSome(void* data, size_t len);
  NativeSocket native() const { return fd_; }

 private:
  NativeSocket fd_ = invalidSocket();
  static NativeSocket invalidSocket();
};

// Text of an error code (errno / WSA code).
std::string errorText(int code);
// The error means the process or the system is out of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM).
bool isResourceExhaustion(int code);

// Waits until any of the sockets is ready (or timeoutMs passes; -1 = no limit). Fills the `readable`, `writable`
// and `failed` flags; returns the number of ready sockets (0 on timeout).
int pollSockets(PollItem* items, size_t count, int timeoutMs);

// Wakes a thread blocked in pollSockets from any other thread: its descriptor is one of the polled items.
class Waker {
 public:
  Waker();
  ~Waker();
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  NativeSocket fd() const { return readFd_; }
  void wake();
  // Consumes pending wake-ups (called by the polling thread when fd() is readable).
  void drain();

 private:
  NativeSocket readFd_;
  NativeSocket writeFd_;
};

class Listener {
 public:
  Listener() = default;
  ~Listener();
  // Binds and listens; port 0 asks the OS for a free port. Returns false and sets `error` on failure.
  bool listen(const std::string& host, uint16_t port, std::string& error);
  uint16_t port() const { return port_; }
  // Waits at most timeoutMs for a connection; returns an invalid Socket on timeout or when closed.
  Socket accept(int timeoutMs);
  // One non-blocking accept (the listener is made non-blocking): a socket, or an invalid one with `error` set to
  // the error code (0 when nothing is pending).
  Socket acceptNow(int& error);
  NativeSocket native() const { return fd_; }
  void close();

 private:
  NativeSocket fd_ = static_cast<NativeSocket>(-1);
  uint16_t port_ = 0;
};

}  // namespace tccl::net
