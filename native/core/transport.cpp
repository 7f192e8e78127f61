#include "transport.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace tccl {

namespace {

constexpr uint32_t kHelloMagic = 0x4C434354;  // "TCCL"
constexpr uint32_t kReplyMagic = 0x4B4F4354;  // "TCOK"
constexpr uint16_t kProtocolVersion = 2;
constexpr size_t kHelloSize = 64;
constexpr size_t kMaxControlMessage = 4096;
// Frames for operations this peer has not started yet are kept in memory up to this many bytes in total.
constexpr size_t kMaxEarlyBytes = size_t(2) << 30;
// A failed operation waits this long for transfers touching its memory to finish, then breaks their connections.
constexpr int64_t kDrainTimeoutMs = 1000;
// close() waits at most this long for the peers to read what it sent last and close their side.
constexpr int64_t kLingerMs = 1000;
// A goodbye lists (tag, ops run) pairs of 12 bytes; a peer that used more tags says an abrupt goodbye instead.
constexpr size_t kMaxGoodbyeTags = kMaxControlMessage / 12;

enum HelloStatus : uint32_t { kOk = 0, kBadVersion = 1, kBadTicket = 2, kStaleEpoch = 3, kBadIndex = 4, kClosing = 5 };

const char* helloStatusText(uint32_t s) {
  switch (s) {
    case kBadVersion: return "protocol version mismatch";
    case kBadTicket: return "connection ticket refused (not a member of this run)";
    case kStaleEpoch: return "group epoch mismatch (the group was re-formed)";
    case kBadIndex: return "peer index out of range";
    case kClosing: return "peer is closing";
    default: return "refused";
  }
}

template <typename T>
void put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));  // little-endian hosts only (documented in docs/protocol.md)
}
template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Payload of a frame that arrived before its operation was submitted here.
class MemoryPayload : public PayloadReader {
 public:
  explicit MemoryPayload(const std::vector<uint8_t>& bytes) : bytes_(bytes) {}
  bool read(void* dst, size_t len) override {
    if (pos_ + len > bytes_.size()) return false;
    if (len) std::memcpy(dst, bytes_.data() + pos_, len);
    pos_ += len;
    return true;
  }
  bool discard(size_t len) override {
    if (pos_ + len > bytes_.size()) return false;
    pos_ += len;
    return true;
  }

 private:
  const std::vector<uint8_t>& bytes_;
  size_t pos_ = 0;
};

}  // namespace

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

bool Connection::discard(size_t len) {
  uint8_t scratch[16384];
  while (len > 0) {
    size_t n = std::min(len, sizeof(scratch));
    if (!sock.recvAll(scratch, n)) return false;
    len -= n;
  }
  return true;
}

