#include "quantized.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "reduce.h"

namespace tccl {

namespace {

// A small process-wide pool for the CPU work of quantized operations (encode, accumulate), so that neither the
// JS thread nor the transport's single service thread carries it. Two queues: accumulations first (they unblock
// the other peers), then encodes. Never destroyed: its threads may outlive static destruction at exit.
class WorkPool {
 public:
  static WorkPool& instance() {
    static WorkPool* pool = new WorkPool();
    return *pool;
  }
  void submit(std::function<void()> task, bool urgent) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      (urgent ? urgent_ : normal_).push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  WorkPool() {
    unsigned hw = std::thread::hardware_concurrency();
    unsigned n = std::clamp(hw == 0 ? 2u : hw, 1u, 4u);
    for (unsigned i = 0; i < n; ++i) std::thread([this] { loop(); }).detach();
  }
  void loop() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !urgent_.empty() || !normal_.empty(); });
        auto& q = urgent_.empty() ? normal_ : urgent_;
        task = std::move(q.front());
        q.pop_front();
      }
      task();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> urgent_, normal_;
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::vector<float>& scratch(std::vector<float>& v, uint64_t n) {
  if (v.size() < n) v.resize(static_cast<size_t>(n));
  return v;
}

bool allFinite(const float* x, uint64_t n, uint64_t& bad) {
  for (uint64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      bad = i;
      return false;
    }
  }
  return true;
}

// The names users pass in JS (lib/engine.ts), for messages.
const char* codecLabel(unsigned c) {
  switch (c) {
    case 1: return "uint8";
    case 2: return "uint4";
    case 3: return "float16";
    case 4: return "bfloat16";
    default: return "an unknown codec";
  }
}

}  // namespace

uint64_t QuantizedAllReduce::segmentElements(Codec c, uint32_t blockSize, uint32_t maxSegmentBytes) {
  uint64_t target = std::max<uint32_t>(maxSegmentBytes, 64);
  uint64_t bs = std::max<uint32_t>(blockSize, 1);
  switch (c) {
    case Codec::U8: return std::max<uint64_t>(1, target / (bs + 8)) * bs;
    case Codec::U4: return std::max<uint64_t>(1, target / ((bs + 1) / 2 + 8)) * bs;
    case Codec::F16:
    case Codec::BF16: return target / 2;
    case Codec::None: break;
  }
  return target / 4;
}

QuantizedAllReduce::QuantizedAllReduce(const AllReduceBuffers& buffers, const QuantizationParams& q, uint32_t maxSegmentBytes)
    : buf_(buffers), q_(q), inPlace_(buffers.input == buffers.output), elem_(dtypeSize(buffers.dtype)) {
  if (q_.codec != Codec::U8 && q_.codec != Codec::U4) q_.blockSize = 0;  // casts have no blocks
  segElems_ = segmentElements(q_.codec, q_.blockSize, maxSegmentBytes);
}

