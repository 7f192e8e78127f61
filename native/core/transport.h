// The data plane's transport: one listener, and per peer a link of K TCP connections. Frames carry an operation
// key (tag, sequence), so many operations share the connections.
//
// Threads (fixed in number for the life of the transport; nothing a peer or a stranger does creates one):
//  - I/O threads (options.ioThreads) drive every established connection with non-blocking sockets and one poll
//    loop each: they read frames and hand each payload straight to its operation (which says where the bytes go,
//    so all-gather data lands in place), and they write the next frame of the link's queue whenever a connection
//    can take one, round-robin over operations, so one operation is striped over all K connections and concurrent
//    operations share them fairly. An operation's follow-up sends (a ring forwards what it reduced) are queued from
//    the I/O thread that received the data and written by the next pass of the loop, without any thread hand-off.
//  - One handshake thread (handshake.cpp) accepts, dials and greets every new connection, each a small state
//    machine driven by one poll loop with a deadline, under a cap on connections that have not said a valid hello.
//  - One service thread runs deadlines, failure clean-up and early-frame replays.
// Each method below says which threads call it and which locks it takes. Lock order: mu_, then a Link's mu, then a
// Connection's txMu/controlMu, then dialMu_; segments_->mu and an IoThread's mu are leaves.
// docs/allreduce.md describes the wire and the failure semantics.
#pragma once
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hello.h"
#include "socket.h"

namespace tccl {

// Stable error codes; the addon turns them into the JS error classes of lib/errors.ts.
enum class ErrorCode { None = 0, PeerLost, Timeout, Aborted, Mismatch, Protocol, Auth, Closed, InvalidArgument };
const char* errorCodeName(ErrorCode code);

struct OpError {
  ErrorCode code = ErrorCode::None;
  std::string message;
  std::string peer;  // id of the lost peer for PeerLost
  explicit operator bool() const { return code != ErrorCode::None; }
};

// Frame types on a data connection. Goodbye: the sender is closing its engine; its payload says which operations
// it ran (per tag, how many), so the receivers fail only the operations it never ran and let the others finish
// with the data already on the wire, instead of taking the end of its connections for a crash.
enum class FrameType : uint8_t { Data = 1, Abort = 2, Broken = 3, Goodbye = 4 };

// Fixed 48-byte frame header, little-endian on the wire.
struct FrameHeader {
  static constexpr uint32_t kMagic = 0x31464354;  // "TCF1"
  static constexpr size_t kWireSize = 48;
  FrameType type = FrameType::Data;
  uint8_t dtype = 0;
  uint8_t op = 0;
  uint8_t phase = 0;   // algorithm-defined
  uint16_t step = 0;   // algorithm-defined
  uint16_t codec = 0;  // quantization codec, 0 = none
  uint32_t seq = 0;    // how many earlier operations used the same tag
  uint64_t tag = 0;
  uint64_t count = 0;   // elements in the whole operation: a mismatch between peers is caught on the first frame
  uint64_t offset = 0;  // algorithm-defined (usually a byte offset)
  uint32_t length = 0;  // payload bytes following the header
  uint32_t aux = 0;     // algorithm-defined; for Abort/Broken: the ErrorCode

  void encode(uint8_t* out) const;
  // False when the magic does not match (garbage on the socket).
  bool decode(const uint8_t* in);
};

struct OpKey {
  uint64_t tag = 0;
  uint32_t seq = 0;
  bool operator<(const OpKey& o) const { return tag != o.tag ? tag < o.tag : seq < o.seq; }
  bool operator==(const OpKey& o) const { return tag == o.tag && seq == o.seq; }
};

struct PeerInfo {
  std::string id;
  std::string host;
  uint16_t port = 0;
};

struct TransportOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 0;
  int connections = 8;
  int socketBufferBytes = 4 << 20;
  int connectTimeoutMs = 5000;
  // A peer that refuses or does not answer is dialled again, with back-off, for this long before the group is
  // given up as broken: members of a static group start at about the same time, and a listener may not be up yet.
  int connectRetryMs = 30000;
  // Local address outgoing connections are bound to before they dial (empty: the OS picks one).
  std::string sourceAddress;
  // Largest payload of one data frame; bigger transfers are split into segments of at most this size.
  uint32_t maxSegmentBytes = 256 << 10;
  // Threads that drive the connections; 0 = min(2, K, hardware threads).
  int ioThreads = 0;
  // Accepted connections that have not finished a valid hello (within connectTimeoutMs): past this many, the
  // oldest still reading its hello is dropped for each new one (at most half may wait for an epoch not yet
  // installed here), so a flood of silent connections costs a bounded number of descriptors
  // and a legitimate peer, whose hello follows its connect at once, still gets in.
  int maxHandshakes = 512;
  // Bytes a peer may make this one hold for operations it has not started yet (early frames, remembered aborts),
  // charged by what is allocated; past a cap the connection that brought it is closed (the group re-forms).
  size_t maxEarlyBytesPerPeer = size_t(1) << 30;
  size_t maxEarlyBytes = size_t(2) << 30;
  // A connection of a link lost while no operation is in flight, after carrying no data for this long, is dialled
  // again instead of breaking the group (a NAT that dropped an idle mapping). Data written more recently may have
  // been lost with it, so then the group breaks as before.
  int redialQuietMs = 25000;
};