bool Connection::writeFrame(const FrameHeader& h, const void* payload, int waitMs) {
  uint8_t head[FrameHeader::kWireSize];
  h.encode(head);
  std::unique_lock<std::mutex> lock(writeMutex, std::defer_lock);
  if (waitMs < 0) {
    lock.lock();
  } else {
    int64_t until = Transport::nowMs() + waitMs;
    while (!lock.try_lock()) {
      if (Transport::nowMs() > until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  if (dead.load()) return false;
  return sock.sendAll2(head, sizeof(head), payload, h.length);
}

struct Transport::Link {
  int peer = -1;
  uint64_t epoch = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::list<OpQueue> queues;  // one per operation with queued items; served round-robin
  std::vector<std::shared_ptr<Connection>> conns;
  bool dead = false;
  // While a dial is being retried: since when, and why the last attempt failed (guarded by mu).
  int64_t dialingSinceMs = 0;
  std::string lastDialError;
};

void Operation::finishWork(Transport& t, uint64_t n) {
  if (pendingWork_.fetch_sub(n) == n) t.complete(shared_from_this());
}

int64_t Transport::nowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

Transport::Transport(const TransportOptions& options) : options_(options) {
  if (options_.connections < 1) options_.connections = 1;
  if (options_.maxSegmentBytes < 4096) options_.maxSegmentBytes = 4096;
}

Transport::~Transport() { close(); }

void Transport::spawn(std::function<void()> body) {
  {
    std::lock_guard<std::mutex> lock(threadsMu_);
    ++activeThreads_;
  }
  std::thread([this, body = std::move(body)] {
    body();
    std::lock_guard<std::mutex> lock(threadsMu_);
    --activeThreads_;
    threadsCv_.notify_all();
  }).detach();
}

void Transport::start() {
  net::initSockets();
  std::string error;
  if (!listener_.listen(options_.host, options_.port, error)) throw std::runtime_error(error);
  acceptThread_ = std::thread([this] { acceptLoop(); });
  serviceThread_ = std::thread([this] { serviceLoop(); });
}

void Transport::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  serviceCv_.notify_all();
}

void Transport::acceptLoop() {
  while (!closing_.load()) {
    net::Socket s = listener_.accept(200);
    if (!s.valid()) continue;
    auto conn = std::make_shared<Connection>();
    conn->sock = std::move(s);
    {
      std::lock_guard<std::mutex> lock(mu_);
      handshaking_.push_back(conn);
    }
    spawn([this, conn] { handleIncoming(conn); });
  }
}

void Transport::handleIncoming(std::shared_ptr<Connection> conn) {
  auto forget = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    handshaking_.erase(std::remove(handshaking_.begin(), handshaking_.end(), conn), handshaking_.end());
  };
  uint8_t hello[kHelloSize];
  // A stranger that connects and says nothing, or says something else, is dropped without disturbing anything.
  if (!conn->sock.waitReadable(options_.connectTimeoutMs) || !conn->sock.recvAll(hello, sizeof(hello)) ||
      get<uint32_t>(hello) != kHelloMagic) {
    conn->sock.close();
    forget();
    return;
  }
  uint16_t version = get<uint16_t>(hello + 4);
  uint64_t epoch = get<uint64_t>(hello + 8);
  uint32_t from = get<uint32_t>(hello + 16);
  uint32_t to = get<uint32_t>(hello + 20);
  std::array<uint8_t, 16> ticket;
  std::memcpy(ticket.data(), hello + 28, 16);

  uint32_t status = kOk;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (version != kProtocolVersion) {
      status = kBadVersion;
    } else {
      // The dialler may have learned of a new epoch a moment before we did: wait for our configure().
      configured_.wait_for(lock, std::chrono::milliseconds(2 * options_.connectTimeoutMs),
                           [&] { return closing_.load() || epoch_ >= epoch; });
      if (closing_.load()) status = kClosing;
      else if (epoch != epoch_) status = kStaleEpoch;
      else if (from >= peers_.size() || to != static_cast<uint32_t>(myIndex_) || from == to) status = kBadIndex;
      else {
        uint8_t diff = 0;  // constant-time compare
        for (size_t i = 0; i < 16; ++i) diff |= static_cast<uint8_t>(ticket[i] ^ ticket_[i]);
        if (diff) status = kBadTicket;
      }
    }
    if (status == kOk) {
      conn->peer = static_cast<int>(from);
      conn->epoch = epoch;
      conn->outgoing = false;
      connections_.push_back(conn);
    }
  }
  uint8_t reply[8];
  put<uint32_t>(reply, kReplyMagic);
  put<uint32_t>(reply + 4, status);
  bool sent = conn->sock.sendAll(reply, sizeof(reply));
  forget();
  if (status != kOk || !sent) {
    conn->sock.close();
    if (status == kOk) onConnectionLost(conn, "connection closed during handshake");
    return;
  }
  conn->sock.applyOptions({options_.socketBufferBytes, true, true});
  readerLoop(conn);
}

