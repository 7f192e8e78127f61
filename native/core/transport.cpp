// The transport's group and operation bookkeeping: configure, submit, queueing sends, early frames, control
// frames, an operation's failure and its clean-up, deadlines, close. Connection set-up lives in handshake.cpp, the
// I/O threads in io_loop.cpp, and what happens when a peer or connection is lost (and goodbyes) in peer_loss.cpp.
#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "transport_internal.h"

namespace tccl {

namespace {

// The pool of early-frame buffers keeps at most this many spare segments (64 MiB of 256 KiB segments): enough for
// a peer that runs a whole 128 MiB ring all-reduce ahead of this one.
constexpr size_t kMaxPooledSegments = 256;

}  // namespace

// Spare segment-sized buffers for frames that arrive before their operation: reused, so a peer that runs ahead
// does not cost this one an allocation, page faults and a release per frame.
struct Transport::SegmentPool {
  size_t bytes = 0;
  std::mutex mu;
  std::vector<std::unique_ptr<uint8_t[]>> spare;
};

const char* errorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::None: return "OK";
    case ErrorCode::PeerLost: return "PEER_LOST";
    case ErrorCode::Timeout: return "TIMEOUT";
    case ErrorCode::Aborted: return "ABORTED";
    case ErrorCode::Mismatch: return "MISMATCH";
    case ErrorCode::Protocol: return "PROTOCOL";
    case ErrorCode::Auth: return "AUTH";
    case ErrorCode::Closed: return "CLOSED";
    case ErrorCode::InvalidArgument: return "INVALID_ARGUMENT";
  }
  return "INTERNAL";
}

void FrameHeader::encode(uint8_t* out) const {
  put<uint32_t>(out + 0, kMagic);
  out[4] = static_cast<uint8_t>(type);
  out[5] = dtype;
  out[6] = op;
  out[7] = phase;
  put<uint16_t>(out + 8, step);
  put<uint16_t>(out + 10, codec);
  put<uint32_t>(out + 12, seq);
  put<uint64_t>(out + 16, tag);
  put<uint64_t>(out + 24, count);
  put<uint64_t>(out + 32, offset);
  put<uint32_t>(out + 40, length);
  put<uint32_t>(out + 44, aux);
}

bool FrameHeader::decode(const uint8_t* in) {
  if (get<uint32_t>(in) != kMagic) return false;
  uint8_t t = in[4];
  if (t < 1 || t > 4) return false;
  type = static_cast<FrameType>(t);
  dtype = in[5];
  op = in[6];
  phase = in[7];
  step = get<uint16_t>(in + 8);
  codec = get<uint16_t>(in + 10);
  seq = get<uint32_t>(in + 12);
  tag = get<uint64_t>(in + 16);
  count = get<uint64_t>(in + 24);
  offset = get<uint64_t>(in + 32);
  length = get<uint32_t>(in + 40);
  aux = get<uint32_t>(in + 44);
  return true;
}

void Operation::finishWork(Transport& t, uint64_t n) {
  if (pendingWork_.fetch_sub(n) == n) t.complete(shared_from_this());
}

int64_t Transport::nowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

Transport::Transport(const TransportOptions& options) : options_(options), segments_(std::make_shared<SegmentPool>()) {
  if (options_.connections < 1) options_.connections = 1;
  if (options_.maxSegmentBytes < 4096) options_.maxSegmentBytes = 4096;
  if (options_.ioThreads <= 0) {
    unsigned hw = std::thread::hardware_concurrency();
    options_.ioThreads = static_cast<int>(std::clamp<unsigned>(std::min<unsigned>(hw == 0 ? 2 : hw, options_.connections), 1, 2));
  }
  segments_->bytes = options_.maxSegmentBytes;
  if (options_.maxHandshakes < 1) options_.maxHandshakes = 1;
  earlyBudget_ = Budget(options_.maxEarlyBytesPerPeer, options_.maxEarlyBytes);
}

Transport::~Transport() { close(); }