// Counters for tests, benches and the operator (Engine.stats() in lib/engine.ts).
struct TransportStats {
  uint64_t handshakesPending = 0;   // accepted connections still in their hello
  uint64_t handshakesRefused = 0;   // refused: bad hello, wrong ticket/epoch/index, or no hello in time
  uint64_t handshakesEvicted = 0;   // dropped to make room under maxHandshakes
  uint64_t acceptExhausted = 0;     // accept() found the process or system out of descriptors
  uint64_t earlyBytes = 0;          // charged to the early-frame budget now
  uint64_t earlyRefused = 0;        // connections closed for passing the early budget
  uint64_t redials = 0;             // lost connections dialled again without breaking the group
  uint64_t internalErrors = 0;      // exceptions caught on a transport thread
};

class Transport;

// A unit of work queued on a link: one frame, its payload borrowed from operation memory.
struct SendItem {
  FrameHeader header;
  const uint8_t* payload = nullptr;
  std::shared_ptr<void> keepAlive;  // keeps owned payload storage alive until written
};

// Base of every collective running on the transport. Callbacks come from I/O threads and the service thread,
// possibly several at once.
class Operation : public std::enable_shared_from_this<Operation> {
 public:
  virtual ~Operation() = default;
  OpKey key;
  uint64_t epoch = 0;

  // Called once before the op becomes visible to I/O threads (worldSize, myIndex and peerIds are set): size
  // bookkeeping and expectWork() for every receive here. Must be cheap: it runs under the transport lock.
  virtual void prepare() {}
  // Called once after it is registered (on the caller's thread): queue the first sends. Frames of the op may be
  // handled on I/O threads while start() runs; the transport holds one unit of work until it returns.
  virtual void start(Transport& t) = 0;
  // A data frame for this op arrives from peer `from`: check its header and say where its h.length payload
  // bytes go (`dst`): into op memory, or into `scratch` (room for one segment of the transport's maxSegmentBytes,
  // valid until onPayload returns). Return false to have the payload discarded (after failing the op).
  virtual bool onHeader(Transport& t, int from, const FrameHeader& h, uint8_t* scratch, uint8_t*& dst) = 0;
  // The payload announced by onHeader is complete at `data` (not called if the op failed meanwhile).
  virtual void onPayload(Transport& t, int from, const FrameHeader& h, uint8_t* data) = 0;
  // Whether this op exchanges data with peer `index` (a member that leaves the group fails only those).
  virtual bool involves(int index) const { return true; }
  // The op succeeded: called once, after it can no longer fail and before onSettled; publish results here.
  virtual void onSucceeded() {}
  // The op failed (any reason). Called once, without transport locks held, after no thread still touches op
  // memory; restore the caller's buffers here.
  virtual void onFailed(const OpError& error) {}
  // Completion notification to the owner (addon): called exactly once with success (error.code None) or failure.
  std::function<void(const OpError&)> onSettled;

  // Progress bookkeeping for deadlines (ms since steady epoch of the transport clock).
  std::atomic<int64_t> lastProgressMs{0};
  int timeoutMs = 0;

  // Completion is counted in one place for every algorithm: an op completes when its outstanding work reaches
  // zero. Work is expected before it can finish: the transport adds one unit per queued frame (finished once
  // written) and holds one unit while start() runs; algorithms expect their receives (and any other work) in
  // prepare() and finish each one when it is done. Holding the count above zero until start() has queued its
  // sends is what keeps a peer from completing (and moving on to the next op of the same tag) before it sent
  // what the other peers wait for.
  void expectWork(uint64_t n) { pendingWork_.fetch_add(n); }
  // Completes the op (through Transport::complete) when this was the last outstanding unit.
  void finishWork(Transport& t, uint64_t n = 1);

