// What the transport's own source files share (transport.cpp: operations, failure, control frames;
// handshake.cpp: listening, dialling, hello; io_loop.cpp: the I/O threads). Nothing outside them includes this.
#pragma once
#include <cstdio>
#include <cstring>

#include "transport.h"

namespace tccl {

// close() waits at most this long for the peers to read what it sent last and close their side.
constexpr int64_t kLingerMs = 1000;
constexpr size_t kMaxControlMessage = 4096;
// A goodbye lists how many ops per tag its sender ran (12 bytes a tag): up to 87,381 tags, e.g. one per tensor of
// an allReduceMany over a large model.
constexpr size_t kMaxGoodbyeBytes = size_t(1) << 20;

// For the catch handlers that keep an exception from ending a thread (and the process): it allocates nothing, so
// it still works when the exception was bad_alloc. A handler that built a std::string there would throw out of
// the handler under real memory exhaustion, and std::terminate would end the process.
inline void logInternalError(const char* where, const char* what) noexcept {
  std::fputs("tccl data plane: internal error on ", stderr);
  std::fputs(where, stderr);
  std::fputs(": ", stderr);
  std::fputs(what ? what : "unknown exception", stderr);
  std::fputs("\n", stderr);
}

template <typename T>
inline void put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));  // little-endian hosts only (docs/protocol.md)
}
template <typename T>
inline T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

struct Transport::Link {
  int peer = -1;
  uint64_t epoch = 0;
  std::mutex mu;              // guards everything below
  std::list<OpQueue> queues;  // one per operation with queued frames; served round-robin
  std::vector<std::shared_ptr<Connection>> conns;
  // Where an inline write (writeNow) starts looking for a free connection: it moves on at every call, so that
  // frames that become ready one at a time do not all go to the first connection of the list.
  size_t writeCursor = 0;
  // Control frames (abort notices) for the peer while the link has no connection yet (still dialling): its first
  // connection sends them, so a peer does not miss an abort because it was not connected yet.
  std::vector<std::pair<FrameHeader, std::string>> pendingControl;
  bool dead = false;
  // While a dial is being retried: since when, and why the last attempt failed.
  int64_t dialingSinceMs = 0;
  std::string lastDialError;
};

// A frame being written: a data frame borrowed from operation memory, or a control frame that owns its bytes.
struct OutFrame {
  uint8_t head[FrameHeader::kWireSize];
  const uint8_t* payload = nullptr;
  uint32_t length = 0;
  std::shared_ptr<Operation> op;    // data frames: counted in op->activeTransfers until written or dropped
  std::shared_ptr<void> keepAlive;  // owned payload storage
  std::string control;              // control frames: the payload
};

struct Transport::Connection {
  net::Socket sock;
  int peer = -1;
  uint64_t epoch = 0;
  bool outgoing = false;
  int index = 0;  // which of the link's K connections (from the hello): a re-dialled one replaces it
  std::shared_ptr<Link> link;
  // When it last carried a data frame either way (transport clock): a connection lost after a quiet spell while no
  // operation is in flight is dialled again (onConnectionLost).
  std::atomic<int64_t> lastDataMs{0};
  // The peer ended the stream without a goodbye: its process exited or closed the socket, which a path failure
  // (a reset, a timeout) never does, so such a loss is never taken for one and re-dialled.
  std::atomic<bool> endOfStream{false};  // outgoing connections serve their link's queue
  std::atomic<bool> dead{false};
  // The peer said goodbye on this connection: its end of stream is a departure, not a loss.
  std::atomic<bool> saidGoodbye{false};

  // Control frames queued by any thread; written between data frames by the owning I/O thread.
  std::mutex controlMu;
  std::deque<OutFrame> control;
  bool shutdownAfterControl = false;  // end our side of the stream once the queued control frames are out

  // Write side: the frames of the current batch; the first is written from outOffset on. Written by the I/O
  // thread that drives the connection, or by a thread that queued frames while the connection was idle (a small
  // first batch goes out at once instead of waiting for the I/O thread to wake up).
  std::mutex txMu;  // guards out, outOffset, writeShut, released
  std::deque<OutFrame> out;
  size_t outOffset = 0;
  bool writeShut = false;
  bool released = false;  // dropped by its I/O thread: nothing is written on it any more
  std::atomic<bool> wantWrite{false};  // the socket would block: wait until it is writable

  // ---- Read side: owned by the I/O thread that drives this connection. ----
  // Read side: buffered bytes (headers, small payloads); large payloads are read straight into place.
  std::vector<uint8_t> in;
  size_t inPos = 0, inEnd = 0;
  enum class Rx { Header, Data, Early, Control, Discard } rx = Rx::Header;
  FrameHeader rxHeader;
  size_t rxGot = 0;
  uint8_t* rxDst = nullptr;
  std::shared_ptr<Operation> rxOp;     // Data: counted in activeTransfers while its payload arrives
  std::shared_ptr<uint8_t[]> rxEarly;  // Early: the buffer the payload is kept in
  std::string rxControl;
  std::unique_ptr<uint8_t[]> scratch;  // one segment: where operations may have a payload read to
  OpKey cachedKey;                     // the op the last data frame belonged to (skips the transport lock)
  std::shared_ptr<Operation> cachedOp;
};

// A connection being set up, owned by the handshake thread: an accepted one until its hello is judged and the
// reply sent, or one of ours from the first dial until the reply to our hello.
struct Transport::Handshake {
  enum class State { Incoming, Backoff, Connecting, Sending, AwaitReply };
  State state = State::Incoming;
  net::Socket sock;
  bool ready = false;  // poll said the socket can be read or written (or failed)
  // Incoming.
  IncomingHello in{0};
  // Outgoing.
  std::shared_ptr<Link> link;
  PeerInfo target;
  int index = 0;
  bool redial = false;
  uint8_t hello[kHelloSize] = {};
  size_t helloSent = 0;
  uint8_t reply[kReplySize] = {};
  size_t replyGot = 0;
  int64_t dialStartMs = 0;
  int64_t nextTryMs = 0;
  int64_t backoffMs = 10;
  int64_t deadlineMs = 0;  // of the current connect attempt, or of the whole hello and reply

  bool outgoing() const { return state != State::Incoming; }
  bool wantsRead() const { return state == State::Incoming ? in.wanted() > 0 : state == State::AwaitReply; }
  bool wantsWrite() const {
    return state == State::Incoming ? in.replyLeft() > 0 : state == State::Connecting || state == State::Sending;
  }
  int64_t wakeAtMs() const {
    if (state == State::Incoming) return in.wakeAtMs();
    return state == State::Backoff ? nextTryMs : deadlineMs;
  }
};

struct Transport::IoThread {
  std::thread thread;
  net::Waker waker;
  std::mutex mu;
  std::vector<std::shared_ptr<Connection>> adopted;  // handed over by the set-up threads
  std::atomic<bool> polling{false};
  std::atomic<bool> stop{false};
};

}  // namespace tccl
