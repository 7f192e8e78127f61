// Ring all-reduce: reduce-scatter then all-gather around the ring of the current group, chunked into segments
// that are pipelined (a segment is forwarded as soon as it is reduced) and striped over all connections of a link.
//
// Determinism: chunk c is reduced along the ring starting at peer c (its input first, then each following
// peer's input is combined into the running value in ring order), and its final value is computed once by its
// owner (peer c-1) and copied to everyone, so every peer ends with the same bits.
#pragma once
#include <memory>
#include <string>
#include <mutex>
#include <vector>

#include "buffer_pool.h"
#include "dtype.h"
#include "transport.h"

namespace tccl {

struct AllReduceBuffers {
  const uint8_t* input = nullptr;
  uint8_t* output = nullptr;  // == input for in-place
  uint64_t count = 0;         // elements
  DType dtype = DType::F32;
  ReduceOp op = ReduceOp::Sum;
};

// The MismatchError text when a frame's header does not describe the same all-reduce as this peer's (empty when
// it does): names both peers' element count, dtype, op and quantization.
std::string allReduceMismatch(const OpKey& key, const FrameHeader& h, const std::string& sender, const std::string& self,
                              const AllReduceBuffers& mine);

class RingAllReduce : public Operation {
 public:
  RingAllReduce(const AllReduceBuffers& buffers, uint32_t maxSegmentBytes);

  void prepare() override;
  void start(Transport& t) override;
  bool onHeader(Transport& t, int from, const FrameHeader& h, uint8_t* scratch, uint8_t*& dst) override;
  void onPayload(Transport& t, int from, const FrameHeader& h, uint8_t* data) override;
  void onFailed(const OpError& error) override;

 private:
  struct Segment {
    uint64_t offset;  // bytes into the buffer
    uint32_t length;  // bytes
    uint32_t index;   // global segment index
  };
  void setupGeometry(int worldSize, int myIndex);
  int chunkOf(int step, int phase) const;
  bool findSegment(int chunk, uint64_t offset, uint32_t length, Segment& out) const;
  bool rejectFrame(Transport& t, ErrorCode code, const std::string& message);
  SendItem makeItem(int phase, int step, const Segment& seg) const;
  void queueSend(Transport& t, int phase, int step, const Segment& seg);
  std::shared_ptr<RingAllReduce> self() { return std::static_pointer_cast<RingAllReduce>(shared_from_this()); }

  AllReduceBuffers buf_;
  bool inPlace_;
  size_t elem_;
  uint32_t segBytes_;
  int n_ = 1;
  int r_ = 0;
  int right_ = 0;
  std::vector<uint64_t> chunkStart_;  // n_+1 byte offsets
  std::vector<uint32_t> firstSeg_;    // n_+1 global segment indices
  BufferPool::Buffer backup_;  // in-place only: the input of each segment before it is first overwritten

  std::mutex mu_;
  std::vector<uint8_t> received_;  // [phase * totalSegments + index]
  std::vector<uint8_t> backedUp_;
};

}  // namespace tccl