  // Returns true the first time (the caller then settles).
  bool markDone() { return !done_.exchange(true); }
  bool isDone() const { return done_.load(); }
  // Transfers in progress that read or write op memory; failure waits for them to drain (releaseTransfer wakes it).
  std::atomic<int> activeTransfers{0};
  void releaseTransfer() {
    if (activeTransfers.fetch_sub(1) == 1 && isDone()) {
      std::lock_guard<std::mutex> lock(drainMu_);
      drained_.notify_all();
    }
  }
  // Waits until no transfer touches op memory (the op is done, so none starts). Service thread.
  void waitDrained() {
    std::unique_lock<std::mutex> lock(drainMu_);
    while (activeTransfers.load() > 0) drained_.wait_for(lock, std::chrono::milliseconds(100));
  }
  std::atomic<uint64_t> bytesSent{0};
  std::atomic<uint64_t> bytesReceived{0};
  // Group facts of the op's epoch, copied at submit so an op never reads a group that configure() replaced.
  int worldSize = 1;
  int myIndex = 0;
  std::vector<std::string> peerIds;

 private:
  std::atomic<bool> done_{false};
  std::atomic<uint64_t> pendingWork_{0};
  std::mutex drainMu_;
  std::condition_variable drained_;
};

class Transport {
 public:
  explicit Transport(const TransportOptions& options);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Caller's thread, once. Throws std::runtime_error when the listener or a thread cannot start.
  void start();
  uint16_t port() const { return listener_.port(); }
  const TransportOptions& options() const { return options_; }

  // Installs a group (see lib/binding.ts). Fails in-flight ops of older epochs with PeerLost. Caller's thread;
  // takes mu_, then each old link's mu.
  void configure(uint64_t epoch, int myIndex, std::vector<PeerInfo> peers, std::array<uint8_t, 16> ticket);

  // Group facts for algorithms (stable for an op's epoch).
  int myIndex() const { return myIndex_; }
  int worldSize() const { return static_cast<int>(peers_.size()); }
  uint64_t epoch() const { return epoch_; }

  // Registers and starts an op; its key.seq is assigned here. On failure to start, settles it with the error.
  // Caller's thread; takes mu_ (then nothing else) to register, no lock while start() runs.
  void submit(std::shared_ptr<Operation> op, int timeoutMs);
  // Queues a frame to peer `to` (dialling the link if needed). False if that link is dead. Any thread (ops' start()
  // on the caller's, follow-ups on I/O threads); takes mu_ briefly, then the link's mu, then maybe a txMu.
  bool send(int to, SendItem item, const std::shared_ptr<Operation>& op);
  // Queues many frames to one peer under one lock and one wake-up.
  bool sendMany(int to, std::vector<SendItem> items, const std::shared_ptr<Operation>& op);
  // Fails an op (any thread; no lock held on entry). Tells the other peers with an Abort frame when `propagate`.
  void fail(const std::shared_ptr<Operation>& op, OpError error, bool propagate);
  // Completes an op successfully (any thread, no lock held) once its last transfer is done.
  void complete(const std::shared_ptr<Operation>& op);
  // Aborts the in-flight op with this tag (from the user; JS thread). Takes mu_.
  void abortTag(uint64_t tag, const std::string& message);
  // Rejects everything with Closed, says goodbye, closes sockets, joins threads. Idempotent. Any thread but the
  // transport's own; no lock held on entry.
  void close();

  static int64_t nowMs();
  // Runs a task on the transport's service thread (never on the caller's thread). Any thread; takes mu_.
  void post(std::function<void()> task);
  // Any thread; takes mu_ briefly.
  TransportStats stats() const;

  struct Link;
  struct Connection;
  struct IoThread;
  struct Handshake;

 private:
  struct OpQueue {
    std::shared_ptr<Operation> op;
    std::deque<SendItem> items;
  };
  struct EarlyFrame {
    int from;
    FrameHeader header;
    std::shared_ptr<uint8_t[]> payload;
  };

