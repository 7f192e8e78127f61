// A member that closes its transport: after its last operation the others still finish theirs (its end of stream
// is a departure, not a crash), and an operation it never ran fails at once with a PeerLost error that says so.
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "check.h"
#include "loopback_group.h"
#include "ring.h"
#include "socket.h"

using namespace tccl;
using tccl_test::LoopbackGroup;

namespace {

std::shared_ptr<RingAllReduce> sumOf(std::vector<float>& v) {
  return std::make_shared<RingAllReduce>(
      AllReduceBuffers{reinterpret_cast<const uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(v.data()), v.size(), DType::F32, ReduceOp::Sum},
      1 << 16);
}

void testCloseRightAfterLastOp() {
  for (int trial = 0; trial < 10; ++trial) {
    LoopbackGroup g(3, 2);
    std::vector<std::vector<float>> data(3, std::vector<float>(1 << 20));
    std::vector<std::future<OpError>> futs;
    for (int r = 0; r < 3; ++r) {
      data[static_cast<size_t>(r)].assign(1 << 20, static_cast<float>(r + 1));
      auto op = sumOf(data[static_cast<size_t>(r)]);
      op->key.tag = 3;
      Transport* t = &g[r];
      // Each member closes the moment its own operation settles, as a process that exits after its last step.
      futs.push_back(std::async(std::launch::async, [t, op] {
        OpError e = tccl_test::runOp(*t, op, 10000);
        t->close();
        return e;
      }));
    }
    for (int r = 0; r < 3; ++r) {
      OpError e = futs[static_cast<size_t>(r)].get();
      CHECK_MSG(!e, "trial %d member %d: %s", trial, r, e.message.c_str());
      CHECK_MSG(data[static_cast<size_t>(r)][12345] == 6.0f, "trial %d member %d holds the sum", trial, r);
    }
  }
}

void testOpNeverRunByADepartedMember() {
  LoopbackGroup g(2, 2);
  std::vector<float> a(1000, 1.0f), b(1000, 2.0f);
  auto first = sumOf(a), second = sumOf(b);
  auto f1 = std::async(std::launch::async, [&] { return tccl_test::runOp(g[1], second, 10000); });
  CHECK(!tccl_test::runOp(g[0], first, 10000));
  CHECK(!f1.get());
  g[1].close();
  auto later = sumOf(a);
  auto t0 = std::chrono::steady_clock::now();
  OpError e = tccl_test::runOp(g[0], later, 10000);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  CHECK_MSG(e.code == ErrorCode::PeerLost, "code %d: %s", static_cast<int>(e.code), e.message.c_str());
  CHECK_MSG(e.message.find("closed its engine") != std::string::npos, "message: %s", e.message.c_str());
  CHECK_MSG(ms < 5000, "failed after %.0f ms, not at its deadline", ms);
}

}  // namespace

int main() {
  net::initSockets();
  testCloseRightAfterLastOp();
  testOpNeverRunByADepartedMember();
  return TEST_MAIN_RESULT();
}
