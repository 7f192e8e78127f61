#include "chain.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "reduce.h"

namespace tccl {

const char* collectiveName(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::AllGather: return "all-gather";
    case CollectiveKind::ReduceScatter: return "reduce-scatter";
    case CollectiveKind::Broadcast: return "broadcast";
  }
  return "?";
}

std::shared_ptr<Operation> makeCollective(const CollectiveSpec& spec, uint32_t maxSegmentBytes) {
  if (static_cast<uint8_t>(spec.kind) > static_cast<uint8_t>(CollectiveKind::Broadcast)) throw std::invalid_argument("unknown collective kind");
  if (spec.kind == CollectiveKind::AllGather) {
    uint64_t sum = 0;
    for (uint64_t c : spec.chunkCounts) sum += c;
    if (!spec.chunkCounts.empty() && sum != spec.count) throw std::invalid_argument("the all-gather chunk counts do not add up to the output count");
  }
  if (spec.root < 0) throw std::invalid_argument("the broadcast root must be a peer index");
  // One algorithm per kind today: a pipelined ring. A tree or direct variant for small buffers goes here, chosen
  // from the spec alone so that every peer picks the same.
  return std::make_shared<RingChain>(spec, maxSegmentBytes);
}

RingChain::RingChain(const CollectiveSpec& spec, uint32_t maxSegmentBytes) : spec_(spec), elem_(dtypeSize(spec.dtype)) {
  segBytes_ = static_cast<uint32_t>(maxSegmentBytes / elem_ * elem_);
  if (segBytes_ == 0) segBytes_ = static_cast<uint32_t>(elem_);
}

void RingChain::prepare() {
  n_ = worldSize;
  r_ = myIndex;
  right_ = (r_ + 1) % n_;
  const int k = chunks();
  chunkStart_.assign(static_cast<size_t>(k) + 1, 0);
  firstSeg_.assign(static_cast<size_t>(k) + 1, 0);
  // A group that changed between the caller's view and this submit: start() fails the op (retryable).
  if (spec_.kind == CollectiveKind::AllGather && !spec_.chunkCounts.empty() && spec_.chunkCounts.size() != static_cast<size_t>(n_)) return;
  if (spec_.kind == CollectiveKind::Broadcast && spec_.root >= n_) return;
  uint64_t elems = 0;
  uint32_t seg = 0;
  for (int c = 0; c <= k; ++c) {
    uint64_t startElem = elems;
    if (spec_.kind == CollectiveKind::AllGather && !spec_.chunkCounts.empty()) {
      if (c < k) elems += spec_.chunkCounts[static_cast<size_t>(c)];
    } else {
      startElem = spec_.count * static_cast<uint64_t>(c) / static_cast<uint64_t>(k);
      elems = spec_.count * static_cast<uint64_t>(c + 1) / static_cast<uint64_t>(k);
    }
    chunkStart_[static_cast<size_t>(c)] = startElem * elem_;
    firstSeg_[static_cast<size_t>(c)] = seg;
    if (c < k) {
      uint64_t bytes = (elems - startElem) * elem_;
      // An empty chunk still travels as one empty segment, so every receiver sees a frame and checks its header.
      seg += bytes == 0 ? 1 : static_cast<uint32_t>((bytes + segBytes_ - 1) / segBytes_);
    }
  }
  received_.assign(seg, 0);
  if (n_ == 1) return;
  uint64_t receives = 0;
  for (int c = 0; c < k; ++c) {
    uint64_t nseg = firstSeg_[static_cast<size_t>(c) + 1] - firstSeg_[static_cast<size_t>(c)];
    bool mine = false;
    switch (spec_.kind) {
      case CollectiveKind::AllGather: mine = c == r_; break;                      // we send it, never receive it
      case CollectiveKind::ReduceScatter: mine = c == (r_ - 1 + n_) % n_; break;  // we start its reduction
      case CollectiveKind::Broadcast: mine = r_ == spec_.root; break;
    }
    if (!mine) receives += nseg;
  }
  expectWork(receives);
}

int RingChain::chunkAt(int step) const {
  switch (spec_.kind) {
    case CollectiveKind::AllGather: return ((r_ - step) % n_ + n_) % n_;
    case CollectiveKind::ReduceScatter: return ((r_ - step - 1) % n_ + n_) % n_;
    case CollectiveKind::Broadcast: return (r_ - spec_.root + n_) % n_ == step ? 0 : -1;
  }
  return -1;
}

bool RingChain::findSegment(int chunk, uint64_t offset, uint32_t length, Segment& out) const {
  uint64_t start = chunkStart_[static_cast<size_t>(chunk)];
  uint64_t end = chunkStart_[static_cast<size_t>(chunk) + 1];
  if (offset < start || offset > end || (offset - start) % segBytes_ != 0) return false;
  uint64_t k = (offset - start) / segBytes_;
  uint32_t nseg = firstSeg_[static_cast<size_t>(chunk) + 1] - firstSeg_[static_cast<size_t>(chunk)];
  if (k >= nseg) return false;
  if (length != std::min<uint64_t>(segBytes_, end - offset)) return false;
  out = Segment{offset, length, firstSeg_[static_cast<size_t>(chunk)] + static_cast<uint32_t>(k)};
  return true;
}