std::shared_ptr<Transport::Link> Transport::linkTo(int peer, std::string& error) {
  // Caller holds mu_.
  if (peer < 0 || peer >= static_cast<int>(peers_.size()) || peer == myIndex_) {
    error = "no such peer index " + std::to_string(peer);
    return nullptr;
  }
  auto it = links_.find(peer);
  if (it != links_.end()) return it->second;
  auto link = std::make_shared<Link>();
  link->peer = peer;
  link->epoch = epoch_;
  links_[peer] = link;
  PeerInfo target = peers_[static_cast<size_t>(peer)];
  uint64_t epoch = epoch_;
  int me = myIndex_;
  auto ticket = ticket_;
  int k = options_.connections;
  for (int c = 0; c < k; ++c) {
    spawn([this, link, target, epoch, me, ticket, k, c] {
      std::string err;
      ErrorCode failCode = ErrorCode::PeerLost;
      net::Socket s = dial(link, target, epoch, me, ticket, k, c, err, failCode);
      auto conn = std::make_shared<Connection>();
      conn->peer = link->peer;
      conn->epoch = epoch;
      conn->outgoing = true;
      if (!s.valid()) {
        {
          std::lock_guard<std::mutex> lock(link->mu);
          link->dead = true;
        }
        link->cv.notify_all();
        conn->dead = true;
        std::lock_guard<std::mutex> lock(mu_);
        if (epoch_ == epoch && !closing_.load()) {
          // Not holding mu_ in breakEpoch's callbacks: post it.
          tasks_.push_back([this, epoch, peer = link->peer, err, failCode] { breakEpoch(epoch, peer, err, failCode != ErrorCode::Auth, failCode); });
          serviceCv_.notify_all();
        }
        return;
      }
      conn->sock = std::move(s);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (epoch_ != epoch || closing_.load()) return;  // group changed while dialling
        connections_.push_back(conn);
      }
      {
        std::lock_guard<std::mutex> lock(link->mu);
        link->conns.push_back(conn);
      }
      spawn([this, conn] { readerLoop(conn); });
      writerLoop(conn, link);
    });
  }
  return link;
}