  // Connection set-up (handshake.cpp). All on the handshake thread unless said otherwise.
  void handshakeLoop();
  // Accepts what is pending (up to a batch), evicting past maxHandshakes the oldest unauthenticated connection
  // still reading its hello (else the oldest of any state);
  // backs off when out of descriptors. No lock.
  void acceptSome(std::list<std::unique_ptr<Handshake>>& hs, size_t& incoming, int64_t& pausedUntil);
  // One step of a connection's hello: I/O when its socket is ready, timers, judging (takes mu_ briefly through
  // groupView and admit). False when the handshake is over (admitted, refused, given up).
  // `waiting`: incoming connections waiting for a newer epoch (capped at half of maxHandshakes), kept up to date.
  bool stepIncoming(Handshake& h, const GroupView& g, int64_t now, size_t& waiting);
  bool stepDial(Handshake& h, const GroupView& g, int64_t now, bool closing);
  void dialFailed(Handshake& h, const std::string& why, int64_t now);
  void giveUp(Handshake& h, const std::string& err, ErrorCode code);
  GroupView groupView() const;  // takes mu_
  // Queues the dialling of connection `c` of a link for the handshake thread. Any thread; caller holds mu_ (takes
  // dialMu_).
  void queueDial(const std::shared_ptr<Link>& link, int c, bool redial);
  // Caller holds mu_: the link to `peer`, created (and its K connections queued for dialling) if needed.
  std::shared_ptr<Link> linkTo(int peer, std::string& error);
  // For a timeout's message: the links of the current epoch still dialling a peer that does not answer. Caller
  // holds mu_ (takes each link's mu).
  std::string dialingNote();
  // Registers an established connection (and its link's, if outgoing) and hands it to an I/O thread. Handshake
  // thread; takes mu_, then the link's mu.
  void admit(const std::shared_ptr<Connection>& conn);
  // One line on stderr, for what an operator should know (a refused flood, an exhausted descriptor table).
  void log(const std::string& line) const;

  // The I/O loop (io_loop.cpp).
  // Hands an admitted connection to an I/O thread (handshake thread; takes that IoThread's mu).
  void adopt(std::shared_ptr<Connection> conn);
  // The body of an I/O thread. No lock held between its steps.
  void ioLoop(IoThread& io);
  // Any thread, no lock needed: wakes the I/O threads that are polling.
  void wakeIo();
  // The connection's I/O thread, no lock held (takes mu_ briefly for an op lookup or an early frame).
  bool pumpRead(const std::shared_ptr<Connection>& conn, std::string& why);
  // Writes the frames a connection holds and at most `takes` more batches; the caller (its I/O thread, or a
  // thread writing inline through writeNow) holds c.txMu; takes controlMu and the link's mu inside.
  bool pumpWrite(Connection& c, int takes, bool* wrote = nullptr);
  // Writes a first batch of a link's queue from the calling thread when one of its connections is idle; true
  // when everything queued went out (no I/O thread needs waking). Any thread, no lock held on entry.
  bool writeNow(const std::shared_ptr<Link>& link);
  // Caller holds c.txMu; takes controlMu, then the link's mu.
  bool takeFrames(Connection& c);
  // Sets up the reading of a frame's payload; false (and why) when the frame breaks the connection (rejectEarly:
  // it passed the early budget). The connection's I/O thread; takes mu_ unless the op is cached.
  bool onFrameHeader(Connection& c, std::string& why, bool& rejectEarly);
  // The connection's I/O thread; takes mu_ for an early frame.
  void onFrameComplete(Connection& c);
  // The connection's I/O thread, when it drops the connection; takes mu_, then c.txMu.
  void releaseTransfers(Connection& c);
  // The connection's I/O thread; takes c.txMu.
  void detachFailed(Connection& c);
  // Any thread; takes c.controlMu.
  void enqueueControl(const std::shared_ptr<Connection>& c, const FrameHeader& h, std::string payload, bool thenShutdown);

