// Direct all-reduce for small buffers: every peer sends its whole input to every other peer and reduces all N
// inputs itself, in peer-index order, so every peer computes the same bits. One one-way network hop instead of
// the ring's 2(N-1), at the price of (N-1) x S bytes sent per peer, which only pays off for small S.
#pragma once
#include <memory>
#include <mutex>
#include <vector>

#include "ring.h"

namespace tccl {

// The automatic choice: direct when a peer sends at most 64 KiB that way. With two peers direct and ring send the
// same bytes (so up to 64 KiB is direct); with more, direct sends N/2 times the ring's bytes, so only tiny buffers
// take it. Every peer of a group decides alike: it depends only on the byte count and the group size.
constexpr uint64_t kDirectMaxBytes = 64 << 10;
// What the direct algorithm takes at most when it is asked for explicitly: its input is one frame, and it is set up
// and (possibly) reduced on the caller's thread.
constexpr uint64_t kDirectForcedMaxBytes = 1 << 20;
inline bool useDirect(uint64_t bytes, int worldSize) {
  return worldSize <= 2 ? bytes <= kDirectMaxBytes : bytes * static_cast<uint64_t>(worldSize - 1) <= kDirectMaxBytes;
}

class DirectAllReduce : public Operation {
 public:
  explicit DirectAllReduce(const AllReduceBuffers& buffers);

  void prepare() override;
  void start(Transport& t) override;
  bool onHeader(Transport& t, int from, const FrameHeader& h, uint8_t* scratch, uint8_t*& dst) override;
  void onPayload(Transport& t, int from, const FrameHeader& h, uint8_t* data) override;
  void onSucceeded() override;

 private:
  AllReduceBuffers buf_;
  size_t bytes_;
  std::unique_ptr<uint8_t[]> inputs_;  // N slots of bytes_: every peer's input, ours included (not zero-filled)
  std::vector<uint8_t> arrived_;
  std::mutex mu_;
};

}  // namespace tccl