net::Socket Transport::dial(const std::shared_ptr<Link>& link, const PeerInfo& target, uint64_t epoch, int me,
                           const std::array<uint8_t, 16>& ticket, int k, int c, std::string& err, ErrorCode& failCode) {
  const std::string where = target.id + " at " + target.host + ":" + std::to_string(target.port);
  const int64_t started = nowMs();
  int64_t backoffMs = 10;
  for (;;) {
    std::string why;
    net::Socket s = net::Socket::connectTo(target.host, target.port, options_.connectTimeoutMs, why);
    if (s.valid()) {
      {
        std::lock_guard<std::mutex> lock(link->mu);
        link->dialingSinceMs = 0;
      }
      s.applyOptions({options_.socketBufferBytes, true, true});
      uint8_t hello[kHelloSize] = {0};
      put<uint32_t>(hello, kHelloMagic);
      put<uint16_t>(hello + 4, kProtocolVersion);
      hello[6] = 1;
      put<uint64_t>(hello + 8, epoch);
      put<uint32_t>(hello + 16, static_cast<uint32_t>(me));
      put<uint32_t>(hello + 20, static_cast<uint32_t>(link->peer));
      put<uint16_t>(hello + 24, static_cast<uint16_t>(c));
      put<uint16_t>(hello + 26, static_cast<uint16_t>(k));
      std::memcpy(hello + 28, ticket.data(), 16);
      uint8_t reply[8];
      if (!s.sendAll(hello, sizeof(hello)) || !s.waitReadable(3 * options_.connectTimeoutMs) || !s.recvAll(reply, sizeof(reply)) ||
          get<uint32_t>(reply) != kReplyMagic) {
        err = "handshake with " + where + " failed";
        s.close();
      } else if (get<uint32_t>(reply + 4) != kOk) {
        if (get<uint32_t>(reply + 4) == kBadTicket) failCode = ErrorCode::Auth;
        err = target.id + " refused the connection: " + helloStatusText(get<uint32_t>(reply + 4));
        s.close();
      }
      return s;
    }
    // Not listening yet, or not answering: try again until the retry window is spent.
    int64_t elapsed = nowMs() - started;
    {
      std::lock_guard<std::mutex> lock(link->mu);
      if (link->dialingSinceMs == 0) link->dialingSinceMs = started;
      link->lastDialError = why;
    }
    if (elapsed + backoffMs > options_.connectRetryMs) {
      err = "cannot connect to " + where + ": " + why + " (tried for " + std::to_string(elapsed) +
            " ms; is that peer's process running and its port reachable from here?)";
      return net::Socket();
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (configured_.wait_for(lock, std::chrono::milliseconds(backoffMs), [&] { return closing_.load() || epoch_ != epoch; })) {
      err = closing_.load() ? "the transport is closing" : "the group was re-formed while dialling " + where;
      return net::Socket();
    }
    backoffMs = std::min<int64_t>(backoffMs * 2, 500);
  }
}

std::string Transport::dialingNote() {
  // Caller holds mu_.
  std::string note;
  int64_t now = nowMs();
  for (auto& [peer, link] : links_) {
    std::lock_guard<std::mutex> lock(link->mu);
    if (link->dialingSinceMs == 0 || !link->conns.empty()) continue;
    const PeerInfo& p = peers_[static_cast<size_t>(peer)];
    note += "; still connecting to " + p.id + " at " + p.host + ":" + std::to_string(p.port) + " (" + link->lastDialError + ", retrying for " +
            std::to_string(now - link->dialingSinceMs) + " ms)";
  }
  return note;
}

void Transport::configure(uint64_t epoch, int myIndex, std::vector<PeerInfo> peers, std::array<uint8_t, 16> ticket) {
  std::vector<std::shared_ptr<Operation>> stale;
  std::vector<std::shared_ptr<Connection>> oldConns;
  std::vector<std::shared_ptr<Link>> oldLinks;
  std::string lostPeer;
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
    nextSeq_.clear();
    early_.clear();
    earlyBytes_ = 0;
    earlyAborts_.clear();
    // Dial the ring's right neighbour now, so the first operation does not pay for the connection set-up.
    if (peers_.size() > 1) {
      std::string err;
      linkTo((myIndex_ + 1) % static_cast<int>(peers_.size()), err);
    }
  }
  configured_.notify_all();
  for (auto& link : oldLinks) {
    {
      std::lock_guard<std::mutex> lock(link->mu);
      link->dead = true;
    }
    link->cv.notify_all();
  }
  for (auto& c : oldConns) {
    c->dead = true;
    c->sock.shutdownBoth();
  }
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
      OpError gone = departedBlocking(op->key);
      if (!brokenReason_.empty()) {
        early = {brokenCode_, brokenReason_, brokenPeer_};
      } else if (gone) {
        early = gone;
      } else if (ops_.count(op->key)) {
        early = {ErrorCode::InvalidArgument, "an operation with tag " + std::to_string(op->key.tag) + " is already in flight", ""};
      } else {
        auto ab = earlyAborts_.find(op->key);
        if (ab != earlyAborts_.end()) {
          early = ab->second;
          earlyAborts_.erase(ab);
        } else {
          op->expectWork(1);  // held until start() returns (released below)
          op->prepare();
          ops_[op->key] = op;
          auto ef = early_.find(op->key);
          if (ef != early_.end()) {
            replay.swap(ef->second);
            early_.erase(ef);
            for (auto& f : replay) earlyBytes_ -= f.payload.size();
          }
        }
      }
    }
  }
  if (early) {
    if (op->markDone() && op->onSettled) op->onSettled(early);
    return;
  }
  op->start(*this);
  op->finishWork(*this);
  if (!replay.empty()) {
    // Replays run on the service thread, like finishFailure, so they never overlap a failing op's restore and
    // need no activeTransfers count (counting would make finishFailure wait for a task queued behind it).
    post([this, op, frames = std::make_shared<std::vector<EarlyFrame>>(std::move(replay))] {
      for (auto& f : *frames) {
        if (op->isDone()) break;
        op->bytesReceived += FrameHeader::kWireSize + f.payload.size();
        MemoryPayload in(f.payload);
        op->onData(*this, f.from, f.header, in);
      }
    });
  }
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
    if (link->dead) return false;
    auto it = std::find_if(link->queues.begin(), link->queues.end(), [&](const OpQueue& q) { return q.op == op; });
    if (it == link->queues.end()) {
      link->queues.push_back(OpQueue{op, {}});
      it = std::prev(link->queues.end());
    }
    op->expectWork(items.size());  // before any writer can take them
    for (auto& item : items) {
      item.header.tag = op->key.tag;
      item.header.seq = op->key.seq;
      it->items.push_back(std::move(item));
    }
  }
  // One wake-up per queued frame, at most one per writer: waking every writer for a few frames only makes them
  // fight over the queue lock.
  size_t wake = std::min(items.size(), static_cast<size_t>(options_.connections));
  for (size_t i = 0; i < wake; ++i) link->cv.notify_one();
  return true;
}

