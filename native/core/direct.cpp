#include "direct.h"

#include <cstring>
#include <string>

#include "reduce.h"

namespace tccl {

namespace {
constexpr uint8_t kDirectPhase = 3;
}

DirectAllReduce::DirectAllReduce(const AllReduceBuffers& buffers)
    : buf_(buffers), bytes_(buffers.count * dtypeSize(buffers.dtype)) {}

void DirectAllReduce::prepare() {
  inputs_.reset(new uint8_t[static_cast<size_t>(worldSize) * bytes_ + 1]);
  arrived_.assign(static_cast<size_t>(worldSize), 0);
  arrived_[static_cast<size_t>(myIndex)] = 1;
  expectWork(static_cast<uint64_t>(worldSize - 1));  // one input from every other peer
  // Our own input goes into its slot now: the caller's buffer is then only written once, at the end.
  if (bytes_) std::memcpy(inputs_.get() + static_cast<size_t>(myIndex) * bytes_, buf_.input, bytes_);
}

void DirectAllReduce::start(Transport& t) {
  const uint8_t* mine = inputs_.get() + static_cast<size_t>(myIndex) * bytes_;
  for (int p = 0; p < worldSize; ++p) {
    if (p == myIndex) continue;
    SendItem item;
    item.header.type = FrameType::Data;
    item.header.dtype = static_cast<uint8_t>(buf_.dtype);
    item.header.op = static_cast<uint8_t>(buf_.op);
    item.header.phase = kDirectPhase;
    item.header.count = buf_.count;
    item.header.length = static_cast<uint32_t>(bytes_);
    item.payload = mine;
    if (!t.send(p, std::move(item), shared_from_this())) {
      const std::string& who = peerIds[static_cast<size_t>(p)];
      t.fail(shared_from_this(), {ErrorCode::PeerLost, "the link to " + who + " is down", who}, false);
      return;
    }
  }
}

bool DirectAllReduce::onHeader(Transport& t, int from, const FrameHeader& h, uint8_t*, uint8_t*& dst) {
  auto reject = [&](ErrorCode code, const std::string& msg) {
    t.fail(shared_from_this(), {code, msg, ""}, true);
    return false;
  };
  const std::string& who = peerIds[static_cast<size_t>(from)];
  std::string mismatch = allReduceMismatch(key, h, who, peerIds[static_cast<size_t>(myIndex)], buf_);
  if (!mismatch.empty()) return reject(ErrorCode::Mismatch, mismatch);
  if (h.phase != kDirectPhase) {
    return reject(ErrorCode::Mismatch, "peers use different all-reduce algorithms for tag " + std::to_string(key.tag) + ": " + who +
                                           " does not use the direct algorithm; pass the same \"algorithm\" option on every peer");
  }
  if (h.length != bytes_) return reject(ErrorCode::Protocol, "all-reduce frame from " + who + " has the wrong length");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (arrived_[static_cast<size_t>(from)]) return reject(ErrorCode::Protocol, "duplicate all-reduce frame from " + who);
    arrived_[static_cast<size_t>(from)] = 1;
  }
  dst = inputs_.get() + static_cast<size_t>(from) * bytes_;
  return true;
}

void DirectAllReduce::onPayload(Transport& t, int, const FrameHeader&, uint8_t*) { finishWork(t); }

void DirectAllReduce::onSucceeded() {
  // Runs once, when every input is in and our own was sent, and the op can no longer fail: the same sequence of
  // calls on every peer, ((x0 op x1) op x2) ..., then one division for avg; only now is the caller's buffer written.
  if (!bytes_) return;
  uint8_t* acc = inputs_.get();
  for (int p = 1; p < worldSize; ++p) reduceInto(buf_.dtype, buf_.op, acc, inputs_.get() + static_cast<size_t>(p) * bytes_, buf_.count);
  if (buf_.op == ReduceOp::Avg) finishAverage(buf_.dtype, acc, buf_.count, static_cast<uint32_t>(worldSize));
  std::memcpy(buf_.output, acc, bytes_);
}

}  // namespace tccl
