#include "exchange.h"

#include <algorithm>
#include <string>

namespace tccl {

namespace {
constexpr uint8_t kExchangePhase = 2;
}

Exchange::Exchange(std::vector<ExchangeSend> sends, std::vector<ExchangeRecv> recvs, uint32_t maxSegmentBytes)
    : sends_(std::move(sends)), recvs_(std::move(recvs)), segBytes_(maxSegmentBytes) {}

void Exchange::prepare() {
  seen_.resize(recvs_.size());
  for (size_t i = 0; i < recvs_.size(); ++i) {
    uint64_t n = segmentsOf(recvs_[i].length);
    seen_[i].assign(n, 0);
    expectWork(n);
  }
}

void Exchange::start(Transport& t) {
  for (auto& s : sends_) {
    uint64_t nseg = segmentsOf(s.length);
    std::vector<SendItem> items;
    items.reserve(nseg);
    for (uint64_t k = 0; k < nseg; ++k) {
      SendItem item;
      item.header.type = FrameType::Data;
      item.header.phase = kExchangePhase;
      item.header.count = s.length;
      item.header.offset = k * segBytes_;
      item.header.length = static_cast<uint32_t>(std::min<uint64_t>(segBytes_, s.length - std::min(s.length, k * segBytes_)));
      item.header.aux = s.stream;
      item.payload = s.data + item.header.offset;
      items.push_back(std::move(item));
    }
    if (!t.sendMany(s.to, std::move(items), shared_from_this())) {
      std::string who = s.to >= 0 && static_cast<size_t>(s.to) < peerIds.size() ? peerIds[static_cast<size_t>(s.to)] : "?";
      t.fail(shared_from_this(), {ErrorCode::PeerLost, "the link to " + who + " is down", who}, false);
      return;
    }
  }
}

bool Exchange::onHeader(Transport& t, int from, const FrameHeader& h, uint8_t*, uint8_t*& dst) {
  auto reject = [&](ErrorCode code, const std::string& msg) {
    t.fail(shared_from_this(), {code, msg, ""}, true);
    return false;
  };
  const std::string& who = peerIds[static_cast<size_t>(from)];
  if (h.phase != kExchangePhase) return reject(ErrorCode::Mismatch, who + " runs a different operation under tag " + std::to_string(key.tag));
  auto it = std::find_if(recvs_.begin(), recvs_.end(), [&](const ExchangeRecv& r) { return r.from == from && r.stream == h.aux; });
  if (it == recvs_.end()) return reject(ErrorCode::Mismatch, who + " sent stream " + std::to_string(h.aux) + " that this peer does not expect");
  if (it->length != h.count)
    return reject(ErrorCode::Mismatch, who + " sends " + std::to_string(h.count) + " bytes for stream " + std::to_string(h.aux) +
                                           ", this peer expects " + std::to_string(it->length));
  size_t idx = static_cast<size_t>(it - recvs_.begin());
  uint64_t k = h.offset / segBytes_;
  uint64_t expectLen = it->length == 0 ? 0 : std::min<uint64_t>(segBytes_, it->length - std::min(it->length, h.offset));
  if (h.offset % segBytes_ != 0 || k >= seen_[idx].size() || h.length != expectLen)
    return reject(ErrorCode::Protocol, who + " sent a segment outside stream " + std::to_string(h.aux));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (seen_[idx][k]) return reject(ErrorCode::Protocol, who + " sent a segment twice");
    seen_[idx][k] = 1;
  }
  dst = it->data + h.offset;
  return true;
}

void Exchange::onPayload(Transport& t, int, const FrameHeader&, uint8_t*) { finishWork(t); }

bool Exchange::involves(int index) const {
  return std::any_of(sends_.begin(), sends_.end(), [&](const ExchangeSend& s) { return s.to == index; }) ||
         std::any_of(recvs_.begin(), recvs_.end(), [&](const ExchangeRecv& r) { return r.from == index; });
}

}  // namespace tccl