void Transport::writerLoop(std::shared_ptr<Connection> conn, std::shared_ptr<Link> link) {
  uint8_t head[FrameHeader::kWireSize];
  for (;;) {
    SendItem item;
    std::shared_ptr<Operation> op;
    {
      std::unique_lock<std::mutex> lock(link->mu);
      link->cv.wait(lock, [&] { return link->dead || conn->dead.load() || !link->queues.empty(); });
      if (link->dead || conn->dead.load()) return;
      // Round-robin: take one item from the operation at the front, then move that operation to the back.
      auto front = link->queues.begin();
      item = std::move(front->items.front());
      front->items.pop_front();
      op = front->op;
      if (front->items.empty()) link->queues.erase(front);
      else link->queues.splice(link->queues.end(), link->queues, front);
      op->activeTransfers++;
    }
    item.header.encode(head);
    bool ok;
    {
      std::lock_guard<std::mutex> lock(conn->writeMutex);
      conn->busyWith = op.get();
      ok = !conn->dead.load() && conn->sock.sendAll2(head, sizeof(head), item.payload, item.header.length);
      conn->busyWith = nullptr;
    }
    if (!ok) {
      op->activeTransfers--;
      onConnectionLost(conn, "send failed: " + net::lastSocketError());
      return;
    }
    op->bytesSent += FrameHeader::kWireSize + item.header.length;
    op->lastProgressMs = nowMs();
    op->onSent(*this, item);
    op->finishWork(*this);
    op->activeTransfers--;
  }
}

void Transport::readerLoop(std::shared_ptr<Connection> conn) {
  uint8_t head[FrameHeader::kWireSize];
  for (;;) {
    if (!conn->sock.recvAll(head, sizeof(head))) {
      onConnectionLost(conn, "connection closed by peer");
      return;
    }
    FrameHeader h;
    if (!h.decode(head)) {
      onConnectionLost(conn, "garbage on the data connection (bad frame header)");
      return;
    }
    if (!dispatch(conn, h)) {
      onConnectionLost(conn, "connection failed while reading a frame");
      return;
    }
  }
}