void Transport::start() {
  net::initSockets();
  std::string error;
  if (!listener_.listen(options_.host, options_.port, error)) throw std::runtime_error(error);
  for (int i = 0; i < options_.ioThreads; ++i) {
    io_.push_back(std::make_unique<IoThread>());
    if (io_.back()->waker.fd() == static_cast<net::NativeSocket>(-1)) throw std::runtime_error("cannot create the I/O thread's wake-up channel");
  }
  handshakeWaker_ = std::make_unique<net::Waker>();
  if (handshakeWaker_->fd() == static_cast<net::NativeSocket>(-1)) throw std::runtime_error("cannot create the handshake thread's wake-up channel");
  // A thread that cannot be created throws std::system_error here, on the caller's thread (the addon turns it
  // into an error); no thread is ever created later.
  try {
    for (auto& io : io_) io->thread = std::thread([this, p = io.get()] { ioLoop(*p); });
    handshakeThread_ = std::thread([this] { handshakeLoop(); });
    serviceThread_ = std::thread([this] { serviceLoop(); });
  } catch (const std::exception& e) {
    close();
    throw std::runtime_error(std::string("cannot start the transport's threads: ") + e.what());
  }
}

TransportStats Transport::stats() const {
  TransportStats s;
  s.handshakesPending = statHandshakesPending_.load();
  s.handshakesRefused = statRefused_.load();
  s.handshakesEvicted = statEvicted_.load();
  s.acceptExhausted = statExhausted_.load();
  s.earlyRefused = statEarlyRefused_.load();
  s.redials = statRedials_.load();
  s.internalErrors = statInternalErrors_.load();
  std::lock_guard<std::mutex> lock(mu_);
  s.earlyBytes = earlyBudget_.used();
  return s;
}

void Transport::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  serviceCv_.notify_all();
}

std::shared_ptr<uint8_t[]> Transport::earlyBuffer(size_t bytes) {
  auto pool = segments_;
  if (bytes == 0 || bytes > pool->bytes) return std::shared_ptr<uint8_t[]>(new uint8_t[bytes ? bytes : 1]);
  std::unique_ptr<uint8_t[]> buf;
  {
    std::lock_guard<std::mutex> lock(pool->mu);
    if (!pool->spare.empty()) {
      buf = std::move(pool->spare.back());
      pool->spare.pop_back();
    }
  }
  if (!buf) buf.reset(new uint8_t[pool->bytes]);
  return std::shared_ptr<uint8_t[]>(buf.release(), [pool](uint8_t* p) {
    std::lock_guard<std::mutex> lock(pool->mu);
    if (pool->spare.size() < kMaxPooledSegments) pool->spare.emplace_back(p);
    else delete[] p;
  });
}

void Transport::configure(uint64_t epoch, int myIndex, std::vector<PeerInfo> peers, std::array<uint8_t, 16> ticket) {
  std::vector<std::shared_ptr<Operation>> stale;
  std::vector<std::shared_ptr<Connection>> oldConns;
  std::vector<std::shared_ptr<Link>> oldLinks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (epoch <= epoch_ && !peers_.empty()) throw std::invalid_argument("epoch must increase with every configure()");
    for (auto& [key, op] : ops_) stale.push_back(op);
    oldConns.swap(connections_);
    for (auto& [peer, link] : links_) oldLinks.push_back(link);
    links_.clear();
    epoch_ = epoch;
    myIndex_ = myIndex;
    peers_ = std::move(peers);
    ticket_ = ticket;
    brokenReason_.clear();
    brokenPeer_.clear();
    departed_.clear();
    awaitedRedials_.clear();
    nextSeq_.clear();
    early_.clear();
    earlyBudget_.reset();
    earlyAborts_.clear();
    // Dial the ring's right neighbour now, so the first operation does not pay for the connection set-up.
    if (peers_.size() > 1) {
      std::string err;
      linkTo((myIndex_ + 1) % static_cast<int>(peers_.size()), err);
    }
  }
  if (handshakeWaker_) handshakeWaker_->wake();  // hellos waiting for this epoch are judged now
  for (auto& link : oldLinks) {
    std::lock_guard<std::mutex> lock(link->mu);
    link->dead = true;
  }
  for (auto& c : oldConns) {
    c->dead = true;
    c->sock.shutdownBoth();
  }
  wakeIo();
  for (auto& op : stale) {
    fail(op, {ErrorCode::PeerLost, "the group was re-formed (epoch " + std::to_string(epoch) + ") while the operation was running", ""}, false);
  }
}

