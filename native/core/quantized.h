// Quantized all-reduce (sum/avg of float data): a direct reduce-scatter and all-gather over the mesh of peers,
// so that every input value is quantized exactly once and every result value exactly once, whatever the number
// of peers (docs/quantization.md has the algorithm, the wire format and the error bounds).
//
//   phase 0 (contribution): peer p quantizes its input of every chunk c != p (chunk c is owned by peer c) and
//            sends it to peer c, segment by segment;
//   owner:   for each segment of its chunk, once all n-1 contributions are in, accumulates in float32 in peer
//            index order (its own input exact, the others dequantized), divides by n for avg, quantizes the
//            result once;
//   phase 1 (result): the owner sends the encoded result to every other peer; every peer, the owner included,
//            writes the dequantized result (converted to the caller's dtype), so all peers hold the same bits.
//
// Heavy work (encoding, accumulation) runs on a small pool of threads owned by this file, never on the JS
// thread; decoding results into the output runs on the reader thread that received them.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "codec.h"
#include "buffer_pool.h"
#include "dtype.h"
#include "ring.h"
#include "transport.h"

namespace tccl {

struct QuantizationParams {
  Codec codec = Codec::U8;
  uint32_t blockSize = 256;
  bool stochastic = false;
  uint64_t seed = 0;
};

class QuantizedAllReduce : public Operation {
 public:
  // buffers.dtype must be a float dtype, buffers.op Sum or Avg, codec not None (the addon checks).
  QuantizedAllReduce(const AllReduceBuffers& buffers, const QuantizationParams& q, uint32_t maxSegmentBytes);

  void prepare() override;
  void start(Transport& t) override;
  bool onHeader(Transport& t, int from, const FrameHeader& h, uint8_t* scratch, uint8_t*& dst) override;
  void onPayload(Transport& t, int from, const FrameHeader& h, uint8_t* data) override;
  void onFailed(const OpError& error) override;

  // Elements per segment for a codec and block size (a multiple of the block size for U8/U4, so that the block
  // layout inside a chunk does not depend on the segmentation).
  static uint64_t segmentElements(Codec c, uint32_t blockSize, uint32_t maxSegmentBytes);

 private:
  struct Segment {
    int chunk;
    uint64_t elem;     // first element (global)
    uint64_t elems;    // element count
    uint64_t encOff;   // byte offset of its encoded form in the whole-tensor encoded layout
    uint32_t encLen;   // encoded bytes
    uint32_t local;    // index within its chunk
  };
  enum Phase : uint8_t { kContribution = 0, kResult = 1 };

  std::shared_ptr<QuantizedAllReduce> self() { return std::static_pointer_cast<QuantizedAllReduce>(shared_from_this()); }
  uint64_t seedFor(int phase, int peer, uint32_t segment) const;
  CodecParams codecParams(uint64_t seed) const;
  // Global segment index of a frame (its header already checked).
  uint32_t segmentIndex(const FrameHeader& h) const;
  // Runs an encode or (accumulate) an accumulation on the work pool.
  void schedule(Transport& t, uint32_t segIndex, bool accumulate);
  void encodeContribution(Transport& t, uint32_t segIndex);
  void accumulateOwned(Transport& t, uint32_t segIndex);
  // Writes the decoded result of a segment into the caller's output (backing up in-place input first).
  void writeResult(const Segment& s, const uint8_t* enc);
  // Float32 view of the caller's input of a segment (converted into scratch unless the dtype is f32).
  const float* inputAsFloat(const Segment& s, std::vector<float>& scratch) const;
  bool sendFrame(Transport& t, int to, int phase, const Segment& s, const uint8_t* payload);
  void failInput(Transport& t, int peer, const Segment& s, bool result);
  std::string describeMismatch(int from, const FrameHeader& h) const;

  AllReduceBuffers buf_;
  QuantizationParams q_;
  bool inPlace_;
  size_t elem_;
  uint64_t segElems_;
  int n_ = 1;
  int r_ = 0;
  std::vector<Segment> segs_;
  std::vector<uint32_t> firstSeg_;   // n_+1: first segment index of each chunk
  std::vector<uint64_t> chunkEnc_;   // n_+1: encoded byte offset of each chunk
  BufferPool::Buffer enc_;      // whole-tensor encoded layout: our contributions (c != r), our result (c == r)
  BufferPool::Buffer results_;  // results received from other owners (same layout)
  BufferPool::Buffer staging_;  // contributions to our chunk: (n-1) slots of chunkEnc bytes
  BufferPool::Buffer backup_;   // in-place only: input bytes of each segment before it is overwritten
  std::vector<uint8_t> backedUp_;       // per segment; written once by the thread that writes that segment

  std::mutex mu_;
  std::vector<uint8_t> gotContribution_;  // [slot * ownSegs + local]
  std::vector<int> arrived_;              // per own segment: contributions received
  std::vector<uint8_t> gotResult_;        // per segment
};

}  // namespace tccl