bool Transport::dispatch(const std::shared_ptr<Connection>& conn, const FrameHeader& h) {
  OpKey key{h.tag, h.seq};
  if (h.type == FrameType::Goodbye) return onGoodbye(conn, h);
  if (h.type == FrameType::Abort || h.type == FrameType::Broken) {
    if (h.length > kMaxControlMessage) return false;
    std::string message(h.length, '\0');
    if (h.length && !conn->read(message.data(), h.length)) return false;
    std::string origin;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (conn->epoch != epoch_) return true;
      origin = peers_[static_cast<size_t>(conn->peer)].id;
    }
    if (h.type == FrameType::Broken) {
      breakEpoch(conn->epoch, static_cast<int>(h.offset), message, true);
      return true;
    }
    ErrorCode code = static_cast<ErrorCode>(h.aux);
    if (h.aux == 0 || h.aux > static_cast<uint32_t>(ErrorCode::InvalidArgument)) code = ErrorCode::Aborted;
    OpError err{code, message, ""};
    std::shared_ptr<Operation> op;
    {
      std::lock_guard<std::mutex> lock(mu_);
      op = findOp(key);
      if (!op) {
        // Not started here yet: remember, so that starting it fails at once; tell the others once.
        if (earlyAborts_.count(key) || earlyAborts_.size() > 4096) return true;
        earlyAborts_[key] = err;
      }
    }
    if (op) fail(op, err, true);
    else {
      FrameHeader fwd = h;
      broadcastControl(fwd, message, conn->peer);
    }
    return true;
  }

  std::shared_ptr<Operation> op;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->epoch != epoch_) return conn->discard(h.length);
    op = findOp(key);
    if (op) {
      op->activeTransfers++;
    } else {
      // Before this peer started the op (the sender is ahead), or after it failed here.
      bool knownFailed = earlyAborts_.count(key) > 0;
      uint32_t nextSeq = nextSeq_.count(h.tag) ? nextSeq_[h.tag] : 0;
      if (knownFailed || h.seq < nextSeq) return conn->discard(h.length);
      if (earlyBytes_ + h.length > kMaxEarlyBytes) return false;
      earlyBytes_ += h.length;
    }
  }
  if (!op) {
    EarlyFrame f{conn->peer, h, std::vector<uint8_t>(h.length)};
    if (h.length && !conn->read(f.payload.data(), h.length)) return false;
    std::lock_guard<std::mutex> lock(mu_);
    auto late = findOp(key);
    if (late) {
      // Submitted while we were reading: hand it over through the service thread.
      earlyBytes_ -= h.length;
      tasks_.push_back([this, late, f = std::move(f)] {
        MemoryPayload in(f.payload);
        late->bytesReceived += FrameHeader::kWireSize + f.payload.size();
        if (!late->isDone()) late->onData(*this, f.from, f.header, in);
      });
      serviceCv_.notify_all();
    } else {
      early_[key].push_back(std::move(f));
    }
    return true;
  }
  conn->busyWith = op.get();
  // Counted before onData, which may complete the op and report the total.
  op->bytesReceived += FrameHeader::kWireSize + h.length;
  bool ok;
  if (op->isDone()) ok = conn->discard(h.length);
  else ok = op->onData(*this, conn->peer, h, *conn);
  conn->busyWith = nullptr;
  if (ok) op->lastProgressMs = nowMs();
  op->activeTransfers--;
  return ok;
}

void Transport::onConnectionLost(const std::shared_ptr<Connection>& conn, const std::string& why) {
  bool wasDead = conn->dead.exchange(true);
  conn->sock.shutdownBoth();
  if (wasDead || closing_.load() || conn->saidGoodbye.load()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->epoch != epoch_ || conn->peer < 0) return;
  }
  breakEpoch(conn->epoch, conn->peer, why, true);
}

void Transport::breakEpoch(uint64_t epoch, int lostPeer, const std::string& why, bool propagate, ErrorCode code) {
  std::vector<std::shared_ptr<Operation>> victims;
  std::string peerId;
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (epoch != epoch_ || !brokenReason_.empty() || closing_.load()) return;
    peerId = lostPeer >= 0 && lostPeer < static_cast<int>(peers_.size()) ? peers_[static_cast<size_t>(lostPeer)].id : "?";
    reason = code == ErrorCode::Auth ? why : "lost peer " + peerId + ": " + why;
    brokenReason_ = reason;
    brokenCode_ = code;
    brokenPeer_ = peerId;
    for (auto& [key, op] : ops_) victims.push_back(op);
  }
  if (propagate) {
    FrameHeader h;
    h.type = FrameType::Broken;
    h.offset = static_cast<uint64_t>(lostPeer);
    h.aux = static_cast<uint32_t>(ErrorCode::PeerLost);
    broadcastControl(h, why, lostPeer);
  }
  for (auto& op : victims) fail(op, {code, reason, peerId}, false);
}