SendItem RingChain::makeItem(int step, const Segment& seg, const uint8_t* payload) const {
  SendItem item;
  item.header.type = FrameType::Data;
  item.header.dtype = static_cast<uint8_t>(spec_.dtype);
  item.header.op = spec_.kind == CollectiveKind::ReduceScatter ? static_cast<uint8_t>(spec_.op) : 0;
  item.header.phase = static_cast<uint8_t>(kCollectivePhaseBase + static_cast<uint8_t>(spec_.kind));
  item.header.step = static_cast<uint16_t>(step);
  item.header.count = spec_.count;
  item.header.offset = seg.offset;
  item.header.length = seg.length;
  item.header.aux = spec_.kind == CollectiveKind::Broadcast ? static_cast<uint32_t>(spec_.root) : 0;
  item.payload = payload;
  return item;
}

// Queues every segment of `chunk` at ring step `step`; the payload of byte offset o is base + (o - baseOffset).
void RingChain::sendChunk(Transport& t, int chunk, int step, const uint8_t* base, uint64_t baseOffset) {
  uint32_t first = firstSeg_[static_cast<size_t>(chunk)];
  uint32_t last = firstSeg_[static_cast<size_t>(chunk) + 1];
  uint64_t start = chunkStart_[static_cast<size_t>(chunk)];
  uint64_t end = chunkStart_[static_cast<size_t>(chunk) + 1];
  std::vector<SendItem> items;
  items.reserve(last - first);
  for (uint32_t i = first; i < last; ++i) {
    uint64_t off = start + static_cast<uint64_t>(i - first) * segBytes_;
    Segment seg{off, static_cast<uint32_t>(std::min<uint64_t>(segBytes_, end - off)), i};
    items.push_back(makeItem(step, seg, base + (off - baseOffset)));
  }
  if (!t.sendMany(right_, std::move(items), shared_from_this())) {
    t.fail(shared_from_this(), {ErrorCode::PeerLost, "the link to " + peerIds[right_] + " is down", peerIds[right_]}, false);
  }
}

void RingChain::start(Transport& t) {
  const char* name = collectiveName(spec_.kind);
  if (received_.empty()) {
    t.fail(shared_from_this(), {ErrorCode::PeerLost, std::string("the group changed while the ") + name + " was submitted", ""}, false);
    return;
  }
  auto me = std::static_pointer_cast<RingChain>(shared_from_this());
  // This peer's own part of the output is copied on the service thread, never on the caller's (the JS thread).
  uint64_t copyAt = 0, copyBytes = 0;
  if (spec_.kind == CollectiveKind::AllGather) {
    copyAt = chunkStart_[static_cast<size_t>(r_)];
    copyBytes = chunkStart_[static_cast<size_t>(r_) + 1] - copyAt;
  } else if (n_ == 1) {
    copyBytes = spec_.count * elem_;
  }
  if (spec_.kind == CollectiveKind::Broadcast && r_ != spec_.root) copyBytes = 0;
  if (copyBytes && spec_.output + copyAt != spec_.input) {
    expectWork(1);
    t.post([me, &t, copyAt, copyBytes] {
      std::memcpy(me->spec_.output + copyAt, me->spec_.input, copyBytes);
      me->finishWork(t);
    });
  }
  if (n_ == 1) return;
  switch (spec_.kind) {
    case CollectiveKind::AllGather: sendChunk(t, r_, 1, spec_.input, chunkStart_[static_cast<size_t>(r_)]); break;
    case CollectiveKind::ReduceScatter: sendChunk(t, (r_ - 1 + n_) % n_, 1, spec_.input, 0); break;
    case CollectiveKind::Broadcast:
      if (r_ == spec_.root) sendChunk(t, 0, 1, spec_.input, 0);
      break;
  }
}

bool RingChain::reject(Transport& t, ErrorCode code, const std::string& message) {
  t.fail(shared_from_this(), {code, message, ""}, true);
  return false;
}

