// N transports of one group on loopback in one process, and a bounded wait for an operation: what the C++
// transport tests share.
#pragma once
#include <array>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "transport.h"

namespace tccl_test {

struct LoopbackGroup {
  std::vector<std::unique_ptr<tccl::Transport>> members;
  explicit LoopbackGroup(int n, int connections = 3, uint64_t epoch = 1, std::array<uint8_t, 16> ticket = {}) {
    std::vector<tccl::PeerInfo> peers;
    for (int i = 0; i < n; ++i) {
      tccl::TransportOptions o;
      o.host = "127.0.0.1";
      o.connections = connections;
      members.push_back(std::make_unique<tccl::Transport>(o));
      members.back()->start();
      peers.push_back({"p" + std::to_string(i), "127.0.0.1", members.back()->port()});
    }
    for (int i = 0; i < n; ++i) members[static_cast<size_t>(i)]->configure(epoch, i, peers, ticket);
  }
  ~LoopbackGroup() {
    for (auto& m : members) m->close();
  }
  tccl::Transport& operator[](int i) { return *members[static_cast<size_t>(i)]; }
};

// Submits an op; the future settles with its error (code None on success).
inline std::future<tccl::OpError> submitOp(tccl::Transport& t, std::shared_ptr<tccl::Operation> op, int timeoutMs) {
  auto done = std::make_shared<std::promise<tccl::OpError>>();
  auto fut = done->get_future();
  op->onSettled = [done](const tccl::OpError& e) { done->set_value(e); };
  t.submit(std::move(op), timeoutMs);
  return fut;
}

// Waits for a settled op, at most 30 s beyond its own deadline (a hang shows up as a test failure, not a stuck run).
inline tccl::OpError awaitOp(std::future<tccl::OpError>& fut) {
  if (fut.wait_for(std::chrono::seconds(30)) != std::future_status::ready) return {tccl::ErrorCode::Timeout, "test wait", ""};
  return fut.get();
}

// Submits an op and waits for it to settle (bounded).
inline tccl::OpError runOp(tccl::Transport& t, std::shared_ptr<tccl::Operation> op, int timeoutMs = 10000) {
  auto fut = submitOp(t, std::move(op), timeoutMs);
  return awaitOp(fut);
}

}  // namespace tccl_test
