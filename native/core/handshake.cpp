// Connection set-up: the listener, the hello exchanged on every new connection (protocol version, group epoch,
// indices, the group's ticket), and dialling the K connections of a link with retries. Established connections
// are handed to an I/O thread (io_loop.cpp).
#include <algorithm>
#include <chrono>

#include "transport_internal.h"

namespace tccl {

namespace {

constexpr uint32_t kHelloMagic = 0x4C434354;  // "TCCL"
constexpr uint32_t kReplyMagic = 0x4B4F4354;  // "TCOK"
constexpr uint16_t kProtocolVersion = 2;
constexpr size_t kHelloSize = 64;

// kNotYet: the listener has not installed the dialler's (newer) epoch yet; the dialler tries again within its retry
// window, as if the peer were not listening yet (its JavaScript thread may be busy in a long synchronous step).
enum HelloStatus : uint32_t { kOk = 0, kBadVersion = 1, kBadTicket = 2, kStaleEpoch = 3, kBadIndex = 4, kClosing = 5, kNotYet = 6 };

const char* helloStatusText(uint32_t s) {
  switch (s) {
    case kBadVersion: return "protocol version mismatch";
    case kBadTicket: return "connection ticket refused (not a member of this run)";
    case kStaleEpoch: return "group epoch mismatch (the group was re-formed)";
    case kBadIndex: return "peer index out of range";
    case kClosing: return "peer is closing";
    case kNotYet: return "it has not installed this epoch yet";
    default: return "refused";
  }
}

// Every data connection's options: the defaults of SocketOptions with the transport's buffer size. Set by field,
// not by a brace list: the third field of the aggregate is the unsent low-water mark, and `{bytes, true, true}`
// once set it to 1 byte, so a connection took new frames only once its kernel buffer had fully drained.
net::SocketOptions dataSocketOptions(int bufferBytes) {
  net::SocketOptions o;
  o.bufferBytes = bufferBytes;
  return o;
}

}  // namespace

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
  // The socket closes with the last reference to the connection: close() may be shutting it down meanwhile.
  if (!conn->sock.waitReadable(options_.connectTimeoutMs) || !conn->sock.recvAll(hello, sizeof(hello)) ||
      get<uint32_t>(hello) != kHelloMagic) {
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
      else if (epoch_ < epoch) status = kNotYet;
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
    }
  }
  uint8_t reply[8];
  put<uint32_t>(reply, kReplyMagic);
  put<uint32_t>(reply + 4, status);
  bool sent = conn->sock.sendAll(reply, sizeof(reply));
  forget();
  if (status != kOk || !sent) return;
  conn->sock.applyOptions(dataSocketOptions(options_.socketBufferBytes));
  admit(conn);
}

void Transport::admit(const std::shared_ptr<Connection>& conn) {
  bool farewell;
  std::vector<std::pair<FrameHeader, std::string>> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->epoch != epoch_) return;  // re-formed meanwhile: the socket closes with the connection
    connections_.push_back(conn);
    farewell = closing_.load();
    if (!farewell && conn->link) {
      std::lock_guard<std::mutex> l2(conn->link->mu);
      conn->link->conns.push_back(conn);
      pending.swap(conn->link->pendingControl);
    }
  }
  for (auto& [h, message] : pending) enqueueControl(conn, h, std::move(message), false);
  // Established while this transport closes: it says goodbye on it too, or the peer would take its end for a crash.
  if (farewell) enqueueControl(conn, goodbyeHeader(), goodbyeBody(), true);
  adopt(conn);
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
      if (!s.valid() && failCode == ErrorCode::Closed) return;  // the peer is closing: its goodbye says the rest
      if (!s.valid()) {
        {
          std::lock_guard<std::mutex> lock(link->mu);
          link->dead = true;
        }
        std::lock_guard<std::mutex> lock(mu_);
        if (epoch_ == epoch && !closing_.load()) {
          // Not holding mu_ in breakEpoch's callbacks: post it.
          tasks_.push_back([this, epoch, peer = link->peer, err, failCode] { breakEpoch(epoch, peer, err, failCode != ErrorCode::Auth, failCode); });
          serviceCv_.notify_all();
        }
        return;
      }
      auto conn = std::make_shared<Connection>();
      conn->peer = link->peer;
      conn->epoch = epoch;
      conn->outgoing = true;
      conn->link = link;
      conn->sock = std::move(s);
      admit(conn);
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
    net::Socket s = net::Socket::connectTo(target.host, target.port, options_.connectTimeoutMs, why, options_.sourceAddress);
    if (s.valid()) {
      {
        std::lock_guard<std::mutex> lock(link->mu);
        link->dialingSinceMs = 0;
      }
      s.applyOptions(dataSocketOptions(options_.socketBufferBytes));
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
      bool again = false;
      if (!s.sendAll(hello, sizeof(hello)) || !s.waitReadable(3 * options_.connectTimeoutMs) || !s.recvAll(reply, sizeof(reply)) ||
          get<uint32_t>(reply) != kReplyMagic) {
        err = "handshake with " + where + " failed";
        s.close();
      } else if (get<uint32_t>(reply + 4) == kNotYet) {
        why = std::string(helloStatusText(kNotYet)) + " (epoch " + std::to_string(epoch) + ")";
        s.close();
        again = true;
      } else if (get<uint32_t>(reply + 4) != kOk) {
        if (get<uint32_t>(reply + 4) == kBadTicket) failCode = ErrorCode::Auth;
        // A peer that is closing refuses new connections; if it had run operations with us, its goodbye on the
        // connections already made says which, and if none were made it could not have run any.
        if (get<uint32_t>(reply + 4) == kClosing) {
          std::lock_guard<std::mutex> lock(link->mu);
          if (!link->conns.empty()) failCode = ErrorCode::Closed;
        }
        err = target.id + " refused the connection: " + helloStatusText(get<uint32_t>(reply + 4));
        s.close();
      }
      if (!again) return s;
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

}  // namespace tccl
