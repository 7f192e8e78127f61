// Transport + ring all-reduce + exchange in one process: three transports on loopback, no Node involved.
#include <array>
#include <cmath>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "check.h"
#include "loopback_group.h"
#include "exchange.h"
#include "ring.h"
#include "socket.h"
#include "transport.h"

using namespace tccl;

namespace {

using tccl_test::runOp;
using Group = tccl_test::LoopbackGroup;

void testSumAcrossSizes() {
  for (int n : {2, 3}) {
    Group g(n);
    for (uint64_t count : {uint64_t(0), uint64_t(1), uint64_t(5), uint64_t(100003)}) {
      std::vector<std::vector<float>> data(static_cast<size_t>(n));
      for (int r = 0; r < n; ++r) {
        data[static_cast<size_t>(r)].resize(count);
        for (uint64_t i = 0; i < count; ++i) data[static_cast<size_t>(r)][i] = static_cast<float>(r + 1) * 0.5f + static_cast<float>(i % 7);
      }
      std::vector<std::future<OpError>> futs;
      for (int r = 0; r < n; ++r) {
        auto* p = data[static_cast<size_t>(r)].data();
        AllReduceBuffers b{reinterpret_cast<const uint8_t*>(p), reinterpret_cast<uint8_t*>(p), count, DType::F32, ReduceOp::Sum};
        auto op = std::make_shared<RingAllReduce>(b, 4096);
        op->key.tag = 1;
        Transport* t = g.members[static_cast<size_t>(r)].get();
        futs.push_back(std::async(std::launch::async, [t, op] { return runOp(*t, op); }));
      }
      for (auto& f : futs) CHECK(!f.get());
      bool ok = true;
      for (uint64_t i = 0; i < count; ++i) {
        float want = 0;
        for (int r = 0; r < n; ++r) want += static_cast<float>(r + 1) * 0.5f + static_cast<float>(i % 7);
        for (int r = 0; r < n; ++r) ok = ok && std::fabs(data[static_cast<size_t>(r)][i] - want) < 1e-4f;
        for (int r = 1; r < n; ++r) ok = ok && std::memcmp(&data[0][i], &data[static_cast<size_t>(r)][i], 4) == 0;
      }
      CHECK_MSG(ok, "n=%d count=%llu", n, static_cast<unsigned long long>(count));
    }
    for (auto& m : g.members) m->close();
  }
}

void testMismatchAndRestore() {
  Group g(2);
  std::vector<int32_t> a(1000, 3), b(1001, 4);
  auto opA = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<const uint8_t*>(a.data()), reinterpret_cast<uint8_t*>(a.data()), a.size(), DType::I32, ReduceOp::Sum}, 4096);
  auto opB = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<const uint8_t*>(b.data()), reinterpret_cast<uint8_t*>(b.data()), b.size(), DType::I32, ReduceOp::Sum}, 4096);
  auto fa = std::async(std::launch::async, [&] { return runOp(*g.members[0], opA); });
  auto fb = std::async(std::launch::async, [&] { return runOp(*g.members[1], opB); });
  OpError ea = fa.get(), eb = fb.get();
  CHECK(ea.code == ErrorCode::Mismatch);
  CHECK(eb.code == ErrorCode::Mismatch);
  bool intact = true;
  for (int32_t v : a) intact = intact && v == 3;
  for (int32_t v : b) intact = intact && v == 4;
  CHECK_MSG(intact, "inputs restored after a mismatch");
  for (auto& m : g.members) m->close();
}

void testExchangeAndClose() {
  Group g(3);
  std::vector<uint8_t> src(300000), dst(300000, 0);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 31);
  auto send = std::make_shared<Exchange>(std::vector<ExchangeSend>{{2, 7, src.data(), src.size()}}, std::vector<ExchangeRecv>{}, 65536);
  auto recv = std::make_shared<Exchange>(std::vector<ExchangeSend>{}, std::vector<ExchangeRecv>{{0, 7, dst.data(), dst.size()}}, 65536);
  auto idle = std::make_shared<Exchange>(std::vector<ExchangeSend>{}, std::vector<ExchangeRecv>{}, 65536);
  for (auto* op : {send.get(), recv.get(), idle.get()}) op->key.tag = 9;
  auto f0 = std::async(std::launch::async, [&] { return runOp(*g.members[0], send); });
  auto f2 = std::async(std::launch::async, [&] { return runOp(*g.members[2], recv); });
  CHECK(!runOp(*g.members[1], idle));
  CHECK(!f0.get());
  CHECK(!f2.get());
  CHECK(src == dst);
  // An operation pending when the transport closes settles with Closed.
  std::vector<float> x(10, 1.0f);
  auto pending = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<const uint8_t*>(x.data()), reinterpret_cast<uint8_t*>(x.data()), x.size(), DType::F32, ReduceOp::Sum}, 4096);
  auto fp = std::async(std::launch::async, [&] { return runOp(*g.members[0], pending, 0); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  g.members[0]->close();
  OpError e = fp.get();
  CHECK_MSG(e.code == ErrorCode::Closed, "a pending op settles with Closed, got code %d: %s", static_cast<int>(e.code), e.message.c_str());
  for (auto& m : g.members) m->close();
}

void testTicketRefused() {
  std::array<uint8_t, 16> good{}, bad{};
  good[0] = 1;
  bad[0] = 2;
  TransportOptions o;
  o.host = "127.0.0.1";
  o.connections = 1;
  Transport a(o), b(o);
  a.start();
  b.start();
  std::vector<PeerInfo> peers{{"a", "127.0.0.1", a.port()}, {"b", "127.0.0.1", b.port()}};
  a.configure(1, 0, peers, good);
  b.configure(1, 1, peers, bad);
  std::vector<float> x(4, 1.0f);
  auto op = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<const uint8_t*>(x.data()), reinterpret_cast<uint8_t*>(x.data()), x.size(), DType::F32, ReduceOp::Sum}, 4096);
  OpError e = runOp(a, op, 3000);
  CHECK_MSG(e.code == ErrorCode::Auth, "a refused ticket is an Auth error (got code %d: %s)", static_cast<int>(e.code), e.message.c_str());
  a.close();
  b.close();
}

}  // namespace

int main() {
  net::initSockets();
  testSumAcrossSizes();
  testMismatchAndRestore();
  testExchangeAndClose();
  testTicketRefused();
  return TEST_MAIN_RESULT();
}
