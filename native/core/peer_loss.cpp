// When a peer or one of its connections is lost: re-dial or break the epoch, tell the others (broken, abort
// frames), and the goodbye a closing peer says so that the others finish what it ran instead of taking its end of
// stream for a crash. The rest of the transport is in transport.cpp.
#include <algorithm>
#include <chrono>

#include "transport_internal.h"

namespace tccl {

namespace {

// A goodbye lists (tag, ops run) pairs of 12 bytes; a peer that used more tags says an abrupt goodbye instead.
constexpr size_t kMaxGoodbyeTags = kMaxGoodbyeBytes / 12;

}  // namespace

void Transport::onConnectionLost(const std::shared_ptr<Connection>& conn, const std::string& why, bool mayRedial) {
  bool wasDead = conn->dead.exchange(true);
  conn->sock.shutdownBoth();
  if (!wasDead && closing_.load()) {
    { std::lock_guard<std::mutex> lock(mu_); }  // close() is either before its check or waiting: no lost wake-up
    connectionsCv_.notify_all();
  }
  if (wasDead || closing_.load() || conn->saidGoodbye.load()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->epoch != epoch_ || conn->peer < 0) return;
    // Its goodbye came on another connection: this one's end (even a reset) is part of the departure.
    auto d = departed_.find(conn->peer);
    if (d != departed_.end() && !d->second.abrupt) return;
    if (mayRedial && redialable(*conn)) {
      // Nothing can have been lost with it: no operation is in flight here, none of the peer's is waiting here, and
      // it carried no data for a while. The dialling side connects again; the group stays (a NAT's idle timeout).
      connections_.erase(std::remove(connections_.begin(), connections_.end(), conn), connections_.end());
      if (conn->outgoing && conn->link) {
        std::lock_guard<std::mutex> l2(conn->link->mu);
        auto& cs = conn->link->conns;
        cs.erase(std::remove(cs.begin(), cs.end(), conn), cs.end());
        if (!conn->link->dead) queueDial(conn->link, conn->index, true);
      } else {
        // The peer must dial it again soon; if it does not (it is gone), the group breaks then.
        awaitedRedials_.push_back({conn->peer, conn->index, nowMs() + 2 * static_cast<int64_t>(options_.connectTimeoutMs) + 1000, why});
      }
      return;
    }
  }
  breakEpoch(conn->epoch, conn->peer, why, true);
}

bool Transport::redialable(const Connection& conn) const {
  if (conn.endOfStream.load() || !ops_.empty() || !brokenReason_.empty()) return false;
  if (nowMs() - conn.lastDataMs.load() < options_.redialQuietMs) return false;
  for (auto& [key, frames] : early_)
    for (auto& f : frames)
      if (f.from == conn.peer) return false;
  for (auto& [key, abort] : earlyAborts_)
    if (abort.first == conn.peer) return false;
  return true;
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

OpError Transport::departedBlocking(const Operation& op) const {
  const OpKey& key = op.key;
  for (auto& [peer, d] : departed_) {
    if (!op.involves(peer)) continue;
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

FrameHeader Transport::goodbyeHeader() const {
  FrameHeader h;
  h.type = FrameType::Goodbye;
  std::lock_guard<std::mutex> lock(mu_);
  h.aux = abandonedOps_ || nextSeq_.size() > kMaxGoodbyeTags ? 1 : 0;  // abrupt: the receivers fail everything
  return h;
}

std::string Transport::goodbyeBody() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string body;
  if (abandonedOps_ || nextSeq_.size() > kMaxGoodbyeTags) return body;
  body.resize(nextSeq_.size() * 12);
  size_t at = 0;
  for (auto& [tag, ran] : nextSeq_) {
    put<uint64_t>(reinterpret_cast<uint8_t*>(body.data()) + at, tag);
    put<uint32_t>(reinterpret_cast<uint8_t*>(body.data()) + at + 8, ran);
    at += 12;
  }
  return body;
}

void Transport::sayGoodbye() {
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : connections_)
      if (!c->dead.load() && c->epoch == epoch_) conns.push_back(c);
  }
  FrameHeader h = goodbyeHeader();
  std::string body = goodbyeBody();
  // On every connection, so that each of the peer's readers sees it before that connection's end of stream; then
  // our end of stream, after everything already queued.
  for (auto& c : conns) enqueueControl(c, h, body, true);
}

void Transport::onGoodbye(const std::shared_ptr<Connection>& conn, const FrameHeader& h, const std::string& body) {
  if (body.size() % 12 != 0) return;
  std::vector<std::shared_ptr<Operation>> victims;
  std::shared_ptr<Link> link;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->epoch != epoch_ || closing_.load()) return;
    conn->saidGoodbye = true;
    if (!departed_.count(conn->peer)) {
      Departure& d = departed_[conn->peer];
      d.abrupt = h.aux != 0;
      const uint8_t* p = reinterpret_cast<const uint8_t*>(body.data());
      for (size_t at = 0; at < body.size(); at += 12) d.ran[get<uint64_t>(p + at)] = get<uint32_t>(p + at + 8);
      for (auto& [key, op] : ops_)
        if (departedBlocking(*op)) victims.push_back(op);
      auto it = links_.find(conn->peer);
      if (it != links_.end()) link = it->second;
    }
  }
  // Our end of stream answers theirs, so their close() need not wait out its linger.
  {
    std::lock_guard<std::mutex> lock(conn->controlMu);
    conn->shutdownAfterControl = true;
  }
  if (link) {
    // Nothing more can be sent to it: an op that tries fails at once instead of waiting for a connection.
    std::lock_guard<std::mutex> lock(link->mu);
    link->dead = true;
  }
  for (auto& op : victims) {
    OpError why;
    {
      std::lock_guard<std::mutex> lock(mu_);
      why = departedBlocking(*op);
    }
    if (why) fail(op, why, true);
  }
  wakeIo();
}

void Transport::broadcastControl(const FrameHeader& h, const std::string& message, int exceptPeer) {
  // One connection per peer is enough; prefer one we dialled.
  std::map<int, std::shared_ptr<Connection>> targets;
  std::vector<std::shared_ptr<Link>> dialling;  // links to peers with no connection yet either way
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : connections_) {
      if (c->dead.load() || c->peer == exceptPeer || c->epoch != epoch_) continue;
      auto it = targets.find(c->peer);
      if (it == targets.end() || (!it->second->outgoing && c->outgoing)) targets[c->peer] = c;
    }
    for (auto& [peer, link] : links_)
      if (peer != exceptPeer && !targets.count(peer)) dialling.push_back(link);
  }
  std::string msg = message.substr(0, kMaxControlMessage);
  for (auto& [peer, c] : targets) enqueueControl(c, h, msg, false);
  for (auto& link : dialling) {
    std::shared_ptr<Connection> first;
    {
      std::lock_guard<std::mutex> lock(link->mu);
      if (link->dead) continue;
      for (auto& c : link->conns)
        if (!c->dead.load()) first = c;
      // Still dialling: the link's first connection sends it (admit()).
      if (!first) link->pendingControl.emplace_back(h, msg);
    }
    if (first) enqueueControl(first, h, msg, false);
  }
}

}  // namespace tccl
