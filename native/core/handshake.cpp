// Connection set-up: the listener, the hello exchanged on every new connection (protocol version, group epoch,
// indices, the group's ticket), and dialling the K connections of a link with retries, all driven by one handshake
// thread with non-blocking sockets and one poll loop. Refusing a stranger costs a descriptor for at most
// connectTimeoutMs and about 200 bytes, never a thread: connections that have not said a valid hello are capped
// (maxHandshakes, the oldest dropped first), each must complete its hello by a deadline, and running out of
// descriptors pauses accepting instead of spinning or ending the process. Established connections are handed to
// an I/O thread (io_loop.cpp).
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "transport_internal.h"

namespace tccl {

namespace {

// Every data connection's options: the defaults of SocketOptions with the transport's buffer size. Set by field,
// not by a brace list: the third field of the aggregate is the unsent low-water mark, and `{bytes, true, true}`
// once set it to 1 byte, so a connection took new frames only once its kernel buffer had fully drained.
net::SocketOptions dataSocketOptions(int bufferBytes) {
  net::SocketOptions o;
  o.bufferBytes = bufferBytes;
  return o;
}

// Connections accepted per pass of the loop, so that the hellos already accepted are read between batches.
constexpr int kAcceptBatch = 64;
// How long accepting pauses when the process or the system has no descriptor left and nothing can be evicted.
constexpr int64_t kExhaustedPauseMs = 100;
// At most one line per this interval for each kind of event an attacker can repeat.
constexpr int64_t kLogIntervalMs = 10000;

}  // namespace

void Transport::log(const std::string& line) const { std::fprintf(stderr, "tccl data plane: %s\n", line.c_str()); }

GroupView Transport::groupView() const {
  GroupView g;
  std::lock_guard<std::mutex> lock(mu_);
  g.epoch = epoch_;
  g.myIndex = myIndex_;
  g.worldSize = peers_.size();
  g.ticket = ticket_;
  g.closing = closing_.load();
  g.broken = !brokenReason_.empty();
  return g;
}

void Transport::handshakeLoop() {
  std::list<std::unique_ptr<Handshake>> hs;  // accepted ones in arrival order (the oldest is evicted first), and dials
  size_t incoming = 0;
  int64_t pausedUntil = 0;
  int64_t closingSince = 0;
  std::vector<net::PollItem> items;
  std::vector<Handshake*> polled;
  for (;;) {
    try {
      {
        std::lock_guard<std::mutex> lock(dialMu_);
        for (auto& d : dials_) hs.push_back(std::move(d));
        dials_.clear();
      }
      int64_t now = nowMs();
      bool closing = closing_.load();
      if (closing && closingSince == 0) closingSince = now;
      GroupView g = groupView();
      size_t waiting = 0;
      for (auto& h : hs) waiting += !h->outgoing() && h->in.waiting() ? 1 : 0;
      for (auto it = hs.begin(); it != hs.end();) {
        Handshake& h = **it;
        bool keep = h.outgoing() ? stepDial(h, g, now, closing) : stepIncoming(h, g, now, waiting);
        if (keep) {
          ++it;
          continue;
        }
        if (!h.outgoing()) --incoming;
        it = hs.erase(it);
      }
      statHandshakesPending_ = incoming;
      // Closing: the hellos under way finish (bounded by their deadlines and the linger), so that a peer that already
      // admitted our connection gets our goodbye on it instead of taking its end for a crash.
      if (closing && (hs.empty() || now - closingSince > kLingerMs)) break;

      items.clear();
      polled.clear();
      items.push_back({handshakeWaker_->fd(), true, false});
      bool listening = !closing && now >= pausedUntil && listener_.native() != static_cast<net::NativeSocket>(-1);
      if (listening) items.push_back({listener_.native(), true, false});
      int64_t wakeAt = now + 200;
      if (!listening && !closing) wakeAt = std::min(wakeAt, std::max(pausedUntil, now + 1));
      for (auto& h : hs) {
        wakeAt = std::min(wakeAt, h->wakeAtMs());
        if (!h->sock.valid()) continue;
        bool r = h->wantsRead(), w = h->wantsWrite();
        if (!r && !w) continue;
        items.push_back({h->sock.native(), r, w});
        polled.push_back(h.get());
      }
      net::pollSockets(items.data(), items.size(), static_cast<int>(std::clamp<int64_t>(wakeAt - now, 0, 200)));
      if (items[0].readable) handshakeWaker_->drain();
      size_t base = listening ? 2 : 1;
      for (size_t i = 0; i < polled.size(); ++i) {
        const net::PollItem& p = items[base + i];
        if (p.readable || p.writable || p.failed) polled[i]->ready = true;
      }
      if (listening && (items[1].readable || items[1].failed)) acceptSome(hs, incoming, pausedUntil);
    } catch (const std::exception& e) {
      // Out of memory while a flood arrives, most likely: drop what is being set up rather than end the process; the
      // links that were dialling are given up (their groups re-form).
      statInternalErrors_++;
      logInternalError("the handshake thread (connections being set up are dropped)", e.what());
      for (auto& h : hs) {
        if (!h->outgoing()) continue;
        try {
          giveUp(*h, std::string("internal error while connecting: ") + e.what(), ErrorCode::PeerLost);
        } catch (...) {
          // No memory to say why: the link stays unconnected and its operations fail at their progress deadline.
          h->sock.close();
        }
      }
      hs.clear();
      incoming = 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } catch (...) {
      statInternalErrors_++;
      logInternalError("the handshake thread (connections being set up are dropped)", nullptr);
      hs.clear();
      incoming = 0;
    }
  }
  for (auto& h : hs) h->sock.abort();
  statHandshakesPending_ = 0;
}

void Transport::acceptSome(std::list<std::unique_ptr<Handshake>>& hs, size_t& incoming, int64_t& pausedUntil) {
  static std::atomic<int64_t> lastLog{0};
  // The oldest that is still reading its hello first: a dialler that said a valid hello may be waiting for our
  // configure() of its epoch (normal at every re-form), and evicting it would break its link.
  auto evictOldest = [&] {
    auto victim = hs.end();
    for (auto it = hs.begin(); it != hs.end(); ++it) {
      if ((*it)->outgoing()) continue;
      if ((*it)->in.reading()) {
        victim = it;
        break;
      }
      if (victim == hs.end()) victim = it;
    }
    if (victim == hs.end()) return false;
    (*victim)->sock.abort();
    hs.erase(victim);
    --incoming;
    statEvicted_++;
    return true;
  };
  const size_t cap = static_cast<size_t>(std::max(1, options_.maxHandshakes));
  for (int n = 0; n < kAcceptBatch; ++n) {
    int err = 0;
    net::Socket s = listener_.acceptNow(err);
    if (!s.valid()) {
      if (err == 0) return;
      int64_t now = nowMs();
      if (net::isResourceExhaustion(err)) {
        statExhausted_++;
        // A descriptor of a stranger that has not said hello is worth less than the connection waiting behind it.
        if (evictOldest()) continue;
        pausedUntil = now + kExhaustedPauseMs;
      } else {
        pausedUntil = now + 10;
      }
      if (now - lastLog.load() > kLogIntervalMs) {
        lastLog = now;
        log("accept failed: " + net::errorText(err) + (net::isResourceExhaustion(err) ? " (out of descriptors: raise the limit, ulimit -n)" : "") +
            "; accepting again shortly");
      }
      return;
    }
    while (incoming >= cap && evictOldest()) {
    }
    auto h = std::make_unique<Handshake>();
    h->state = Handshake::State::Incoming;
    h->sock = std::move(s);
    h->in = IncomingHello(nowMs() + options_.connectTimeoutMs);
    h->ready = true;  // the hello often came with the connection
    hs.push_back(std::move(h));
    ++incoming;
  }
}

bool Transport::stepIncoming(Handshake& h, const GroupView& g, int64_t now, size_t& waiting) {
  IncomingHello& in = h.in;
  if (h.ready) {
    h.ready = false;
    if (in.wanted() > 0) {
      long r = h.sock.readSome(in.readPtr(), in.wanted());
      if (r > 0) in.received(static_cast<size_t>(r));
      else if (r < 0) in.fail();
    }
  }
  if (in.state() == IncomingHello::State::Judging) {
    bool was = in.waiting();
    size_t cap = static_cast<size_t>(std::max(1, options_.maxHandshakes / 2));
    in.judge(g, now, now + 2 * static_cast<int64_t>(options_.connectTimeoutMs), was || waiting < cap);
    if (in.waiting() != was) waiting = in.waiting() ? waiting + 1 : waiting - 1;
  }
  if (in.replyLeft() > 0) {
    net::ConstBuffer b{in.replyPtr(), in.replyLeft()};
    long n = h.sock.writeSome(&b, 1);
    if (n > 0) in.sent(static_cast<size_t>(n));
    else if (n < 0) in.fail();
  }
  switch (in.state()) {
    case IncomingHello::State::Admitted: {
      auto conn = std::make_shared<Connection>();
      conn->peer = static_cast<int>(in.hello().from);
      conn->epoch = in.hello().epoch;
      conn->index = in.hello().index;
      conn->outgoing = false;
      conn->sock = std::move(h.sock);
      conn->sock.applyOptions(dataSocketOptions(options_.socketBufferBytes));
      admit(conn);
      return false;
    }
    case IncomingHello::State::Refused:
      statRefused_++;
      // A reply that went out is read before our end of stream; anything else is reset (no TIME_WAIT here).
      if (in.replied()) h.sock.close();
      else h.sock.abort();
      return false;
    case IncomingHello::State::Judging:
      return true;  // waiting (bounded) for the configure() of a newer epoch
    default:
      if (in.expired(now)) {
        statRefused_++;
        h.sock.abort();
        return false;
      }
      return true;
  }
}

void Transport::queueDial(const std::shared_ptr<Link>& link, int c, bool redial) {
  auto h = std::make_unique<Handshake>();
  h->state = Handshake::State::Backoff;
  h->link = link;
  h->target = peers_[static_cast<size_t>(link->peer)];
  h->index = c;
  h->redial = redial;
  Hello hello;
  hello.epoch = epoch_;
  hello.from = static_cast<uint32_t>(myIndex_);
  hello.to = static_cast<uint32_t>(link->peer);
  hello.index = static_cast<uint16_t>(c);
  hello.count = static_cast<uint16_t>(options_.connections);
  hello.ticket = ticket_;
  encodeHello(hello, h->hello);
  h->dialStartMs = h->nextTryMs = nowMs();
  {
    std::lock_guard<std::mutex> lock(dialMu_);
    dials_.push_back(std::move(h));
  }
  if (handshakeWaker_) handshakeWaker_->wake();
}

bool Transport::stepDial(Handshake& h, const GroupView& g, int64_t now, bool closing) {
  using S = Handshake::State;
  const std::string where = h.target.id + " at " + h.target.host + ":" + std::to_string(h.target.port);
  bool stale;
  {
    std::lock_guard<std::mutex> lock(h.link->mu);
    stale = h.link->dead || h.link->epoch != g.epoch;
  }
  // Re-formed, or closing before the hello went out: dropped quietly (nothing was admitted on either side).
  if (stale || (closing && (h.state == S::Backoff || h.state == S::Connecting))) return false;
  bool ready = h.ready;
  h.ready = false;
  if (h.state == S::Backoff) {
    if (now < h.nextTryMs) return true;
    std::string why;
    h.sock = net::Socket::startConnect(h.target.host, h.target.port, why, options_.sourceAddress);
    if (!h.sock.valid()) {
      dialFailed(h, why, now);
      return h.state == S::Backoff;
    }
    h.state = S::Connecting;
    h.deadlineMs = now + options_.connectTimeoutMs;
    return true;
  }
  if (h.state == S::Connecting) {
    if (!ready) {
      if (now >= h.deadlineMs) {
        dialFailed(h, "connect to " + h.target.host + ":" + std::to_string(h.target.port) + " timed out after " +
                          std::to_string(options_.connectTimeoutMs) + " ms",
                   now);
        return h.state == S::Backoff;
      }
      return true;
    }
    int e = h.sock.connectResult();
    if (e != 0) {
      dialFailed(h, "connect to " + h.target.host + ":" + std::to_string(h.target.port) + ": " + net::errorText(e), now);
      return h.state == S::Backoff;
    }
    {
      std::lock_guard<std::mutex> lock(h.link->mu);
      h.link->dialingSinceMs = 0;
    }
    h.sock.applyOptions(dataSocketOptions(options_.socketBufferBytes));
    h.state = S::Sending;
    h.deadlineMs = now + 3 * static_cast<int64_t>(options_.connectTimeoutMs);
    ready = true;
  }
  if (h.state == S::Sending && ready) {
    net::ConstBuffer b{h.hello + h.helloSent, kHelloSize - h.helloSent};
    long n = h.sock.writeSome(&b, 1);
    if (n < 0) {
      // Reset before any reply (the listener evicted us under a flood, or was restarting): try again.
      dialFailed(h, "handshake with " + where + " failed: " + net::lastSocketError(), now);
      return h.state == S::Backoff;
    }
    h.helloSent += static_cast<size_t>(n);
    if (h.helloSent == kHelloSize) h.state = S::AwaitReply;
    ready = false;
  }
  if (h.state == S::AwaitReply && ready) {
    long r = h.sock.readSome(h.reply + h.replyGot, kReplySize - h.replyGot);
    if (r < 0) {
      // Reset or closed before the reply: a listener under a flood of strangers may have evicted us, or timed out
      // our wait for its epoch. Try again within the retry window; a refusal is always a reply.
      dialFailed(h, "handshake with " + where + " failed (the connection closed before the reply)", now);
      return h.state == S::Backoff;
    }
    h.replyGot += static_cast<size_t>(r);
    if (h.replyGot == kReplySize) {
      uint32_t status = 0;
      if (!decodeReply(h.reply, status)) {
        giveUp(h, "handshake with " + where + " failed (not a TCCL data port)", ErrorCode::PeerLost);
        return false;
      }
      if (status == kNotYet) {
        // The listener is still installing this epoch (its JavaScript thread may be busy in a long step): try again
        // within the retry window, as if it were not listening yet.
        dialFailed(h, std::string(helloStatusText(status)) + " (epoch " + std::to_string(h.link->epoch) + ")", now);
        return h.state == S::Backoff;
      }
      if (status != kHelloOk) {
        ErrorCode code = status == kBadTicket ? ErrorCode::Auth : ErrorCode::PeerLost;
        // A peer that is closing refuses new connections; if it had run operations with us, its goodbye on the
        // connections already made says which, and if none were made it could not have run any.
        if (status == kClosing) {
          std::lock_guard<std::mutex> lock(h.link->mu);
          if (!h.link->conns.empty()) code = ErrorCode::Closed;
        }
        giveUp(h, h.target.id + " refused the connection: " + helloStatusText(status), code);
        return false;
      }
      auto conn = std::make_shared<Connection>();
      conn->peer = h.link->peer;
      conn->epoch = h.link->epoch;
      conn->outgoing = true;
      conn->index = h.index;
      conn->link = h.link;
      conn->sock = std::move(h.sock);
      if (h.redial) statRedials_++;
      admit(conn);
      return false;
    }
  }
  if (now >= h.deadlineMs) {
    giveUp(h, "handshake with " + where + " failed (no reply within " + std::to_string(3 * options_.connectTimeoutMs) + " ms)", ErrorCode::PeerLost);
    return false;
  }
  return true;
}

void Transport::dialFailed(Handshake& h, const std::string& why, int64_t now) {
  h.sock.close();
  h.helloSent = 0;  // a later try sends the whole hello again on a new socket
  h.replyGot = 0;
  int64_t elapsed = now - h.dialStartMs;
  {
    std::lock_guard<std::mutex> lock(h.link->mu);
    if (h.link->dialingSinceMs == 0) h.link->dialingSinceMs = h.dialStartMs;
    h.link->lastDialError = why;
  }
  // Not listening yet, or not answering: try again until the retry window is spent.
  if (elapsed + h.backoffMs > options_.connectRetryMs) {
    giveUp(h,
           "cannot connect to " + h.target.id + " at " + h.target.host + ":" + std::to_string(h.target.port) + ": " + why + " (tried for " +
               std::to_string(elapsed) + " ms; is that peer's process running and its port reachable from here?)",
           ErrorCode::PeerLost);
    h.state = Handshake::State::AwaitReply;  // any state but Backoff: the caller drops it
    return;
  }
  h.state = Handshake::State::Backoff;
  h.nextTryMs = now + h.backoffMs;
  h.backoffMs = std::min<int64_t>(h.backoffMs * 2, 500);
}

void Transport::giveUp(Handshake& h, const std::string& err, ErrorCode code) {
  h.sock.close();
  if (code == ErrorCode::Closed) return;  // the peer is closing: its goodbye says the rest
  uint64_t epoch;
  {
    std::lock_guard<std::mutex> lock(h.link->mu);
    h.link->dead = true;
    epoch = h.link->epoch;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (epoch_ == epoch && !closing_.load()) {
    // Not holding mu_ in breakEpoch's callbacks: post it.
    tasks_.push_back([this, epoch, peer = h.link->peer, err, code] { breakEpoch(epoch, peer, err, code != ErrorCode::Auth, code); });
    serviceCv_.notify_all();
  }
}

void Transport::admit(const std::shared_ptr<Connection>& conn) {
  bool farewell;
  std::vector<std::pair<FrameHeader, std::string>> pending;
  std::vector<std::shared_ptr<Connection>> replaced;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->epoch != epoch_) return;  // re-formed meanwhile: the socket closes with the connection
    // The peer dialled connection `index` again: it lost the one we still hold (a path that died silently here).
    if (!conn->outgoing)
      for (auto& c : connections_)
        if (!c->outgoing && c->peer == conn->peer && c->index == conn->index && !c->dead.load()) replaced.push_back(c);
    connections_.push_back(conn);
    farewell = closing_.load();
    if (!farewell && conn->link) {
      std::lock_guard<std::mutex> l2(conn->link->mu);
      conn->link->conns.push_back(conn);
      pending.swap(conn->link->pendingControl);
    }
  }
  for (auto& c : replaced) onConnectionLost(c, "the peer replaced this connection (it lost it)");
  for (auto& [h, message] : pending) enqueueControl(conn, h, std::move(message), false);
  // Established while this transport closes: it says goodbye on it too, or the peer would take its end for a crash.
  if (farewell) enqueueControl(conn, goodbyeHeader(), goodbyeBody(), true);
  adopt(conn);
}

std::shared_ptr<Transport::Link> Transport::linkTo(int peer, std::string& error) {
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
  for (int c = 0; c < options_.connections; ++c) queueDial(link, c, false);
  return link;
}

std::string Transport::dialingNote() {
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

}  // namespace tccl