void Transport::submit(std::shared_ptr<Operation> op, int timeoutMs) {
  OpError early;
  std::vector<EarlyFrame> replay;
  {
    std::lock_guard<std::mutex> lock(mu_);
    op->epoch = epoch_;
    op->timeoutMs = timeoutMs;
    op->lastProgressMs = nowMs();
    op->worldSize = static_cast<int>(peers_.size());
    op->myIndex = myIndex_;
    op->peerIds.clear();
    for (auto& p : peers_) op->peerIds.push_back(p.id);
    if (closing_.load()) {
      early = {ErrorCode::Closed, "the engine is closed", ""};
    } else if (peers_.empty()) {
      early = {ErrorCode::InvalidArgument, "no group is configured: call configure() first", ""};
    } else {
      uint32_t& seq = nextSeq_[op->key.tag];
      op->key.seq = seq++;
      // Frames the other peers sent for this op before it started here: replayed, or dropped if it cannot run.
      auto ef = early_.find(op->key);
      if (ef != early_.end()) {
        replay.swap(ef->second);
        early_.erase(ef);
        for (auto& f : replay) earlyBudget_.release(f.from, earlyCharge(f.header.length));
      }
      OpError gone = departedBlocking(*op);
      auto ab = earlyAborts_.find(op->key);
      if (!brokenReason_.empty()) {
        early = {brokenCode_, brokenReason_, brokenPeer_};
      } else if (gone) {
        early = gone;
      } else if (ab != earlyAborts_.end()) {
        early = ab->second.second;
      } else {
        op->expectWork(1);  // held until start() returns (released below)
        op->prepare();
        ops_[op->key] = op;
      }
      if (ab != earlyAborts_.end()) {
        earlyBudget_.release(ab->second.first, ab->second.second.message.size());
        earlyAborts_.erase(ab);
      }
    }
  }
  if (early) {
    replay.clear();
    if (op->markDone() && op->onSettled) op->onSettled(early);
    return;
  }
  op->start(*this);
  op->finishWork(*this);
  if (!replay.empty()) {
    post([this, op, frames = std::make_shared<std::vector<EarlyFrame>>(std::move(replay))] { replayEarly(op, std::move(*frames)); });
  }
}

void Transport::replayEarly(const std::shared_ptr<Operation>& op, std::vector<EarlyFrame> frames) {
  // Runs on the service thread, like finishFailure, so a replay never overlaps a failing op's restore and needs no
  // activeTransfers count (counting would make finishFailure wait for a task queued behind it). The frame's own
  // buffer serves as the scratch space, so a payload the op reduces from scratch is not copied again.
  for (auto& f : frames) {
    if (op->isDone()) break;
    op->bytesReceived += FrameHeader::kWireSize + f.header.length;
    uint8_t* dst = nullptr;
    if (!op->onHeader(*this, f.from, f.header, f.payload.get(), dst) || op->isDone()) continue;
    if (f.header.length && dst != f.payload.get()) std::memcpy(dst, f.payload.get(), f.header.length);
    op->onPayload(*this, f.from, f.header, dst);
  }
}

std::string Transport::peerName(int peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (peer < 0 || peer >= static_cast<int>(peers_.size())) return "peer #" + std::to_string(peer);
  const PeerInfo& p = peers_[static_cast<size_t>(peer)];
  return p.id + " (" + p.host + ":" + std::to_string(p.port) + ")";
}

std::shared_ptr<Operation> Transport::findOp(const OpKey& key) {
  auto it = ops_.find(key);
  return it == ops_.end() ? nullptr : it->second;
}

bool Transport::send(int to, SendItem item, const std::shared_ptr<Operation>& op) {
  std::vector<SendItem> one;
  one.push_back(std::move(item));
  return sendMany(to, std::move(one), op);
}

bool Transport::sendMany(int to, std::vector<SendItem> items, const std::shared_ptr<Operation>& op) {
  std::shared_ptr<Link> link;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (op->epoch != epoch_ || op->isDone()) return false;
    std::string err;
    link = linkTo(to, err);
    if (!link) return false;
  }
  {
    std::lock_guard<std::mutex> lock(link->mu);
    // fail() marks the op done before it empties the links' queues of it: checked here, under the link's lock, a
    // failed op can never leave frames behind in a queue.
    if (link->dead || op->isDone()) return false;
    auto it = std::find_if(link->queues.begin(), link->queues.end(), [&](const OpQueue& q) { return q.op == op; });
    if (it == link->queues.end()) {
      link->queues.push_back(OpQueue{op, {}});
      it = std::prev(link->queues.end());
    }
    op->expectWork(items.size());  // before any connection can take them
    for (auto& item : items) {
      item.header.tag = op->key.tag;
      item.header.seq = op->key.seq;
      it->items.push_back(std::move(item));
    }
  }
  if (!writeNow(link)) wakeIo();
  return true;
}

