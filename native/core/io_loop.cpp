// The I/O threads: each drives its share of the established connections with non-blocking sockets and one poll
// loop. Reading: headers and small payloads through a per-connection buffer, large payloads straight into the
// place the operation names (so a ring's all-gather data lands in the caller's buffer). Writing: the next frames of
// the link's queue, several small ones gathered into one system call, a large one at a time so that the K
// connections of a link take turns (one operation striped over all of them).
#include <algorithm>
#include <chrono>

#include "transport_internal.h"

namespace tccl {

using Rx = Transport::Connection::Rx;

namespace {

constexpr size_t kInBufferBytes = 64 << 10;
// A payload remainder at least this large is read straight into its destination instead of through the buffer.
constexpr size_t kDirectReadBytes = 16 << 10;
// Bytes read from one connection before the loop turns to the others (fairness), and frames gathered per write.
constexpr size_t kReadBudgetBytes = 4 << 20;
constexpr size_t kBatchBytes = 64 << 10;
constexpr size_t kBatchFrames = 32;
constexpr int kIdlePollMs = 50;

}  // namespace

void Transport::adopt(std::shared_ptr<Connection> conn) {
  conn->sock.setNonBlocking(true);
  conn->in.resize(kInBufferBytes);
  conn->scratch.reset(new uint8_t[std::max<uint32_t>(options_.maxSegmentBytes, 1)]);
  IoThread& io = *io_[nextIo_++ % io_.size()];
  {
    std::lock_guard<std::mutex> lock(io.mu);
    io.adopted.push_back(std::move(conn));
  }
  io.waker.wake();
}

void Transport::wakeIo() {
  workGen_.fetch_add(1);
  for (auto& io : io_)
    if (io->polling.load()) io->waker.wake();
}

void Transport::enqueueControl(const std::shared_ptr<Connection>& c, const FrameHeader& h, std::string payload, bool thenShutdown) {
  OutFrame f;
  FrameHeader head = h;
  head.length = static_cast<uint32_t>(payload.size());
  head.encode(f.head);
  f.control = std::move(payload);
  f.length = head.length;
  {
    std::lock_guard<std::mutex> lock(c->controlMu);
    c->control.push_back(std::move(f));
    c->control.back().payload = reinterpret_cast<const uint8_t*>(c->control.back().control.data());
    if (thenShutdown) c->shutdownAfterControl = true;
  }
  wakeIo();
}

// Moves the next frames to write into c.out: queued control frames first, then data frames of the link's queue
// (round-robin over its operations). Returns false when there is nothing to write.
bool Transport::takeFrames(Connection& c) {
  {
    std::lock_guard<std::mutex> lock(c.controlMu);
    while (!c.control.empty()) {
      c.out.push_back(std::move(c.control.front()));
      c.control.pop_front();
      OutFrame& f = c.out.back();
      f.payload = reinterpret_cast<const uint8_t*>(f.control.data());
    }
  }
  if (!c.out.empty() || !c.link) return !c.out.empty();
  Link& link = *c.link;
  std::lock_guard<std::mutex> lock(link.mu);
  if (link.dead) return false;
  size_t bytes = 0;
  while (!link.queues.empty() && c.out.size() < kBatchFrames && bytes < kBatchBytes) {
    auto front = link.queues.begin();
    SendItem item = std::move(front->items.front());
    front->items.pop_front();
    OutFrame f;
    f.op = front->op;
    if (front->items.empty()) link.queues.erase(front);
    else link.queues.splice(link.queues.end(), link.queues, front);
    f.op->activeTransfers++;
    if (f.op->isDone()) {  // failed after it queued this frame: it is not sent
      f.op->releaseTransfer();
      continue;
    }
    item.header.encode(f.head);
    f.payload = item.payload;
    f.length = item.header.length;
    f.keepAlive = std::move(item.keepAlive);
    bytes += FrameHeader::kWireSize + f.length;
    c.out.push_back(std::move(f));
  }
  return !c.out.empty();
}

// Writes the frames in hand and at most `takes` more batches from the queues, until the socket would block. False
// when the connection failed; *wrote says whether any byte went out.
bool Transport::pumpWrite(Connection& c, int takes, bool* wrote) {
  if (c.released || c.wantWrite.load() || c.writeShut) return true;
  for (;;) {
    if (c.out.empty() && takes-- <= 0) return true;
    if (c.out.empty() && !takeFrames(c)) {
      bool shut;
      {
        std::lock_guard<std::mutex> lock(c.controlMu);
        shut = c.shutdownAfterControl && c.control.empty();
      }
      if (shut) {
        c.sock.shutdownWrite();
        c.writeShut = true;
      }
      return true;
    }
    net::ConstBuffer bufs[2 * kBatchFrames];
    int nb = 0;
    size_t skip = c.outOffset;
    for (const OutFrame& f : c.out) {
      size_t headLen = FrameHeader::kWireSize;
      if (skip < headLen) bufs[nb++] = {f.head + skip, headLen - skip};
      size_t payloadSkip = skip > headLen ? skip - headLen : 0;
      if (f.length > payloadSkip) bufs[nb++] = {f.payload + payloadSkip, f.length - payloadSkip};
      skip = 0;
    }
    long n = c.sock.writeSome(bufs, nb);
    if (n < 0) return false;
    if (n == 0) {
      c.wantWrite = true;
      return true;
    }
    size_t written = static_cast<size_t>(n);
    if (wrote) *wrote = true;
    int64_t now = nowMs();
    while (written > 0) {
      OutFrame& f = c.out.front();
      size_t left = FrameHeader::kWireSize + f.length - c.outOffset;
      if (written < left) {
        c.outOffset += written;
        break;
      }
      written -= left;
      c.outOffset = 0;
      if (f.op) {
        c.lastDataMs = now;
        std::shared_ptr<Operation> op = std::move(f.op);
        op->bytesSent += FrameHeader::kWireSize + f.length;
        op->lastProgressMs = now;
        op->finishWork(*this);
        op->releaseTransfer();
      }
      c.out.pop_front();
    }
  }
}

bool Transport::onFrameHeader(Connection& c, std::string& why, bool& rejectEarly) {
  const FrameHeader& h = c.rxHeader;
  c.rxGot = 0;
  c.rxDst = nullptr;
  if (h.type != FrameType::Data) {
    c.rxControl.assign(h.length, '\0');
    c.rxDst = reinterpret_cast<uint8_t*>(c.rxControl.data());
    c.rx = Rx::Control;
    return true;
  }
  OpKey key{h.tag, h.seq};
  c.lastDataMs = nowMs();
  std::shared_ptr<Operation> op;
  if (c.cachedOp && c.cachedKey == key && !c.cachedOp->isDone()) {
    op = c.cachedOp;
    op->activeTransfers++;
  } else {
    c.cachedOp.reset();  // a finished op is not kept alive (with its buffers) by the cache
    std::lock_guard<std::mutex> lock(mu_);
    if (c.epoch != epoch_) {
      c.rx = Rx::Discard;
      return true;
    }
    op = findOp(key);
    if (op) {
      op->activeTransfers++;
      c.cachedKey = key;
      c.cachedOp = op;
    } else {
      // Before this peer started the op (the sender is ahead), or after it failed or finished here.
      uint32_t nextSeq = nextSeq_.count(h.tag) ? nextSeq_[h.tag] : 0;
      if (earlyAborts_.count(key) > 0 || h.seq < nextSeq) {
        c.rx = Rx::Discard;
        return true;
      }
      // Charged by what is allocated (a whole segment for a small frame, something for an empty one), per peer and
      // in total: a member that sends frames for operations that never start is cut off, not fed memory.
      if (!earlyBudget_.charge(c.peer, earlyCharge(h.length))) {
        statEarlyRefused_++;
        why = "more frames arrived for operations this peer has not started than its early budget holds (" +
              std::to_string(earlyBudget_.usedBy(c.peer)) + " bytes from this peer, " + std::to_string(earlyBudget_.used()) +
              " in total; caps " + std::to_string(earlyBudget_.perPeerCap()) + " and " + std::to_string(earlyBudget_.totalCap()) + ")";
        rejectEarly = true;
        return false;
      }
      c.rxEarly = earlyBuffer(h.length);
      c.rxDst = c.rxEarly.get();
      c.rx = Rx::Early;
      return true;
    }
  }
  uint8_t* dst = nullptr;
  if (!op->isDone() && op->onHeader(*this, c.peer, h, c.scratch.get(), dst) && !op->isDone()) {
    c.rxOp = std::move(op);
    c.rxDst = dst;
    c.rx = Rx::Data;
    return true;
  }
  op->releaseTransfer();
  c.rx = Rx::Discard;
  return true;
}

void Transport::onFrameComplete(Connection& c) {
  const FrameHeader& h = c.rxHeader;
  switch (c.rx) {
    case Rx::Data: {
      std::shared_ptr<Operation> op = std::move(c.rxOp);
      op->bytesReceived += FrameHeader::kWireSize + h.length;
      if (!op->isDone()) {
        op->onPayload(*this, c.peer, h, c.rxDst);
        op->lastProgressMs = nowMs();
      }
      op->releaseTransfer();
      break;
    }
    case Rx::Early: {
      EarlyFrame f{c.peer, h, std::move(c.rxEarly)};
      OpKey key{h.tag, h.seq};
      std::lock_guard<std::mutex> lock(mu_);
      if (c.epoch != epoch_) break;  // re-formed meanwhile: configure() already reset the count
      earlyBudget_.release(c.peer, earlyCharge(h.length));
      auto late = findOp(key);
      auto next = nextSeq_.find(h.tag);
      if (late) {
        // Submitted while the payload arrived: hand it over through the service thread, like a replay.
        std::vector<EarlyFrame> one;
        one.push_back(std::move(f));
        tasks_.push_back([this, late, frames = std::make_shared<std::vector<EarlyFrame>>(std::move(one))] { replayEarly(late, std::move(*frames)); });
        serviceCv_.notify_all();
      } else if (next == nextSeq_.end() || key.seq >= next->second) {
        earlyBudget_.charge(c.peer, earlyCharge(h.length));  // just released: fits again
        early_[key].push_back(std::move(f));
      }  // else: the op started and ended here meanwhile (it failed): nothing will replay the frame
      break;
    }
    default:
      break;
  }
  c.rx = Rx::Header;
}

bool Transport::writeNow(const std::shared_ptr<Link>& link) {
  std::vector<std::shared_ptr<Connection>> conns;
  size_t start = 0;
  {
    std::lock_guard<std::mutex> lock(link->mu);
    conns = link->conns;
    start = link->writeCursor++;
  }
  for (size_t i = 0; i < conns.size(); ++i) {
    auto& c = conns[(start + i) % conns.size()];
    if (c->dead.load() || c->wantWrite.load()) continue;
    std::unique_lock<std::mutex> tx(c->txMu, std::try_to_lock);
    if (!tx.owns_lock() || !c->out.empty()) continue;
    bool ok = pumpWrite(*c, 1);
    bool idle = c->out.empty();
    tx.unlock();
    if (!ok) onConnectionLost(c, "send failed: " + net::lastSocketError());
    std::lock_guard<std::mutex> lock(link->mu);
    return ok && idle && link->queues.empty();
  }
  return false;
}

// Releases what a connection holds of operations (a frame half read or half written) when it goes away.
void Transport::releaseTransfers(Connection& c) {
  if (c.rx == Rx::Data && c.rxOp) {
    c.rxOp->releaseTransfer();
    c.rxOp.reset();
  }
  if (c.rx == Rx::Early && c.rxEarly) {
    std::lock_guard<std::mutex> lock(mu_);
    if (c.epoch == epoch_) earlyBudget_.release(c.peer, earlyCharge(c.rxHeader.length));  // else configure() reset it
    c.rxEarly.reset();
  }
  c.rx = Rx::Header;
  c.cachedOp.reset();
  std::lock_guard<std::mutex> tx(c.txMu);
  for (OutFrame& f : c.out)
    if (f.op) f.op->releaseTransfer();
  c.out.clear();
  c.released = true;  // no thread takes frames for it again
}

// Lets go of the memory of failed ops: their frames not started are dropped, and the rest of a frame half written
// is copied out (a stream cannot skip the rest of a frame), so the failure need not wait for a slow peer.
void Transport::detachFailed(Connection& c) {
  std::lock_guard<std::mutex> tx(c.txMu);
  for (auto it = c.out.begin(); it != c.out.end();) {
    if (!it->op || !it->op->isDone()) {
      ++it;
      continue;
    }
    std::shared_ptr<Operation> op = std::move(it->op);
    if (it == c.out.begin() && c.outOffset > 0) {
      auto copy = std::shared_ptr<uint8_t[]>(new uint8_t[it->length ? it->length : 1]);
      if (it->length) std::memcpy(copy.get(), it->payload, it->length);
      it->payload = copy.get();
      it->keepAlive = std::move(copy);
      ++it;
    } else {
      it = c.out.erase(it);
    }
    op->releaseTransfer();
  }
}

// Reads what the socket has (up to a budget) and handles every frame completed on the way. False when the
// connection ended or failed; `why` says how.
bool Transport::pumpRead(const std::shared_ptr<Connection>& conn, std::string& why) {
  Connection& c = *conn;
  size_t budget = kReadBudgetBytes;
  auto ended = [&](long r) {
    if (r == -1) c.endOfStream = true;
    why = r == -1 ? (c.rx == Rx::Header && c.inEnd == c.inPos ? "connection closed by peer" : "connection closed in the middle of a frame")
                  : "read failed: " + net::lastSocketError();
    return false;
  };
  // The budget bounds what is read from the socket; frames already in the buffer are always handled, since nothing
  // would bring the loop back to them if the peer sends nothing more.
  for (;;) {
    if (c.rx == Rx::Header) {
      if (c.inEnd - c.inPos < FrameHeader::kWireSize) {
        if (budget == 0) return true;
        if (c.inPos > 0) {
          std::memmove(c.in.data(), c.in.data() + c.inPos, c.inEnd - c.inPos);
          c.inEnd -= c.inPos;
          c.inPos = 0;
        }
        long r = c.sock.readSome(c.in.data() + c.inEnd, c.in.size() - c.inEnd);
        if (r == 0) return true;
        if (r < 0) return ended(r);
        c.inEnd += static_cast<size_t>(r);
        budget -= std::min(budget, static_cast<size_t>(r));
        continue;
      }
      if (!c.rxHeader.decode(c.in.data() + c.inPos)) {
        why = "garbage on the data connection (bad frame header)";
        return false;
      }
      c.inPos += FrameHeader::kWireSize;
      size_t controlLimit = c.rxHeader.type == FrameType::Goodbye ? kMaxGoodbyeBytes : kMaxControlMessage;
      if (c.rxHeader.type != FrameType::Data && c.rxHeader.length > controlLimit) {
        why = "oversized control frame on the data connection";
        return false;
      }
      bool rejectEarly = false;
      if (!onFrameHeader(c, why, rejectEarly)) {
        if (rejectEarly) {
          log("closing a connection from " + peerName(c.peer) + ": " + why);
          onConnectionLost(conn, why, false);
          return true;
        }
        return false;
      }
    } else {
      size_t need = c.rxHeader.length - c.rxGot;
      // A payload going into operation memory stops there once the op has failed: the rest is discarded.
      if (c.rx == Rx::Data && c.rxOp->isDone()) {
        c.rxOp->releaseTransfer();
        c.rxOp.reset();
        c.rx = Rx::Discard;
      }
      uint8_t* dst = c.rx == Rx::Discard ? nullptr : c.rxDst + c.rxGot;
      size_t avail = c.inEnd - c.inPos;
      if (avail > 0 || need == 0) {
        size_t n = std::min(avail, need);
        if (dst && n) std::memcpy(dst, c.in.data() + c.inPos, n);
        c.inPos += n;
        c.rxGot += n;
      } else if (budget == 0) {
        return true;
      } else if (need >= kDirectReadBytes && dst) {
        long r = c.sock.readSome(dst, need);
        if (r == 0) return true;
        if (r < 0) return ended(r);
        c.rxGot += static_cast<size_t>(r);
        budget -= std::min(budget, static_cast<size_t>(r));
      } else {
        c.inPos = c.inEnd = 0;
        long r = c.sock.readSome(c.in.data(), c.in.size());
        if (r == 0) return true;
        if (r < 0) return ended(r);
        c.inEnd = static_cast<size_t>(r);
        budget -= std::min(budget, static_cast<size_t>(r));
        continue;
      }
      if (c.rxGot < c.rxHeader.length) continue;
      if (c.rx == Rx::Control) {
        c.rx = Rx::Header;
        handleControl(conn, c.rxHeader, c.rxControl);
        if (c.dead.load()) return true;
      } else {
        onFrameComplete(c);
      }
    }
  }
}

void Transport::ioLoop(IoThread& io) {
  std::vector<std::shared_ptr<Connection>> conns;
  std::vector<net::PollItem> items;
  size_t writeCursor = 0;
  // After an exception on this thread every connection goes (its group re-forms). Without memory even for the
  // reason, a connection is shut down as it is: its peer sees the reset, our operations fail at their deadline.
  auto closeAfterInternalError = [this](std::vector<std::shared_ptr<Connection>>& all, const char* what) noexcept {
    for (auto& c : all) {
      try {
        onConnectionLost(c, std::string("internal error on an I/O thread: ") + what, false);
      } catch (...) {
        c->dead = true;
        c->sock.shutdownBoth();
      }
    }
  };
  while (!io.stop.load()) {
    try {
    uint64_t seen = workGen_.load();
    {
      std::lock_guard<std::mutex> lock(io.mu);
      for (auto& c : io.adopted) conns.push_back(std::move(c));
      io.adopted.clear();
    }
    // Write what is queued, one batch per connection per round: a link's frames are spread over all of its
    // connections instead of filling the first one (whose kernel buffers take megabytes before it would block,
    // while a long fat pipe caps each connection's rate); the rounds end when no connection can take more.
    // Each round starts one connection further on: frames that become ready one at a time (a ring forwards
    // segments as they arrive) would otherwise all go to the first connections of the list, and a link whose
    // connections are each capped (a window-limited WAN path) would run at the rate of a few of them.
    for (bool progress = true; progress;) {
      progress = false;
      for (size_t j = 0; j < conns.size(); ++j) {
        auto& c = conns[(writeCursor + j) % conns.size()];
        if (c->dead.load()) continue;
        bool ok;
        {
          std::lock_guard<std::mutex> tx(c->txMu);
          ok = pumpWrite(*c, 1, &progress);
        }
        if (!ok) onConnectionLost(c, "send failed: " + net::lastSocketError());
      }
      writeCursor++;
    }
    for (size_t i = 0; i < conns.size();) {
      auto& c = conns[i];
      if (c->dead.load()) {
        releaseTransfers(*c);
        c->sock.shutdownBoth();
        conns[i] = std::move(conns.back());
        conns.pop_back();
      } else {
        // A payload half read into the memory of an op that failed meanwhile is discarded from here on, so the
        // failing op's clean-up need not wait for the rest of it; its frames being written let go of it too.
        if (c->rx == Rx::Data && c->rxOp && c->rxOp->isDone()) {
          c->rxOp->releaseTransfer();
          c->rxOp.reset();
          c->rx = Rx::Discard;
        }
        if (c->cachedOp && c->cachedOp->isDone()) c->cachedOp.reset();
        detachFailed(*c);
        ++i;
      }
    }
    items.clear();
    items.push_back({io.waker.fd(), true, false});
    for (auto& c : conns) items.push_back({c->sock.native(), true, c->wantWrite});
    io.polling.store(true);
    int timeout = workGen_.load() != seen ? 0 : kIdlePollMs;
    net::pollSockets(items.data(), items.size(), timeout);
    io.polling.store(false);
    if (items[0].readable) io.waker.drain();
    for (size_t i = 0; i < conns.size(); ++i) {
      const net::PollItem& p = items[i + 1];
      auto& c = conns[i];
      if (p.writable || p.failed) c->wantWrite = false;
      if (!(p.readable || p.failed) || c->dead.load()) continue;
      std::string why;
      bool ok = false, internal = false;
      try {
        ok = pumpRead(c, why);
      } catch (const std::exception& e) {
        // Out of memory for a buffer, most likely: the connection goes (its group re-forms), the process stays.
        statInternalErrors_++;
        logInternalError("an I/O thread while reading", e.what());
        internal = true;
        try {
          why = std::string("internal error while reading: ") + e.what();
        } catch (...) {
          why.clear();  // no memory for the reason: the connection still goes
        }
      }
      if (!ok) onConnectionLost(c, why, !internal);
    }
    } catch (const std::exception& e) {
      statInternalErrors_++;
      logInternalError("an I/O thread (its connections are closed)", e.what());
      closeAfterInternalError(conns, e.what());
    } catch (...) {
      statInternalErrors_++;
      logInternalError("an I/O thread (its connections are closed)", nullptr);
      closeAfterInternalError(conns, "unknown exception");
    }
  }
  for (auto& c : conns) {
    releaseTransfers(*c);
    c->dead = true;
    c->sock.shutdownBoth();
  }
}

}  // namespace tccl