std::string RingChain::mismatch(const FrameHeader& h, int from) const {
  const std::string tag = std::to_string(key.tag);
  const uint8_t phase = static_cast<uint8_t>(kCollectivePhaseBase + static_cast<uint8_t>(spec_.kind));
  if (h.phase != phase) {
    std::string other = h.phase >= kCollectivePhaseBase && h.phase <= kCollectivePhaseBase + 2
                            ? collectiveName(static_cast<CollectiveKind>(h.phase - kCollectivePhaseBase))
                            : "an all-reduce or exchange";
    return peerIds[from] + " runs " + other + " under tag " + tag + " where " + peerIds[r_] + " runs " + collectiveName(spec_.kind) +
           ": every peer must run the same collective for the same tag";
  }
  bool opDiffers = spec_.kind == CollectiveKind::ReduceScatter && h.op != static_cast<uint8_t>(spec_.op);
  bool rootDiffers = spec_.kind == CollectiveKind::Broadcast && h.aux != static_cast<uint32_t>(spec_.root);
  if (h.count == spec_.count && h.dtype == static_cast<uint8_t>(spec_.dtype) && !opDiffers && !rootDiffers) return "";
  auto side = [&](const std::string& who, uint64_t count, uint8_t dtype, uint8_t op, uint32_t root) {
    std::string s = who + " has " + std::to_string(count) + " x " + (isValidDType(dtype) ? dtypeName(static_cast<DType>(dtype)) : "?");
    if (spec_.kind == CollectiveKind::ReduceScatter) s += std::string(" op ") + (isValidReduceOp(op) ? reduceOpName(static_cast<ReduceOp>(op)) : "?");
    if (spec_.kind == CollectiveKind::Broadcast) s += " from root " + std::to_string(root);
    return s;
  };
  return std::string("peers disagree on ") + collectiveName(spec_.kind) + " tag " + tag + ": " + side(peerIds[from], h.count, h.dtype, h.op, h.aux) +
         ", " + side(peerIds[r_], spec_.count, static_cast<uint8_t>(spec_.dtype), static_cast<uint8_t>(spec_.op), static_cast<uint32_t>(spec_.root)) +
         " (elements of the whole output): every peer must pass the same sizes, dtype" +
         (spec_.kind == CollectiveKind::ReduceScatter ? ", op" : spec_.kind == CollectiveKind::Broadcast ? ", root" : "") + " for the same tag";
}

bool RingChain::onHeader(Transport& t, int from, const FrameHeader& h, uint8_t* scratch, uint8_t*& dst) {
  std::string bad = mismatch(h, from);
  if (!bad.empty()) return reject(t, ErrorCode::Mismatch, bad);
  const char* name = collectiveName(spec_.kind);
  int left = (r_ - 1 + n_) % n_;
  int chunk = h.step >= 1 && h.step < n_ ? chunkAt(h.step) : -1;
  if (from != left || chunk < 0) return reject(t, ErrorCode::Protocol, std::string("unexpected ") + name + " frame from " + peerIds[from]);
  Segment seg;
  if (!findSegment(chunk, h.offset, h.length, seg)) return reject(t, ErrorCode::Protocol, std::string(name) + " frame from " + peerIds[from] + " does not match the chunk layout");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (received_[seg.index]) return reject(t, ErrorCode::Protocol, std::string("duplicate ") + name + " frame from " + peerIds[from]);
    received_[seg.index] = 1;
  }
  if (spec_.kind == CollectiveKind::ReduceScatter) {
    if (h.length > t.options().maxSegmentBytes) return reject(t, ErrorCode::Protocol, std::string(name) + " segment from " + peerIds[from] + " is larger than this peer's segment size");
    dst = scratch;  // combined with our input in onPayload
  } else {
    dst = spec_.output + seg.offset;  // final data lands in place
  }
  return true;
}

void RingChain::onPayload(Transport& t, int from, const FrameHeader& h, uint8_t* data) {
  Segment seg;
  findSegment(chunkAt(h.step), h.offset, h.length, seg);  // checked in onHeader
  const uint8_t* out = spec_.output + seg.offset;
  switch (spec_.kind) {
    case CollectiveKind::AllGather:
      if (h.step < n_ - 1) sendChunkSegment(t, h.step + 1, seg, out);
      break;
    case CollectiveKind::Broadcast:
      if (right_ != spec_.root) sendChunkSegment(t, h.step + 1, seg, out);
      break;
    case CollectiveKind::ReduceScatter: {
      size_t elems = seg.length / elem_;
      reduceTo(spec_.dtype, spec_.op, spec_.output + seg.offset, spec_.input + seg.offset, data, elems);
      if (h.step == n_ - 1) {
        if (spec_.op == ReduceOp::Avg) finishAverage(spec_.dtype, spec_.output + seg.offset, elems, static_cast<uint32_t>(n_));
      } else {
        sendChunkSegment(t, h.step + 1, seg, out);
      }
      break;
    }
  }
  finishWork(t);  // after the forward above was queued, so the op cannot complete in between
}

void RingChain::sendChunkSegment(Transport& t, int step, const Segment& seg, const uint8_t* payload) {
  if (!t.send(right_, makeItem(step, seg, payload), shared_from_this())) {
    t.fail(shared_from_this(), {ErrorCode::PeerLost, "the link to " + peerIds[right_] + " is down", peerIds[right_]}, false);
  }
}

}  // namespace tccl