  // Frames and failure (transport.cpp).
  // The service thread's body: tasks, awaited re-dials and progress deadlines every 20 ms; holds mu_ between them.
  void serviceLoop();
  // A control frame arrived (the connection's I/O thread, no lock held; takes mu_ briefly).
  void handleControl(const std::shared_ptr<Connection>& conn, const FrameHeader& h, const std::string& payload);
  // A connection ended (I/O thread, or any thread whose write failed; no lock held). Breaks the epoch, unless it
  // can be dialled again without losing anything (see TransportOptions::redialQuietMs).
  void onConnectionLost(const std::shared_ptr<Connection>& conn, const std::string& why, bool mayRedial = true);
  // Whether a lost connection can be replaced without breaking the epoch (see redialQuietMs). Caller holds mu_.
  bool redialable(const Connection& conn) const;
  // Any thread, no lock held: fails every op of the epoch once (takes mu_, then calls fail()).
  void breakEpoch(uint64_t epoch, int lostPeer, const std::string& why, bool propagate, ErrorCode code = ErrorCode::PeerLost);
  // Any thread, no lock held; takes mu_, then links' mu, then connections' controlMu.
  void broadcastControl(const FrameHeader& h, const std::string& message, int exceptPeer);
  // The service thread, no lock held: waits for the op's transfers to drain, restores, settles.
  void finishFailure(std::shared_ptr<Operation> op, OpError error);
  // Caller holds mu_.
  std::shared_ptr<Operation> findOp(const OpKey& key);
  // The service thread, no lock held.
  void replayEarly(const std::shared_ptr<Operation>& op, std::vector<EarlyFrame> frames);
  // Any thread; takes segments_->mu.
  std::shared_ptr<uint8_t[]> earlyBuffer(size_t bytes);
  // What an early frame of `length` payload bytes costs (earlyBuffer allocates a whole segment for a small one).
  size_t earlyCharge(uint32_t length) const {
    return length == 0 || length > options_.maxSegmentBytes ? std::max<size_t>(length, 1) : options_.maxSegmentBytes;
  }
  // "rank3 (127.0.0.1:4000)" for log lines; takes mu_.
  std::string peerName(int peer) const;
  // Goodbye frames: sent on every connection by close() (its thread), handled by handleControl() (an I/O
  // thread). Each takes mu_ briefly; none is called with a lock held.
  void sayGoodbye();
  FrameHeader goodbyeHeader() const;
  std::string goodbyeBody();
  void onGoodbye(const std::shared_ptr<Connection>& conn, const FrameHeader& h, const std::string& payload);
  // PeerLost when an op of this key cannot run because a member left the group (code None if it can). Caller
  // holds mu_.
  OpError departedBlocking(const Operation& op) const;

  TransportOptions options_;
  net::Listener listener_;
  std::atomic<bool> closing_{false};
  std::thread handshakeThread_;
  std::unique_ptr<net::Waker> handshakeWaker_;
  std::thread serviceThread_;
  std::vector<std::unique_ptr<IoThread>> io_;
  std::atomic<unsigned> nextIo_{0};
  std::atomic<uint64_t> workGen_{0};  // bumped whenever there is something new to write
  struct SegmentPool;
  std::shared_ptr<SegmentPool> segments_;  // buffers for early frames, reused instead of allocated per frame

  mutable std::mutex mu_;  // guards everything below
  uint64_t epoch_ = 0;
  int myIndex_ = 0;
  std::vector<PeerInfo> peers_;
  std::array<uint8_t, 16> ticket_{};
  std::string brokenReason_;  // non-empty once a member of the current epoch is lost
  std::string brokenPeer_;
  ErrorCode brokenCode_ = ErrorCode::PeerLost;
  std::map<int, std::shared_ptr<Link>> links_;                   // outgoing links of the current epoch
  std::vector<std::shared_ptr<Connection>> connections_;          // every live connection (both directions)
  std::map<OpKey, std::shared_ptr<Operation>> ops_;               // in flight
  std::map<uint64_t, uint32_t> nextSeq_;                          // per tag
  std::map<OpKey, std::vector<EarlyFrame>> early_;                // frames for ops not yet submitted here
  Budget earlyBudget_{0, 0};                                      // what early_ and earlyAborts_ hold
  std::map<OpKey, std::pair<int, OpError>> earlyAborts_;          // from which peer, and the error
  // Members of the current epoch that closed their engine: how many ops per tag each ran (abrupt: unknown).
  struct Departure {
    bool abrupt = false;
    std::map<uint64_t, uint32_t> ran;
  };
  std::map<int, Departure> departed_;
  // Incoming connections lost while idle (onConnectionLost): their peer must dial them again by the deadline.
  struct AwaitedRedial {
    int peer;
    int index;
    int64_t deadlineMs;
    std::string why;
  };
  std::vector<AwaitedRedial> awaitedRedials_;
  bool abandonedOps_ = false;  // close() failed operations in flight: its goodbye says so
  // Counters (stats()).
  mutable std::atomic<uint64_t> statHandshakesPending_{0}, statRefused_{0}, statEvicted_{0}, statExhausted_{0}, statEarlyRefused_{0},
      statRedials_{0}, statInternalErrors_{0};
  std::mutex dialMu_;  // guards dials_
  std::vector<std::unique_ptr<Handshake>> dials_;  // queued by queueDial, taken by the handshake thread
  std::condition_variable serviceCv_;
  std::condition_variable connectionsCv_;  // with mu_: a connection ended while closing (close()'s linger)
  std::deque<std::function<void()>> tasks_;
};

}  // namespace tccl