void QuantizedAllReduce::prepare() {
  n_ = worldSize;
  r_ = myIndex;
  segs_.clear();
  firstSeg_.assign(static_cast<size_t>(n_) + 1, 0);
  chunkEnc_.assign(static_cast<size_t>(n_) + 1, 0);
  uint64_t enc = 0;
  for (int c = 0; c < n_; ++c) {
    uint64_t start = buf_.count * static_cast<uint64_t>(c) / static_cast<uint64_t>(n_);
    uint64_t end = buf_.count * static_cast<uint64_t>(c + 1) / static_cast<uint64_t>(n_);
    firstSeg_[static_cast<size_t>(c)] = static_cast<uint32_t>(segs_.size());
    chunkEnc_[static_cast<size_t>(c)] = enc;
    uint32_t local = 0;
    // An empty chunk still travels as one empty segment, so every peer sees a header to check.
    uint64_t e = start;
    do {
      uint64_t m = std::min(segElems_, end - e);
      uint32_t len = static_cast<uint32_t>(encodedSize(q_.codec, static_cast<size_t>(m), q_.blockSize));
      segs_.push_back(Segment{c, e, m, enc, len, local++});
      enc += len;
      e += m;
    } while (e < end);
  }
  firstSeg_[static_cast<size_t>(n_)] = static_cast<uint32_t>(segs_.size());
  chunkEnc_[static_cast<size_t>(n_)] = enc;
  uint32_t ownSegs = firstSeg_[static_cast<size_t>(r_) + 1] - firstSeg_[static_cast<size_t>(r_)];
  uint64_t ownEnc = chunkEnc_[static_cast<size_t>(r_) + 1] - chunkEnc_[static_cast<size_t>(r_)];
  // Uninitialized allocations: pages are only touched when written.
  enc_ = BufferPool::acquire(enc + 1);
  results_ = BufferPool::acquire(n_ > 1 ? enc + 1 : 1);
  staging_ = BufferPool::acquire(static_cast<size_t>(n_ - 1) * ownEnc + 1);
  if (inPlace_) {
    backup_ = BufferPool::acquire(buf_.count * elem_ + 1);
    backedUp_.assign(segs_.size(), 0);
  }
  gotContribution_.assign(static_cast<size_t>(n_ - 1) * ownSegs, 0);
  arrived_.assign(ownSegs, 0);
  gotResult_.assign(segs_.size(), 0);
  uint64_t others = segs_.size() - ownSegs;
  expectWork(2 * others + ownSegs);  // encode + receive result per foreign segment; accumulate per own segment
}

uint64_t QuantizedAllReduce::seedFor(int phase, int peer, uint32_t segment) const {
  // Distinct per operation (tag, seq), phase, encoding peer and segment, and the same on every peer.
  uint64_t h = splitmix64(q_.seed);
  h = splitmix64(h ^ key.tag);
  h = splitmix64(h ^ (static_cast<uint64_t>(key.seq) << 8 | static_cast<uint64_t>(phase)));
  h = splitmix64(h ^ static_cast<uint64_t>(peer));
  return splitmix64(h ^ segment);
}

CodecParams QuantizedAllReduce::codecParams(uint64_t seed) const {
  CodecParams p;
  p.blockSize = q_.blockSize;
  p.stochastic = q_.stochastic;
  p.seed = seed;
  return p;
}

const float* QuantizedAllReduce::inputAsFloat(const Segment& s, std::vector<float>& tmp) const {
  const uint8_t* src = buf_.input + s.elem * elem_;
  switch (buf_.dtype) {
    case DType::F32: return reinterpret_cast<const float*>(src);
    case DType::F64: {
      scratch(tmp, s.elems);
      const double* d = reinterpret_cast<const double*>(src);
      for (uint64_t i = 0; i < s.elems; ++i) tmp[i] = static_cast<float>(d[i]);
      return tmp.data();
    }
    case DType::F16:
      halfToFloatArray(reinterpret_cast<const uint16_t*>(src), scratch(tmp, s.elems).data(), s.elems);
      return tmp.data();
    case DType::BF16:
      bfloat16ToFloatArray(reinterpret_cast<const uint16_t*>(src), scratch(tmp, s.elems).data(), s.elems);
      return tmp.data();
    default: return nullptr;  // not reachable: the addon only builds this op for float dtypes
  }
}

bool QuantizedAllReduce::sendFrame(Transport& t, int to, int phase, const Segment& s, const uint8_t* payload) {
  SendItem item;
  item.header.type = FrameType::Data;
  item.header.dtype = static_cast<uint8_t>(buf_.dtype);
  item.header.op = static_cast<uint8_t>(buf_.op);
  item.header.phase = static_cast<uint8_t>(phase);
  item.header.step = static_cast<uint16_t>(s.chunk);
  item.header.codec = static_cast<uint16_t>(q_.codec);
  item.header.count = buf_.count;
  item.header.offset = s.elem;
  item.header.length = s.encLen;
  item.header.aux = q_.blockSize;
  item.payload = payload;
  if (!t.send(to, std::move(item), shared_from_this())) {
    t.fail(shared_from_this(), {ErrorCode::PeerLost, "the link to " + peerIds[to] + " is down", peerIds[to]}, false);
    return false;
  }
  return true;
}