OpError Transport::departedBlocking(const OpKey& key) const {
  for (auto& [peer, d] : departed_) {
    auto ran = d.ran.find(key.tag);
    if (!d.abrupt && ran != d.ran.end() && key.seq < ran->second) continue;  // it ran this op: its data is sent
    const std::string& id = peers_[static_cast<size_t>(peer)].id;
    return {ErrorCode::PeerLost,
            "lost peer " + id + ": it closed its engine (left the group) " +
                (d.abrupt ? "while operations were in flight" : "before it ran this operation (tag " + std::to_string(key.tag) + ")"),
            id};
  }
  return {};
}

void Transport::sayGoodbye(bool abrupt) {
  std::vector<std::shared_ptr<Connection>> conns;
  std::vector<uint8_t> body;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : connections_)
      if (!c->dead.load() && c->epoch == epoch_) conns.push_back(c);
    if (nextSeq_.size() > kMaxGoodbyeTags) abrupt = true;
    if (!abrupt) {
      body.resize(nextSeq_.size() * 12);
      size_t at = 0;
      for (auto& [tag, ran] : nextSeq_) {
        put<uint64_t>(body.data() + at, tag);
        put<uint32_t>(body.data() + at + 8, ran);
        at += 12;
      }
    }
  }
  FrameHeader h;
  h.type = FrameType::Goodbye;
  h.aux = abrupt ? 1 : 0;
  h.length = static_cast<uint32_t>(body.size());
  // On every connection, so that each of the peer's readers sees it before that connection's end of stream.
  for (auto& c : conns)
    if (c->sock.waitWritable(200)) c->writeFrame(h, body.data(), 200);
}

bool Transport::onGoodbye(const std::shared_ptr<Connection>& conn, const FrameHeader& h) {
  if (h.length > kMaxControlMessage || h.length % 12 != 0) return false;
  std::vector<uint8_t> body(h.length);
  if (h.length && !conn->read(body.data(), h.length)) return false;
  std::vector<std::shared_ptr<Operation>> victims;
  std::shared_ptr<Link> link;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->epoch != epoch_ || closing_.load()) return true;
    conn->saidGoodbye = true;
    if (!departed_.count(conn->peer)) {
      Departure& d = departed_[conn->peer];
      d.abrupt = h.aux != 0;
      for (size_t at = 0; at < body.size(); at += 12) d.ran[get<uint64_t>(body.data() + at)] = get<uint32_t>(body.data() + at + 8);
      for (auto& [key, op] : ops_)
        if (departedBlocking(key)) victims.push_back(op);
      auto it = links_.find(conn->peer);
      if (it != links_.end()) link = it->second;
    }
  }
  // Our end of stream answers theirs, so their close() need not wait out its linger.
  conn->sock.shutdownWrite();
  if (link) {
    // Nothing more can be sent to it: an op that tries fails at once instead of waiting for a writer.
    {
      std::lock_guard<std::mutex> lock(link->mu);
      link->dead = true;
    }
    link->cv.notify_all();
  }
  for (auto& op : victims) {
    OpError why;
    {
      std::lock_guard<std::mutex> lock(mu_);
      why = departedBlocking(op->key);
    }
    if (why) fail(op, why, true);
  }
  return true;
}

void Transport::broadcastControl(const FrameHeader& h, const std::string& message, int exceptPeer) {
  // One connection per peer is enough; prefer one we dialled (it has no reader on our side to confuse).
  std::map<int, std::shared_ptr<Connection>> targets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : connections_) {
      if (c->dead.load() || c->peer == exceptPeer || c->epoch != epoch_) continue;
      auto it = targets.find(c->peer);
      if (it == targets.end() || (!it->second->outgoing && c->outgoing)) targets[c->peer] = c;
    }
  }
  FrameHeader f = h;
  std::string msg = message.substr(0, kMaxControlMessage);
  f.length = static_cast<uint32_t>(msg.size());
  for (auto& [peer, c] : targets) {
    // Never wait long on a peer that may be frozen: a control frame is best effort.
    if (c->sock.waitWritable(200)) c->writeFrame(f, msg.data());
  }
}