void Transport::handleControl(const std::shared_ptr<Connection>& conn, const FrameHeader& h, const std::string& message) {
  if (h.type == FrameType::Goodbye) {
    onGoodbye(conn, h, message);
    return;
  }
  OpKey key{h.tag, h.seq};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->epoch != epoch_) return;
  }
  if (h.type == FrameType::Broken) {
    breakEpoch(conn->epoch, static_cast<int>(h.offset), message, true);
    return;
  }
  ErrorCode code = static_cast<ErrorCode>(h.aux);
  if (h.aux == 0 || h.aux > static_cast<uint32_t>(ErrorCode::InvalidArgument)) code = ErrorCode::Aborted;
  OpError err{code, message, ""};
  std::shared_ptr<Operation> op;
  bool overBudget = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (h.offset > 0 && h.offset <= peers_.size()) err.peer = peers_[h.offset - 1].id;
    op = findOp(key);
    if (!op) {
      auto next = nextSeq_.find(key.tag);
      if (next != nextSeq_.end() && key.seq < next->second) return;  // finished or failed here already
      // Not started here yet: remember, so that starting it fails at once; tell the others once. What is
      // remembered is charged to the sender's early budget: a flood of aborts for operations that never start
      // closes the connection that brought it instead of growing without bound.
      if (earlyAborts_.count(key)) return;
      if (!earlyBudget_.charge(conn->peer, err.message.size())) {
        overBudget = true;
      } else {
        earlyAborts_[key] = {conn->peer, err};
      }
    }
  }
  if (overBudget) {
    statEarlyRefused_++;
    log("closing a connection from " + peerName(conn->peer) + ": it sent aborts for more operations not started here than the early budget holds");
    onConnectionLost(conn, "too many aborts for operations not started here (early budget of " + std::to_string(earlyBudget_.perPeerCap()) + " bytes)", false);
    return;
  }
  if (op) fail(op, err, true);
  else broadcastControl(h, message, conn->peer);
}


void Transport::fail(const std::shared_ptr<Operation>& op, OpError error, bool propagate) {
  if (!op->markDone()) return;
  std::vector<std::shared_ptr<Link>> links;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ops_.find(op->key);
    if (it != ops_.end() && it->second == op) ops_.erase(it);
    for (auto& [peer, link] : links_) links.push_back(link);
  }
  for (auto& link : links) {
    std::lock_guard<std::mutex> lock(link->mu);
    link->queues.remove_if([&](const OpQueue& q) { return q.op == op; });
  }
  if (propagate) {
    FrameHeader h;
    h.type = FrameType::Abort;
    h.tag = op->key.tag;
    h.seq = op->key.seq;
    h.aux = static_cast<uint32_t>(error.code);
    {
      // offset: 1 + the index of the lost peer the error names (0: none), so the receivers name it too.
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < peers_.size() && !error.peer.empty(); ++i)
        if (peers_[i].id == error.peer) h.offset = i + 1;
    }
    broadcastControl(h, error.message, -1);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back([this, op, error] { finishFailure(op, error); });
  }
  serviceCv_.notify_all();
  wakeIo();  // an I/O thread reading a payload into this op's memory switches to discarding it
}

void Transport::finishFailure(std::shared_ptr<Operation> op, OpError error) {
  // Runs on the service thread: wait until no thread reads or writes op memory.
  // The I/O threads let go promptly (woken by fail()): a payload half read into op memory is discarded from there
  // on, a frame half written from it has its rest copied out, frames not started are dropped.
  op->waitDrained();
  op->onFailed(error);
  if (op->onSettled) op->onSettled(error);
}

void Transport::complete(const std::shared_ptr<Operation>& op) {
  if (!op->markDone()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ops_.find(op->key);
    if (it != ops_.end() && it->second == op) ops_.erase(it);
  }
  op->onSucceeded();
  if (op->onSettled) op->onSettled(OpError{});
}

void Transport::abortTag(uint64_t tag, const std::string& message) {
  std::vector<std::shared_ptr<Operation>> victims;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [key, op] : ops_)
      if (key.tag == tag) victims.push_back(op);
  }
  for (auto& op : victims) fail(op, {ErrorCode::Aborted, message, ""}, true);
}