void QuantizedAllReduce::failInput(Transport& t, int peer, const Segment& s, bool result) {
  std::vector<float> tmp;
  const float* x = inputAsFloat(s, tmp);
  uint64_t bad = 0;
  std::string tag = std::to_string(key.tag);
  std::string msg;
  if (!allFinite(x, s.elems, bad)) {
    msg = "the input of " + peerIds[peer] + " to the quantized all-reduce (tag " + tag + ") holds " +
          (std::isnan(x[bad]) ? "NaN" : "Inf") + " at element " + std::to_string(s.elem + bad) +
          ": quantization needs finite values";
  } else if (!result) {
    msg = "the input of " + peerIds[peer] + " to the quantized all-reduce (tag " + tag + ") holds a value in elements " +
          std::to_string(s.elem) + ".." + std::to_string(s.elem + s.elems) + " that the " + codecLabel(static_cast<unsigned>(q_.codec)) +
          " codec cannot represent (beyond its range or float32's)";
  } else {
    msg = "the " + std::string(reduceOpName(buf_.op)) + " of elements " + std::to_string(s.elem) + ".." +
          std::to_string(s.elem + s.elems) + " in the quantized all-reduce (tag " + tag + "), reduced by " + peerIds[peer] +
          ", overflows what the " + codecLabel(static_cast<unsigned>(q_.codec)) + " codec can represent";
  }
  t.fail(shared_from_this(), {ErrorCode::InvalidArgument, msg, ""}, true);
}

void QuantizedAllReduce::writeResult(const Segment& s, const uint8_t* enc) {
  if (s.elems == 0) return;
  size_t g = static_cast<size_t>(&s - segs_.data());
  uint8_t* dst = buf_.output + s.elem * elem_;
  if (inPlace_ && !backedUp_[g]) {
    std::memcpy(backup_.get() + s.elem * elem_, dst, s.elems * elem_);
    backedUp_[g] = 1;
  }
  if (buf_.dtype == DType::F32) {
    decode(q_.codec, enc, s.elems, q_.blockSize, reinterpret_cast<float*>(dst));
    return;
  }
  thread_local std::vector<float> tmp;
  float* f = scratch(tmp, s.elems).data();
  decode(q_.codec, enc, s.elems, q_.blockSize, f);
  switch (buf_.dtype) {
    case DType::F64: {
      double* d = reinterpret_cast<double*>(dst);
      for (uint64_t i = 0; i < s.elems; ++i) d[i] = static_cast<double>(f[i]);
      break;
    }
    case DType::F16: floatToHalfArray(f, reinterpret_cast<uint16_t*>(dst), s.elems); break;
    case DType::BF16: floatToBFloat16Array(f, reinterpret_cast<uint16_t*>(dst), s.elems); break;
    default: break;
  }
}

void QuantizedAllReduce::encodeContribution(Transport& t, uint32_t g) {
  const Segment& s = segs_[g];
  thread_local std::vector<float> tmp;
  const float* src = inputAsFloat(s, tmp);
  uint8_t* out = enc_.get() + s.encOff;
  if (!encode(q_.codec, src, s.elems, codecParams(seedFor(kContribution, r_, g)), out)) {
    failInput(t, r_, s, false);
    return;
  }
  if (!sendFrame(t, s.chunk, kContribution, s, out)) return;
  finishWork(t);
}

