#include "hello.h"

#include <cstring>

namespace tccl {

namespace {
template <typename T>
void put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));  // little-endian hosts only (docs/protocol.md)
}
template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
}  // namespace

const char* helloStatusText(uint32_t s) {
  switch (s) {
    case kBadVersion: return "protocol version mismatch";
    case kBadTicket: return "connection ticket refused (not a member of this run)";
    case kStaleEpoch: return "group epoch mismatch (the group was re-formed)";
    case kBadIndex: return "peer index out of range";
    case kClosing: return "peer is closing";
    case kEpochBroken: return "that peer already lost a member of this group (it re-forms)";
    case kNotYet: return "it has not installed this epoch yet";
    default: return "refused";
  }
}

void encodeHello(const Hello& h, uint8_t* out) {
  std::memset(out, 0, kHelloSize);
  put<uint32_t>(out, kHelloMagic);
  put<uint16_t>(out + 4, h.version);
  out[6] = 1;
  put<uint64_t>(out + 8, h.epoch);
  put<uint32_t>(out + 16, h.from);
  put<uint32_t>(out + 20, h.to);
  put<uint16_t>(out + 24, h.index);
  put<uint16_t>(out + 26, h.count);
  std::memcpy(out + 28, h.ticket.data(), 16);
}

bool decodeHello(const uint8_t* in, Hello& h) {
  if (get<uint32_t>(in) != kHelloMagic) return false;
  h.version = get<uint16_t>(in + 4);
  h.epoch = get<uint64_t>(in + 8);
  h.from = get<uint32_t>(in + 16);
  h.to = get<uint32_t>(in + 20);
  h.index = get<uint16_t>(in + 24);
  h.count = get<uint16_t>(in + 26);
  std::memcpy(h.ticket.data(), in + 28, 16);
  return true;
}

void encodeReply(uint32_t status, uint8_t* out) {
  put<uint32_t>(out, kReplyMagic);
  put<uint32_t>(out + 4, status);
}

bool decodeReply(const uint8_t* in, uint32_t& status) {
  if (get<uint32_t>(in) != kReplyMagic) return false;
  status = get<uint32_t>(in + 4);
  return true;
}

uint32_t judgeHello(const Hello& h, const GroupView& g, bool& wait) {
  wait = false;
  if (g.closing) return kClosing;
  if (h.version != kProtocolVersion) return kBadVersion;
  if (h.epoch > g.epoch) {
    wait = true;
    return kStaleEpoch;
  }
  if (h.epoch != g.epoch) return kStaleEpoch;
  if (h.from >= g.worldSize || h.to != static_cast<uint32_t>(g.myIndex) || h.from == h.to) return kBadIndex;
  uint8_t diff = 0;  // constant-time compare
  for (size_t i = 0; i < 16; ++i) diff |= static_cast<uint8_t>(h.ticket[i] ^ g.ticket[i]);
  if (diff) return kBadTicket;
  if (g.broken) return kEpochBroken;
  return kHelloOk;
}

void IncomingHello::received(size_t n) {
  if (state_ != State::Reading) return;
  got_ += n;
  if (got_ < kHelloSize) return;
  state_ = decodeHello(buf_, hello_) ? State::Judging : State::Refused;
}

void IncomingHello::judge(const GroupView& g, int64_t nowMs, int64_t waitUntilMs, bool mayWait) {
  if (state_ != State::Judging) return;
  bool wait = false;
  uint32_t s = judgeHello(hello_, g, wait);
  if (wait) {
    // The wait counts against the hello's deadline: a stranger naming a future epoch is held no longer than one
    // that says nothing.
    if (waitUntilMs_ == 0 && mayWait) waitUntilMs_ = waitUntilMs < deadlineMs_ ? waitUntilMs : deadlineMs_;
    if (waitUntilMs_ != 0 && nowMs < waitUntilMs_) return;
    s = kNotYet;
  }
  status_ = s;
  encodeReply(status_, reply_);
  state_ = State::Replying;
}

void IncomingHello::sent(size_t n) {
  if (state_ != State::Replying) return;
  replySent_ += n;
  if (replySent_ >= kReplySize) state_ = status_ == kHelloOk ? State::Admitted : State::Refused;
}

bool Budget::charge(int peer, size_t bytes) {
  bytes += kItemOverhead;
  size_t& mine = byPeer_[peer];
  if (used_ + bytes > total_ || mine + bytes > perPeer_) return false;
  used_ += bytes;
  mine += bytes;
  return true;
}

void Budget::release(int peer, size_t bytes) {
  bytes += kItemOverhead;
  auto it = byPeer_.find(peer);
  if (it == byPeer_.end()) return;
  size_t take = bytes < it->second ? bytes : it->second;
  it->second -= take;
  used_ -= take < used_ ? take : used_;
  if (it->second == 0) byPeer_.erase(it);
}

size_t Budget::usedBy(int peer) const {
  auto it = byPeer_.find(peer);
  return it == byPeer_.end() ? 0 : it->second;
}

}  // namespace tccl
