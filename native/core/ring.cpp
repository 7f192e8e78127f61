#include "ring.h"

#include <cstring>
#include <string>

#include "reduce.h"

namespace tccl {

namespace {
enum Phase : uint8_t { kReduceScatter = 0, kAllGather = 1 };
}  // namespace

std::string allReduceMismatch(const OpKey& key, const FrameHeader& h, const std::string& sender, const std::string& self,
                              const AllReduceBuffers& mine) {
  if (h.count == mine.count && h.dtype == static_cast<uint8_t>(mine.dtype) && h.op == static_cast<uint8_t>(mine.op) && h.codec == 0)
    return "";
  return "peers disagree on all-reduce tag " + std::to_string(key.tag) + ": " + sender + " has " + std::to_string(h.count) + " x " +
         (isValidDType(h.dtype) ? dtypeName(static_cast<DType>(h.dtype)) : "?") + " op " +
         (isValidReduceOp(h.op) ? reduceOpName(static_cast<ReduceOp>(h.op)) : "?") + (h.codec ? " quantized" : "") + ", " + self +
         " has " + std::to_string(mine.count) + " x " + dtypeName(mine.dtype) + " op " + reduceOpName(mine.op) +
         ": every peer must pass the same element count, dtype, op and quantization for the same tag";
}

RingAllReduce::RingAllReduce(const AllReduceBuffers& buffers, uint32_t maxSegmentBytes)
    : buf_(buffers), inPlace_(buffers.input == buffers.output), elem_(dtypeSize(buffers.dtype)) {
  segBytes_ = static_cast<uint32_t>(maxSegmentBytes / elem_ * elem_);
  if (segBytes_ == 0) segBytes_ = static_cast<uint32_t>(elem_);
}

void RingAllReduce::setupGeometry(int worldSize, int myIndex) {
  n_ = worldSize;
  r_ = myIndex;
  right_ = (r_ + 1) % n_;
  chunkStart_.resize(static_cast<size_t>(n_) + 1);
  firstSeg_.resize(static_cast<size_t>(n_) + 1);
  uint32_t seg = 0;
  for (int c = 0; c <= n_; ++c) {
    // Element-aligned split; chunk sizes differ by at most one element.
    uint64_t startElem = buf_.count * static_cast<uint64_t>(c) / static_cast<uint64_t>(n_);
    chunkStart_[static_cast<size_t>(c)] = startElem * elem_;
    firstSeg_[static_cast<size_t>(c)] = seg;
    if (c < n_) {
      uint64_t endElem = buf_.count * static_cast<uint64_t>(c + 1) / static_cast<uint64_t>(n_);
      uint64_t bytes = (endElem - startElem) * elem_;
      // An empty chunk still travels as one empty segment, so every peer sees a frame and can check its header.
      seg += bytes == 0 ? 1 : static_cast<uint32_t>((bytes + segBytes_ - 1) / segBytes_);
    }
  }
  received_.assign(2 * static_cast<size_t>(seg), 0);
  if (inPlace_) {
    backedUp_.assign(seg, 0);
    backup_ = BufferPool::acquire(buf_.count * elem_);
  }
  // Reduce-scatter receives every chunk but our own; all-gather every chunk but the one we own at the end.
  uint64_t receives = 0;
  for (int c = 0; c < n_; ++c) {
    uint64_t nseg = firstSeg_[static_cast<size_t>(c) + 1] - firstSeg_[static_cast<size_t>(c)];
    if (c != r_) receives += nseg;
    if (c != right_) receives += nseg;
  }
  if (n_ > 1) expectWork(receives);
}

int RingAllReduce::chunkOf(int step, int phase) const {
  // Reduce-scatter step s (1..n-1) carries chunk r-s; all-gather step g (1..n-1) carries chunk r-g+1.
  int c = phase == kReduceScatter ? r_ - step : r_ - step + 1;
  return ((c % n_) + n_) % n_;
}

bool RingAllReduce::findSegment(int chunk, uint64_t offset, uint32_t length, Segment& out) const {
  uint64_t start = chunkStart_[static_cast<size_t>(chunk)];
  uint64_t end = chunkStart_[static_cast<size_t>(chunk) + 1];
  if (offset < start || offset > end || (offset - start) % segBytes_ != 0) return false;
  uint64_t k = (offset - start) / segBytes_;
  uint32_t nseg = firstSeg_[static_cast<size_t>(chunk) + 1] - firstSeg_[static_cast<size_t>(chunk)];
  if (k >= nseg) return false;
  uint64_t expectLen = std::min<uint64_t>(segBytes_, end - offset);
  if (length != expectLen) return false;
  out = Segment{offset, length, firstSeg_[static_cast<size_t>(chunk)] + static_cast<uint32_t>(k)};
  return true;
}

SendItem RingAllReduce::makeItem(int phase, int step, const Segment& seg) const {
  SendItem item;
  item.header.type = FrameType::Data;
  item.header.dtype = static_cast<uint8_t>(buf_.dtype);
  item.header.op = static_cast<uint8_t>(buf_.op);
  item.header.phase = static_cast<uint8_t>(phase);
  item.header.step = static_cast<uint16_t>(step);
  item.header.count = buf_.count;
  item.header.offset = seg.offset;
  item.header.length = seg.length;
  // The first reduce-scatter step sends our input; everything later sends values already in the output.
  const uint8_t* base = (phase == kReduceScatter && step == 1) ? buf_.input : buf_.output;
  item.payload = base + seg.offset;
  return item;
}

void RingAllReduce::queueSend(Transport& t, int phase, int step, const Segment& seg) {
  if (!t.send(right_, makeItem(phase, step, seg), shared_from_this())) {
    t.fail(shared_from_this(), {ErrorCode::PeerLost, "the link to " + peerIds[right_] + " is down", peerIds[right_]}, false);
  }
}

void RingAllReduce::prepare() { setupGeometry(worldSize, myIndex); }

void RingAllReduce::start(Transport& t) {
  if (n_ == 1) {
    // Alone: the result is the input. The copy runs on the service thread, never on the caller's.
    auto me = self();
    expectWork(1);
    t.post([me, &t] {
      if (me->buf_.output != me->buf_.input && me->buf_.count)
        std::memcpy(me->buf_.output, me->buf_.input, me->buf_.count * me->elem_);
      me->finishWork(t);
    });
    return;
  }
  uint32_t first = firstSeg_[static_cast<size_t>(r_)];
  uint32_t last = firstSeg_[static_cast<size_t>(r_) + 1];
  uint64_t start = chunkStart_[static_cast<size_t>(r_)];
  uint64_t end = chunkStart_[static_cast<size_t>(r_) + 1];
  std::vector<SendItem> items;
  items.reserve(last - first);
  for (uint32_t i = first; i < last; ++i) {
    uint64_t off = start + static_cast<uint64_t>(i - first) * segBytes_;
    Segment seg{off, static_cast<uint32_t>(std::min<uint64_t>(segBytes_, end - off)), i};
    items.push_back(makeItem(kReduceScatter, 1, seg));
  }
  if (!t.sendMany(right_, std::move(items), shared_from_this())) {
    t.fail(shared_from_this(), {ErrorCode::PeerLost, "the link to " + peerIds[right_] + " is down", peerIds[right_]}, false);
  }
}

bool RingAllReduce::rejectFrame(Transport& t, ErrorCode code, const std::string& message) {
  t.fail(shared_from_this(), {code, message, ""}, true);
  return false;
}

bool RingAllReduce::onHeader(Transport& t, int from, const FrameHeader& h, uint8_t* scratch, uint8_t*& dst) {
  std::string mismatch = allReduceMismatch(key, h, peerIds[from], peerIds[r_], buf_);
  if (!mismatch.empty()) return rejectFrame(t, ErrorCode::Mismatch, mismatch);
  if (h.phase != kReduceScatter && h.phase != kAllGather && h.phase < 8) {
    return rejectFrame(t, ErrorCode::Mismatch, "peers use different all-reduce algorithms for tag " + std::to_string(key.tag) + ": " +
                                                   peerIds[from] + " does not use the ring; pass the same \"algorithm\" option on every peer");
  }
  int leftPeer = (r_ - 1 + n_) % n_;
  if (from != leftPeer || (h.phase != kReduceScatter && h.phase != kAllGather) || h.step < 1 || h.step >= n_) {
    return rejectFrame(t, ErrorCode::Protocol, "unexpected all-reduce frame from " + peerIds[from]);
  }
  Segment seg;
  if (!findSegment(chunkOf(h.step, h.phase), h.offset, h.length, seg)) {
    return rejectFrame(t, ErrorCode::Protocol, "all-reduce frame from " + peerIds[from] + " does not match the chunk layout");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    uint8_t& seen = received_[static_cast<size_t>(h.phase) * (received_.size() / 2) + seg.index];
    if (seen) return rejectFrame(t, ErrorCode::Protocol, "duplicate all-reduce frame from " + peerIds[from]);
    seen = 1;
  }
  if (h.phase == kReduceScatter) {
    if (h.length > t.options().maxSegmentBytes) return rejectFrame(t, ErrorCode::Protocol, "all-reduce segment from " + peerIds[from] + " is larger than this peer's segment size");
    dst = scratch;  // combined with our input in onPayload
  } else {
    // All-gather data is final: it lands in place. Our own input of that chunk was never combined (we sent it in
    // the first step), so it is saved here, before it is overwritten.
    if (inPlace_ && chunkOf(h.step, h.phase) == r_ && seg.length) {
      std::memcpy(backup_.get() + seg.offset, buf_.output + seg.offset, seg.length);
      backedUp_[seg.index] = 1;
    }
    dst = buf_.output + seg.offset;
  }
  return true;
}

void RingAllReduce::onPayload(Transport& t, int from, const FrameHeader& h, uint8_t* data) {
  Segment seg;
  findSegment(chunkOf(h.step, h.phase), h.offset, h.length, seg);  // checked in onHeader
  size_t elems = seg.length / elem_;
  if (h.phase == kReduceScatter) {
    uint8_t* dst = buf_.output + seg.offset;
    if (inPlace_) {
      // Saves the input of the segment while combining, in one pass over it.
      reduceIntoSaving(buf_.dtype, buf_.op, dst, data, backup_.get() + seg.offset, elems);
      backedUp_[seg.index] = 1;
    } else {
      reduceTo(buf_.dtype, buf_.op, dst, buf_.input + seg.offset, data, elems);
    }
    bool final = h.step == n_ - 1;
    if (final && buf_.op == ReduceOp::Avg) finishAverage(buf_.dtype, dst, elems, static_cast<uint32_t>(n_));
    if (final) queueSend(t, kAllGather, 1, seg);
    else queueSend(t, kReduceScatter, h.step + 1, seg);
  } else if (h.step < n_ - 1) {
    queueSend(t, kAllGather, h.step + 1, seg);
  }
  finishWork(t);  // after the forward above was queued, so the op cannot complete in between
}

void RingAllReduce::onFailed(const OpError&) {
  if (!inPlace_) return;
  // Put back the input bytes of every segment that was overwritten.
  uint32_t total = static_cast<uint32_t>(backedUp_.size());
  for (int c = 0; c < n_; ++c) {
    uint64_t start = chunkStart_[static_cast<size_t>(c)];
    uint64_t end = chunkStart_[static_cast<size_t>(c) + 1];
    for (uint32_t i = firstSeg_[static_cast<size_t>(c)]; i < firstSeg_[static_cast<size_t>(c) + 1] && i < total; ++i) {
      if (!backedUp_[i]) continue;
      uint64_t off = start + static_cast<uint64_t>(i - firstSeg_[static_cast<size_t>(c)]) * segBytes_;
      uint64_t len = std::min<uint64_t>(segBytes_, end - off);
      if (len) std::memcpy(buf_.output + off, backup_.get() + off, len);
    }
  }
}

}  // namespace tccl
