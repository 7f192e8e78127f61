// Point-to-point exchange: a set of byte streams sent to and received from named peers as one operation with one
// tag. Shared-state transfer is built on it (a plan decided by the master says who sends which ranges to whom).
// Each stream is split into segments striped over all connections of the link; receivers write every segment
// straight into its place in the destination buffer.
#pragma once
#include <mutex>
#include <vector>

#include "transport.h"

namespace tccl {

struct ExchangeSend {
  int to = -1;
  uint32_t stream = 0;  // id agreed by both sides
  const uint8_t* data = nullptr;
  uint64_t length = 0;
};

struct ExchangeRecv {
  int from = -1;
  uint32_t stream = 0;
  uint8_t* data = nullptr;
  uint64_t length = 0;
};

class Exchange : public Operation {
 public:
  Exchange(std::vector<ExchangeSend> sends, std::vector<ExchangeRecv> recvs, uint32_t maxSegmentBytes);

  void prepare() override;
  void start(Transport& t) override;
  bool onHeader(Transport& t, int from, const FrameHeader& h, uint8_t* scratch, uint8_t*& dst) override;
  void onPayload(Transport& t, int from, const FrameHeader& h, uint8_t* data) override;
  bool involves(int index) const override;

 private:
  uint64_t segmentsOf(uint64_t length) const { return length == 0 ? 1 : (length + segBytes_ - 1) / segBytes_; }

  std::vector<ExchangeSend> sends_;
  std::vector<ExchangeRecv> recvs_;
  uint32_t segBytes_;
  std::mutex mu_;
  std::vector<std::vector<uint8_t>> seen_;  // per recv, per segment
};

}  // namespace tccl