void Transport::serviceLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!closing_.load() || !tasks_.empty()) {
    serviceCv_.wait_for(lock, std::chrono::milliseconds(20), [&] { return closing_.load() || !tasks_.empty(); });
    while (!tasks_.empty()) {
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      try {
        task();
      } catch (const std::exception& e) {
        statInternalErrors_++;
        logInternalError("the service thread", e.what());
      } catch (...) {
        statInternalErrors_++;
        logInternalError("the service thread", nullptr);
      }
      lock.lock();
    }
    try {
    // Incoming connections lost while idle that their peer has not dialled again in time: it is gone.
    int64_t now = nowMs();
    for (auto it = awaitedRedials_.begin(); it != awaitedRedials_.end();) {
      bool back = false;
      for (auto& c : connections_)
        back = back || (!c->outgoing && c->peer == it->peer && c->index == it->index && !c->dead.load());
      if (back || now < it->deadlineMs) {
        it = back ? awaitedRedials_.erase(it) : std::next(it);
        continue;
      }
      AwaitedRedial lost = *it;
      awaitedRedials_.erase(it);
      uint64_t epoch = epoch_;
      lock.unlock();
      breakEpoch(epoch, lost.peer, lost.why + " (and it did not connect again)", true);
      lock.lock();
      it = awaitedRedials_.begin();
    }
    // Progress deadlines.
    std::vector<std::shared_ptr<Operation>> expired;
    for (auto& [key, op] : ops_)
      if (op->timeoutMs > 0 && now - op->lastProgressMs.load() > op->timeoutMs) expired.push_back(op);
    if (!expired.empty()) {
      std::string dialing = dialingNote();
      lock.unlock();
      for (auto& op : expired) {
        fail(op, {ErrorCode::Timeout, "no progress for " + std::to_string(op->timeoutMs) + " ms (tag " + std::to_string(op->key.tag) +
                                          "): a peer may be frozen or the network stalled" + dialing, ""},
             true);
      }
      lock.lock();
    }
    } catch (const std::exception& e) {
      // Out of memory building a message, most likely: the deadlines are looked at again on the next pass.
      if (!lock.owns_lock()) lock.lock();
      statInternalErrors_++;
      logInternalError("the service thread (deadlines are looked at again on the next pass)", e.what());
    } catch (...) {
      if (!lock.owns_lock()) lock.lock();
      statInternalErrors_++;
      logInternalError("the service thread (deadlines are looked at again on the next pass)", nullptr);
    }
  }
}

void Transport::close() {
  if (closing_.exchange(true)) {
    if (handshakeThread_.joinable()) handshakeThread_.join();
    if (serviceThread_.joinable()) serviceThread_.join();
    for (auto& io : io_)
      if (io->thread.joinable()) io->thread.join();
    return;
  }
  std::vector<std::shared_ptr<Operation>> pending;
  std::vector<std::shared_ptr<Link>> links;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [key, op] : ops_) pending.push_back(op);
    for (auto& [peer, link] : links_) links.push_back(link);
    abandonedOps_ = !pending.empty();
  }
  if (handshakeWaker_) handshakeWaker_->wake();
  for (auto& op : pending) fail(op, {ErrorCode::Closed, "the engine was closed while the operation was running", ""}, false);
  // Tell the members which operations we ran, so that they finish those with what we already sent instead of
  // taking our end of stream for a crash; then a lingering close: wait (bounded) for them to read it and answer
  // with their end of stream, because closing with unread data would reset the connections.
  sayGoodbye();
  serviceCv_.notify_all();
  // The handshake thread finishes the hellos under way (bounded), admitting with a goodbye what completes.
  if (handshakeThread_.joinable()) handshakeThread_.join();
  for (auto& link : links) {
    std::lock_guard<std::mutex> lock(link->mu);
    link->dead = true;
  }
  if (serviceThread_.joinable()) serviceThread_.join();
  listener_.close();
  {
    // Woken by onConnectionLost as each connection ends.
    std::unique_lock<std::mutex> lock(mu_);
    connectionsCv_.wait_for(lock, std::chrono::milliseconds(kLingerMs), [&] {
      for (auto& c : connections_)
        if (!c->dead.load()) return false;
      return true;
    });
  }
  for (auto& io : io_) {
    io->stop = true;
    io->waker.wake();
  }
  for (auto& io : io_)
    if (io->thread.joinable()) io->thread.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& c : connections_) {
    c->dead = true;
    c->sock.shutdownBoth();
  }
  connections_.clear();
  links_.clear();
}

}  // namespace tccl