void QuantizedAllReduce::accumulateOwned(Transport& t, uint32_t g) {
  const Segment& s = segs_[g];
  thread_local std::vector<float> accV, tmp;
  float* acc = scratch(accV, std::max<uint64_t>(s.elems, 1)).data();
  uint64_t ownEnc = chunkEnc_[static_cast<size_t>(r_) + 1] - chunkEnc_[static_cast<size_t>(r_)];
  uint64_t within = s.encOff - chunkEnc_[static_cast<size_t>(r_)];
  // Fixed order (peer index), so the result does not depend on arrival order.
  for (int p = 0; p < n_; ++p) {
    if (p == r_) {
      const float* own = inputAsFloat(s, tmp);
      if (p == 0) std::memcpy(acc, own, s.elems * sizeof(float));
      else reduceInto(DType::F32, ReduceOp::Sum, acc, own, s.elems);
    } else {
      size_t slot = static_cast<size_t>(p < r_ ? p : p - 1);
      const uint8_t* in = staging_.get() + slot * ownEnc + within;
      if (p == 0) decode(q_.codec, in, s.elems, q_.blockSize, acc);
      else decodeAccumulate(q_.codec, in, s.elems, q_.blockSize, acc);
    }
  }
  if (buf_.op == ReduceOp::Avg) finishAverage(DType::F32, acc, s.elems, static_cast<uint32_t>(n_));
  uint8_t* out = enc_.get() + s.encOff;
  if (!encode(q_.codec, acc, s.elems, codecParams(seedFor(kResult, r_, g)), out)) {
    failInput(t, r_, s, true);
    return;
  }
  for (int p = 0; p < n_; ++p) {
    if (p != r_ && !sendFrame(t, p, kResult, s, out)) return;
  }
  writeResult(s, out);
  finishWork(t);
}

void QuantizedAllReduce::start(Transport& t) {
  if (n_ == 1) {
    for (uint32_t g = firstSeg_[0]; g < firstSeg_[1]; ++g) schedule(t, g, true);
    return;
  }
  // Interleave destinations so that every owner starts receiving at once.
  uint32_t most = 0;
  for (int c = 0; c < n_; ++c) most = std::max(most, firstSeg_[static_cast<size_t>(c) + 1] - firstSeg_[static_cast<size_t>(c)]);
  for (uint32_t k = 0; k < most; ++k) {
    for (int d = 1; d < n_; ++d) {
      int c = (r_ + d) % n_;
      uint32_t g = firstSeg_[static_cast<size_t>(c)] + k;
      if (g < firstSeg_[static_cast<size_t>(c) + 1]) schedule(t, g, false);
    }
  }
}

std::string QuantizedAllReduce::describeMismatch(int from, const FrameHeader& h) const {
  auto side = [](const std::string& who, uint64_t count, unsigned dtype, unsigned op, unsigned codec, uint32_t bs) {
    std::string s = who + " has " + std::to_string(count) + " x " + (isValidDType(dtype) ? dtypeName(static_cast<DType>(dtype)) : "?") +
                    " " + (isValidReduceOp(op) ? reduceOpName(static_cast<ReduceOp>(op)) : "?");
    if (codec == 0) return s + " without quantization";
    s += std::string(" quantized with ") + codecLabel(codec);
    if (codec == static_cast<unsigned>(Codec::U8) || codec == static_cast<unsigned>(Codec::U4)) s += " (block size " + std::to_string(bs) + ")";
    return s;
  };
  return "peers disagree on quantized all-reduce tag " + std::to_string(key.tag) + ": " +
         side(peerIds[from], h.count, h.dtype, h.op, h.codec, h.aux) + ", " +
         side(peerIds[r_], buf_.count, static_cast<unsigned>(buf_.dtype), static_cast<unsigned>(buf_.op),
              static_cast<unsigned>(q_.codec), q_.blockSize) +
         ": every peer must pass the same element count, dtype, op and quantization (codec, block size) for the same tag";
}

uint32_t QuantizedAllReduce::segmentIndex(const FrameHeader& h) const {
  uint32_t first = firstSeg_[static_cast<size_t>(h.step)];
  return first + static_cast<uint32_t>((h.offset - segs_[first].elem) / segElems_);
}