void Transport::fail(const std::shared_ptr<Operation>& op, OpError error, bool propagate) {
  if (!op->markDone()) return;
  std::vector<std::shared_ptr<Link>> links;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ops_.find(op->key);
    if (it != ops_.end() && it->second == op) ops_.erase(it);
    for (auto& [peer, link] : links_) links.push_back(link);
    if (op->epoch == epoch_) earlyAborts_[op->key] = error;  // late frames of this op are dropped
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
    broadcastControl(h, error.message, -1);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_.push_back(op);
    tasks_.push_back([this, op, error] { finishFailure(op, error); });
  }
  serviceCv_.notify_all();
}

void Transport::finishFailure(std::shared_ptr<Operation> op, OpError error) {
  // Runs on the service thread: wait until no thread reads or writes op memory, breaking stuck transfers.
  int64_t deadline = nowMs() + kDrainTimeoutMs;
  while (op->activeTransfers.load() > 0) {
    if (nowMs() > deadline) {
      std::vector<std::shared_ptr<Connection>> stuck;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& c : connections_)
          if (c->busyWith.load() == op.get()) stuck.push_back(c);
      }
      for (auto& c : stuck) c->sock.shutdownBoth();
      deadline = nowMs() + kDrainTimeoutMs;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  op->onFailed(error);
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_.erase(std::remove(draining_.begin(), draining_.end(), op), draining_.end());
  }
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
      task();
      lock.lock();
    }
    // Progress deadlines.
    int64_t now = nowMs();
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
  }
}

void Transport::close() {
  if (closing_.exchange(true)) {
    if (acceptThread_.joinable()) acceptThread_.join();
    if (serviceThread_.joinable()) serviceThread_.join();
    return;
  }
  std::vector<std::shared_ptr<Operation>> pending;
  std::vector<std::shared_ptr<Connection>> conns;
  std::vector<std::shared_ptr<Link>> links;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [key, op] : ops_) pending.push_back(op);
    conns = connections_;
    for (auto& c : handshaking_) conns.push_back(c);
    for (auto& [peer, link] : links_) links.push_back(link);
  }
  configured_.notify_all();
  for (auto& op : pending) fail(op, {ErrorCode::Closed, "the engine was closed while the operation was running", ""}, false);
  // Tell the members which operations we ran, so that they finish those with what we already sent instead of
  // taking our end of stream for a crash.
  sayGoodbye(!pending.empty());
  for (auto& link : links) {
    {
      std::lock_guard<std::mutex> lock(link->mu);
      link->dead = true;
    }
    link->cv.notify_all();
  }
  // A lingering close: end of stream after everything we sent, then wait (bounded) for the members to read it
  // and answer with theirs; closing with unread data would reset the connections and drop what is still queued.
  for (auto& c : conns) c->sock.shutdownWrite();
  serviceCv_.notify_all();
  if (acceptThread_.joinable()) acceptThread_.join();
  if (serviceThread_.joinable()) serviceThread_.join();
  listener_.close();
  {
    std::unique_lock<std::mutex> lock(threadsMu_);
    threadsCv_.wait_for(lock, std::chrono::milliseconds(kLingerMs), [&] { return activeThreads_ == 0; });
  }
  for (auto& c : conns) {
    c->dead = true;
    c->sock.shutdownBoth();
  }
  {
    // Connections dialled or accepted after the snapshot above see closing_ and end by themselves.
    std::unique_lock<std::mutex> lock(threadsMu_);
    while (activeThreads_ > 0) {
      threadsCv_.wait_for(lock, std::chrono::milliseconds(50));
      std::vector<std::shared_ptr<Connection>> more;
      {
        std::lock_guard<std::mutex> l2(mu_);
        more = connections_;
        for (auto& c : handshaking_) more.push_back(c);
        for (auto& [peer, link] : links_) {
          std::lock_guard<std::mutex> l3(link->mu);
          link->dead = true;
          link->cv.notify_all();
        }
      }
      for (auto& c : more) {
        c->dead = true;
        c->sock.shutdownBoth();
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  connections_.clear();
  links_.clear();
}

}  // namespace tccl
