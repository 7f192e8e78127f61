// Ring collectives other than all-reduce: all-gather, reduce-scatter and broadcast. Each moves chunks of the
// buffer around the ring of the op's epoch, segmented and pipelined like ring.h (a segment is forwarded as soon
// as it arrives), and striped over every connection of a link.
//
//  - All-gather: peer r contributes chunk r (its input); chunk c travels r -> r+1 -> ... and lands in place in
//    every output. Chunk sizes may differ per peer (`chunkCounts`).
//  - Reduce-scatter: chunk c is reduced along the ring starting at peer c+1 (its input first, then each following
//    peer's input combined into the running value) and ends at peer c, its owner, in the output at the chunk's
//    offset. The same phase as the ring all-reduce, rotated by one so peer r owns chunk r.
//  - Broadcast: the root's input flows root -> root+1 -> ... (the last peer before the root forwards nothing).
//
// Every frame carries the op's kind (phase 4 + kind), dtype, op and total element count; a peer whose frame
// describes a different collective fails the op on every peer with a Mismatch naming both sides.
// The output never overlaps the input, so a failure leaves the input as it was (the caller restores nothing).
#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dtype.h"
#include "transport.h"

namespace tccl {

enum class CollectiveKind : uint8_t { AllGather = 0, ReduceScatter = 1, Broadcast = 2 };
const char* collectiveName(CollectiveKind kind);
constexpr uint8_t kCollectivePhaseBase = 4;

struct CollectiveSpec {
  CollectiveKind kind = CollectiveKind::AllGather;
  const uint8_t* input = nullptr;  // all-gather: this peer's chunk; others: the whole buffer (root only for broadcast)
  uint8_t* output = nullptr;       // the whole buffer (all-gather: every chunk; reduce-scatter: chunk r is the result)
  uint64_t count = 0;              // elements of the whole buffer
  DType dtype = DType::F32;
  ReduceOp op = ReduceOp::Sum;     // reduce-scatter only
  int root = 0;                    // broadcast only: index of the root in the op's epoch
  // All-gather only: elements of each peer's chunk, in ring order (empty: count split evenly). Must sum to count.
  std::vector<uint64_t> chunkCounts;
};

// Chooses and builds the algorithm for a collective (today one ring algorithm per kind). Throws
// std::invalid_argument when the spec cannot describe a valid op (for the glue to report).
std::shared_ptr<Operation> makeCollective(const CollectiveSpec& spec, uint32_t maxSegmentBytes);

class RingChain : public Operation {
 public:
  RingChain(const CollectiveSpec& spec, uint32_t maxSegmentBytes);

  void prepare() override;
  void start(Transport& t) override;
  bool onHeader(Transport& t, int from, const FrameHeader& h, uint8_t* scratch, uint8_t*& dst) override;
  void onPayload(Transport& t, int from, const FrameHeader& h, uint8_t* data) override;

 private:
  struct Segment {
    uint64_t offset;  // bytes into the output
    uint32_t length;
    uint32_t index;   // global segment index
  };
  int chunks() const { return spec_.kind == CollectiveKind::Broadcast ? 1 : n_; }
  // The chunk a frame of ring step `step` (1..n-1) carries to this peer; -1 when this peer receives nothing then.
  int chunkAt(int step) const;
  bool findSegment(int chunk, uint64_t offset, uint32_t length, Segment& out) const;
  SendItem makeItem(int step, const Segment& seg, const uint8_t* base) const;
  void sendChunk(Transport& t, int chunk, int step, const uint8_t* base, uint64_t baseOffset);
  void sendChunkSegment(Transport& t, int step, const Segment& seg, const uint8_t* payload);
  bool reject(Transport& t, ErrorCode code, const std::string& message);
  std::string mismatch(const FrameHeader& h, int from) const;

  CollectiveSpec spec_;
  size_t elem_;
  uint32_t segBytes_;
  int n_ = 1;
  int r_ = 0;
  int right_ = 0;
  std::vector<uint64_t> chunkStart_;  // chunks()+1 byte offsets into the output
  std::vector<uint32_t> firstSeg_;    // chunks()+1 global segment indices
  std::mutex mu_;
  std::vector<uint8_t> received_;
};

}  // namespace tccl