bool QuantizedAllReduce::onHeader(Transport& t, int from, const FrameHeader& h, uint8_t*, uint8_t*& dst) {
  auto reject = [&](ErrorCode code, const std::string& msg) {
    t.fail(shared_from_this(), {code, msg, ""}, true);
    return false;
  };
  if (h.count != buf_.count || h.dtype != static_cast<uint8_t>(buf_.dtype) || h.op != static_cast<uint8_t>(buf_.op) ||
      h.codec != static_cast<uint16_t>(q_.codec) || h.aux != q_.blockSize) {
    return reject(ErrorCode::Mismatch, describeMismatch(from, h));
  }
  int c = h.step;
  if (from == r_ || c >= n_ || (h.phase == kContribution && c != r_) || (h.phase == kResult && c != from) || h.phase > kResult) {
    return reject(ErrorCode::Protocol, "unexpected quantized all-reduce frame from " + peerIds[from]);
  }
  // Locate the segment: chunk c, element offset h.offset.
  uint32_t first = firstSeg_[static_cast<size_t>(c)];
  uint32_t nseg = firstSeg_[static_cast<size_t>(c) + 1] - first;
  uint64_t start = segs_[first].elem;
  uint64_t rel = h.offset - start;
  if (h.offset < start || rel % segElems_ != 0 || rel / segElems_ >= nseg || segs_[first + rel / segElems_].encLen != h.length) {
    return reject(ErrorCode::Mismatch, "quantized all-reduce tag " + std::to_string(key.tag) + ": the segment layout of " + peerIds[from] +
                                           " differs from " + peerIds[r_] + "'s (different versions or segment sizes?)");
  }
  const Segment& s = segs_[segmentIndex(h)];
  std::lock_guard<std::mutex> lock(mu_);
  if (h.phase == kContribution) {
    size_t slot = static_cast<size_t>(from < r_ ? from : from - 1);
    uint8_t& seen = gotContribution_[slot * nseg + s.local];
    if (seen) return reject(ErrorCode::Protocol, "duplicate quantized all-reduce frame from " + peerIds[from]);
    seen = 1;
    uint64_t ownEnc = chunkEnc_[static_cast<size_t>(r_) + 1] - chunkEnc_[static_cast<size_t>(r_)];
    dst = staging_.get() + slot * ownEnc + (s.encOff - chunkEnc_[static_cast<size_t>(r_)]);
  } else {
    if (gotResult_[segmentIndex(h)]) return reject(ErrorCode::Protocol, "duplicate quantized all-reduce frame from " + peerIds[from]);
    gotResult_[segmentIndex(h)] = 1;
    dst = results_.get() + s.encOff;
  }
  return true;
}

void QuantizedAllReduce::onPayload(Transport& t, int, const FrameHeader& h, uint8_t* data) {
  uint32_t g = segmentIndex(h);
  if (h.phase == kContribution) {
    bool ready;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready = ++arrived_[segs_[g].local] == n_ - 1;
    }
    if (ready) schedule(t, g, true);
    return;
  }
  writeResult(segs_[g], data);
  finishWork(t);
}

void QuantizedAllReduce::schedule(Transport& t, uint32_t g, bool accumulate) {
  auto me = self();
  activeTransfers++;  // released when the task ends; failure waits for it
  WorkPool::instance().submit(
      [me, &t, g, accumulate] {
        if (!me->isDone()) {
          try {
            if (accumulate) me->accumulateOwned(t, g);
            else me->encodeContribution(t, g);
          } catch (const std::exception& e) {
            // Failing the operation allocates its message: under memory exhaustion that throws too, and nothing
            // may escape a pool thread (std::terminate); the operation then fails at its progress deadline.
            try {
              t.fail(me, {ErrorCode::Protocol, std::string("quantized all-reduce failed: ") + e.what(), ""}, true);
            } catch (...) {
              std::fputs("tccl data plane: quantized all-reduce failed (out of memory to report it)\n", stderr);
            }
          }
        }
        me->releaseTransfer();
      },
      accumulate);
}

void QuantizedAllReduce::onFailed(const OpError&) {
  if (!inPlace_) return;
  for (size_t g = 0; g < segs_.size() && g < backedUp_.size(); ++g) {
    if (!backedUp_[g]) continue;
    const Segment& s = segs_[g];
    std::memcpy(buf_.output + s.elem * elem_, backup_.get() + s.elem * elem_, s.elems * elem_);
  }
}

}  // namespace tccl
