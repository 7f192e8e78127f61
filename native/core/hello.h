// The hello of a data connection, and the bookkeeping that bounds what a peer can make this one hold, as pure
// code (no sockets, no threads): the transport's handshake loop (handshake.cpp) and the unit tests use it.
//
// A dialler sends one 64-byte hello; the listener answers with an 8-byte reply and, when it says OK, the connection
// carries frames from then on. The listener's side is a small state machine per connection (IncomingHello) fed with
// whatever bytes arrive, so one thread can drive thousands of them; an extra round trip (a key exchange) is an extra
// state. docs/protocol.md describes the bytes.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace tccl {

constexpr uint32_t kHelloMagic = 0x4C434354;  // "TCCL"
constexpr uint32_t kReplyMagic = 0x4B4F4354;  // "TCOK"
constexpr uint16_t kProtocolVersion = 2;
constexpr size_t kHelloSize = 64;
constexpr size_t kReplySize = 8;

enum HelloStatus : uint32_t {
  kHelloOk = 0,
  kBadVersion = 1,
  kBadTicket = 2,
  kStaleEpoch = 3,
  kBadIndex = 4,
  kClosing = 5,
  // The listener already lost a member of this epoch: the dialler's group is broken too (it re-forms).
  kEpochBroken = 6,
  // The listener has not installed the dialler's (newer) epoch within its wait: the dialler tries again within its
  // retry window, as if the peer were not listening yet (its JavaScript thread may be busy in a long step).
  kNotYet = 7,
};
const char* helloStatusText(uint32_t status);

struct Hello {
  uint16_t version = kProtocolVersion;
  uint64_t epoch = 0;
  uint32_t from = 0;   // dialler's index in the group
  uint32_t to = 0;     // listener's index
  uint16_t index = 0;  // which of the link's K connections
  uint16_t count = 0;  // K
  std::array<uint8_t, 16> ticket{};
};

void encodeHello(const Hello& h, uint8_t* out);  // kHelloSize bytes
bool decodeHello(const uint8_t* in, Hello& out);  // false: not a hello (bad magic)
void encodeReply(uint32_t status, uint8_t* out);  // kReplySize bytes
bool decodeReply(const uint8_t* in, uint32_t& status);

// What the listener knows of its group when it judges a hello.
struct GroupView {
  uint64_t epoch = 0;
  int myIndex = 0;
  size_t worldSize = 0;
  std::array<uint8_t, 16> ticket{};
  bool closing = false;
  bool broken = false;
};

// The answer to a complete hello; `wait` is set (and the status meaningless) when the hello names a newer epoch than
// the listener's: the dialler learned of a re-form a moment earlier, and the listener waits (bounded) for it.
uint32_t judgeHello(const Hello& h, const GroupView& g, bool& wait);

// The listener's side of one connection until it is admitted or refused.
class IncomingHello {
 public:
  enum class State { Reading, Judging, Replying, Admitted, Refused };
  explicit IncomingHello(int64_t deadlineMs) : deadlineMs_(deadlineMs) {}

  State state() const { return state_; }
  // Where the next received bytes go and how many are still wanted (never more than the hello: the dialler sends
  // nothing else before the reply, so nothing of a frame is ever read here).
  uint8_t* readPtr() { return buf_ + got_; }
  size_t wanted() const { return state_ == State::Reading ? kHelloSize - got_ : 0; }
  // Bytes arrived; when the hello is complete it is decoded: Judging (then judge()) or Refused (not a hello).
  void received(size_t n);
  const Hello& hello() const { return hello_; }
  // Judges the complete hello against the group; stays Judging while it must wait for a newer epoch (until
  // `waitUntilMs` or the hello's deadline, whichever is first, then answers kNotYet). `mayWait` false (too many
  // connections already wait for a newer epoch) answers kNotYet at once: the ticket of an epoch the listener has
  // not installed is unknown, so a stranger naming a future epoch cannot be told from a dialler a moment ahead,
  // and the dialler tries again within its retry window. Replying afterwards.
  void judge(const GroupView& g, int64_t nowMs, int64_t waitUntilMs, bool mayWait = true);
  // Judging, waiting for a newer epoch.
  bool waiting() const { return state_ == State::Judging && waitUntilMs_ != 0; }
  // Still reading its hello (evicted first past the cap: a dialler that said its hello is not).
  bool reading() const { return state_ == State::Reading; }
  uint32_t status() const { return status_; }
  // The reply bytes still to send.
  const uint8_t* replyPtr() const { return reply_ + replySent_; }
  size_t replyLeft() const { return state_ == State::Replying ? kReplySize - replySent_ : 0; }
  bool replied() const { return replySent_ >= kReplySize; }
  // Reply bytes went out; once all did: Admitted (status OK) or Refused.
  void sent(size_t n);
  // The whole hello (and any wait for an epoch) must be over by then.
  int64_t deadlineMs() const { return deadlineMs_; }
  bool expired(int64_t nowMs) const { return nowMs >= deadlineMs_; }
  // When the driving loop must look at it again: its deadline, or the end of its wait for an epoch.
  int64_t wakeAtMs() const { return state_ == State::Judging && waitUntilMs_ != 0 ? waitUntilMs_ : deadlineMs_; }
  bool fail() { state_ = State::Refused; return false; }

 private:
  State state_ = State::Reading;
  int64_t deadlineMs_;
  int64_t waitUntilMs_ = 0;
  uint8_t buf_[kHelloSize] = {};
  size_t got_ = 0;
  Hello hello_;
  uint32_t status_ = kHelloOk;
  uint8_t reply_[kReplySize] = {};
  size_t replySent_ = 0;
};

// Memory a peer makes this one hold for operations that have not started here: charged by the bytes actually
// allocated (plus a fixed overhead per item, so empty frames and remembered aborts are not free), capped per peer
// and in total. charge() refuses what would pass a cap; the caller then closes the connection that sent it.
class Budget {
 public:
  Budget(size_t perPeer, size_t total) : perPeer_(perPeer), total_(total) {}
  static constexpr size_t kItemOverhead = 128;
  bool charge(int peer, size_t bytes);
  void release(int peer, size_t bytes);
  void reset() { used_ = 0; byPeer_.clear(); }
  size_t used() const { return used_; }
  size_t usedBy(int peer) const;
  size_t perPeerCap() const { return perPeer_; }
  size_t totalCap() const { return total_; }

 private:
  size_t perPeer_;
  size_t total_;
  size_t used_ = 0;
  std::map<int, size_t> byPeer_;
};

}  // namespace tccl
