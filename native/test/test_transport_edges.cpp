// Edges of the transport found in review, each driven by a hand-made peer on a raw socket: a re-form while a
// frame for a not-yet-started op is half read, frames already read when the read budget runs out, a half-arrived
// header (no busy loop), frames of a failed op (never written after it settled, no connection dropped), an
// abort sent while the link to a peer is still being dialled, and a listener that installs a new epoch late.
#include <chrono>
#include <cstdlib>
#include <future>
#include <thread>

#ifdef _WIN32
#ifndef NOMINMAX
#define NOMINMAX
#endif
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#else
#include <sys/resource.h>
#endif

#include "check.h"
#include "direct.h"
#include "exchange.h"
#include "loopback_group.h"
#include "ring.h"
#include "socket.h"
#include "transport_internal.h"

using namespace tccl;

namespace {

// Connects to `port` as member `from` of `epoch` and says hello (the handshake of handshake.cpp).
net::Socket fakePeer(uint16_t port, uint64_t epoch, uint32_t from = 1, uint32_t to = 0) {
  std::string err;
  net::Socket s = net::Socket::connectTo("127.0.0.1", port, 2000, err);
  uint8_t h[64] = {0};
  put<uint32_t>(h, 0x4C434354);
  put<uint16_t>(h + 4, 2);
  h[6] = 1;
  put<uint64_t>(h + 8, epoch);
  put<uint32_t>(h + 16, from);
  put<uint32_t>(h + 20, to);
  uint8_t r[8] = {0};
  bool ok = s.sendAll(h, 64) && s.recvAll(r, 8) && get<uint32_t>(r + 4) == 0;
  CHECK_MSG(ok, "the fake peer's hello was accepted (epoch %llu)", static_cast<unsigned long long>(epoch));
  return s;
}

void appendFrame(std::vector<uint8_t>& out, const FrameHeader& h, uint8_t fill = 7) {
  size_t at = out.size();
  out.resize(at + FrameHeader::kWireSize + h.length, fill);
  h.encode(out.data() + at);
}

FrameHeader dataFrame(uint64_t tag, uint32_t seq, uint32_t length) {
  FrameHeader h;
  h.type = FrameType::Data;
  h.tag = tag;
  h.seq = seq;
  h.length = length;
  return h;
}

std::unique_ptr<Transport> lone(TransportOptions o = {}) {
  o.host = "127.0.0.1";
  auto t = std::make_unique<Transport>(o);
  t->start();
  return t;
}

// Peer b of {a, b} exists only as the fake peer: ops of `a` that need it time out unless it sends.
std::vector<PeerInfo> withFake(const Transport& a) { return {{"a", "127.0.0.1", a.port()}, {"b", "127.0.0.1", 1}}; }

void testReformWhileEarlyFrameHalfRead() {
  TransportOptions o;
  o.connections = 1;
  auto a = lone(o);
  a->configure(1, 0, withFake(*a), {});
  net::Socket c1 = fakePeer(a->port(), 1);
  std::vector<uint8_t> bytes;
  appendFrame(bytes, dataFrame(7, 3, 200000));  // a frame for an op `a` has not started ...
  c1.sendAll(bytes.data(), 1000);               // ... of which only a part arrives
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  a->configure(2, 0, withFake(*a), {});  // the group is re-formed: that connection and its half frame go
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  net::Socket c2 = fakePeer(a->port(), 2);
  bytes.clear();
  appendFrame(bytes, dataFrame(7, 5, 100));  // a small early frame in the new epoch must still be accepted
  c2.sendAll(bytes.data(), bytes.size());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::vector<float> x(4, 1.0f);
  auto op = std::make_shared<DirectAllReduce>(AllReduceBuffers{reinterpret_cast<uint8_t*>(x.data()), reinterpret_cast<uint8_t*>(x.data()), 4});
  op->key.tag = 9;
  OpError e = tccl_test::runOp(*a, op, 1500);
  CHECK_MSG(e.code == ErrorCode::Timeout, "the new epoch still works (the fake peer never sends for tag 9, so a timeout): got %s: %s",
            errorCodeName(e.code), e.message.c_str());
}

// Takes one frame and holds the I/O thread in onPayload for 500 ms (a slow reduction on a busy core).
struct SlowOp : Operation {
  void prepare() override { expectWork(1); }
  void start(Transport&) override {}
  bool onHeader(Transport&, int, const FrameHeader&, uint8_t* scratch, uint8_t*& dst) override {
    dst = scratch;
    return true;
  }
  void onPayload(Transport& t, int, const FrameHeader&, uint8_t*) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    finishWork(t);
  }
};

void testFramesReadPastTheBudget() {
  TransportOptions o;
  o.connections = 1;
  o.ioThreads = 1;
  o.maxSegmentBytes = 4096;
  auto a = lone(o);
  a->configure(1, 0, withFake(*a), {});
  net::Socket s = fakePeer(a->port(), 1);
  auto slow = std::make_shared<SlowOp>();
  slow->key.tag = 1;
  auto slowDone = tccl_test::submitOp(*a, slow, 10000);
  // 4 MiB - 64 bytes of exchange frames: the last read of the I/O thread's budget lands in its buffer.
  const uint64_t total = 1012 * 4096 + 464;
  std::vector<uint8_t> dst(total);
  auto ex = std::make_shared<Exchange>(std::vector<ExchangeSend>{}, std::vector<ExchangeRecv>{{1, 0, dst.data(), total}}, 4096);
  ex->key.tag = 2;
  auto exDone = tccl_test::submitOp(*a, ex, 3000);
  std::vector<uint8_t> first, rest;
  appendFrame(first, dataFrame(1, 0, 16));
  for (uint64_t off = 0; off < total; off += 4096) {
    FrameHeader h = dataFrame(2, 0, static_cast<uint32_t>(std::min<uint64_t>(4096, total - off)));
    h.phase = 2;  // the exchange's frames
    h.count = total;
    h.offset = off;
    appendFrame(rest, h);
  }
  s.sendAll(first.data(), first.size());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the I/O thread is in SlowOp::onPayload
  s.sendAll(rest.data(), rest.size());
  OpError e1 = tccl_test::awaitOp(slowDone), e2 = tccl_test::awaitOp(exDone);
  CHECK(!e1);
  CHECK_MSG(!e2, "frames already read are handled although the read budget ran out: %s", e2.message.c_str());
}

double cpuSeconds() {
#ifdef _WIN32
  FILETIME created, exited, kernel, user;
  GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user);
  auto ticks = [](const FILETIME& f) { return (static_cast<uint64_t>(f.dwHighDateTime) << 32) | f.dwLowDateTime; };
  return static_cast<double>(ticks(kernel) + ticks(user)) / 1e7;
#else
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
#endif
}

void testHalfArrivedHeaderDoesNotSpin() {
  auto a = lone();
  a->configure(1, 0, withFake(*a), {});
  net::Socket s = fakePeer(a->port(), 1);
  std::vector<uint8_t> bytes;
  appendFrame(bytes, dataFrame(1, 0, 0));
  s.sendAll(bytes.data(), 20);  // 20 of the 48 header bytes, then a pause (a slow link, a frozen peer)
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  double c0 = cpuSeconds();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  double used = cpuSeconds() - c0;
  CHECK_MSG(used < 0.2, "the I/O thread waits for the rest of a header without spinning (%.3f CPU s in 1 s)", used);
}

void testFailedOpLetsGoOfItsFrames() {
  // An aborted ring all-reduce of 16 MiB between two transports: no byte of its memory goes out after it settled,
  // and the group still works (no connection was dropped to cut a frame short).
  tccl_test::LoopbackGroup g(2, 2);
  const size_t n = 4 << 20;
  std::vector<std::vector<float>> data(2, std::vector<float>(n, 1.0f));
  std::vector<std::shared_ptr<RingAllReduce>> ops;
  std::vector<std::future<OpError>> settled;
  std::vector<uint64_t> sentAtSettle(2);
  for (int i = 0; i < 2; ++i) {
    auto* p = reinterpret_cast<uint8_t*>(data[static_cast<size_t>(i)].data());
    auto op = std::make_shared<RingAllReduce>(AllReduceBuffers{p, p, n}, 256 << 10);
    op->key.tag = 77;
    auto done = std::make_shared<std::promise<OpError>>();
    settled.push_back(done->get_future());
    auto* raw = op.get();
    uint64_t* at = &sentAtSettle[static_cast<size_t>(i)];
    op->onSettled = [done, raw, at](const OpError& e) {
      *at = raw->bytesSent.load();
      done->set_value(e);
    };
    ops.push_back(op);
  }
  g[1].submit(ops[1], 10000);
  g[0].submit(ops[0], 10000);
  g[0].abortTag(77, "test abort");
  for (int i = 0; i < 2; ++i) {
    OpError e = tccl_test::awaitOp(settled[static_cast<size_t>(i)]);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    uint64_t later = ops[static_cast<size_t>(i)]->bytesSent.load();
    CHECK_MSG(e.code == ErrorCode::Aborted || !e, "peer %d: %s", i, e.message.c_str());
    CHECK_MSG(later == sentAtSettle[static_cast<size_t>(i)], "peer %d sent %llu bytes of the op after it settled", i,
              static_cast<unsigned long long>(later - sentAtSettle[static_cast<size_t>(i)]));
    CHECK_MSG(ops[static_cast<size_t>(i)]->activeTransfers.load() == 0, "peer %d let go of every transfer", i);
  }
  std::vector<float> a(1000, 1.0f), b(1000, 2.0f);
  auto opA = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<uint8_t*>(a.data()), reinterpret_cast<uint8_t*>(a.data()), a.size()}, 4096);
  auto opB = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<uint8_t*>(b.data()), reinterpret_cast<uint8_t*>(b.data()), b.size()}, 4096);
  opA->key.tag = opB->key.tag = 78;
  auto fb = std::async(std::launch::async, [&] { return tccl_test::runOp(g[1], opB); });
  OpError ea = tccl_test::runOp(g[0], opA), eb = fb.get();
  CHECK_MSG(!ea && !eb && a[0] == 3.0f, "the group still works after the abort: %s / %s", ea.message.c_str(), eb.message.c_str());
}

void testAbortReachesAPeerStillBeingDialled() {
  // Peer 0 aborts an operation while its link to peer 1 is still being dialled (peer 1 is not listening yet) and
  // no connection exists either way: the notice waits on the link and goes out on its first connection, so peer
  // 1's operation fails at once with the abort instead of waiting for its deadline.
  uint16_t port1 = 0;
  {
    net::Listener probe;  // a free port, closed again: connections to it are refused until peer 1 listens there
    std::string err;
    CHECK_MSG(probe.listen("127.0.0.1", 0, err), "a free port: %s", err.c_str());
    port1 = probe.port();
  }
  TransportOptions o;
  o.host = "127.0.0.1";
  o.connections = 2;
  Transport a(o);
  a.start();
  std::vector<PeerInfo> peers{{"p0", "127.0.0.1", a.port()}, {"p1", "127.0.0.1", port1}};
  a.configure(1, 0, peers, {});
  std::vector<float> x(256, 1.0f), y(256, 2.0f);
  auto opA = std::make_shared<DirectAllReduce>(AllReduceBuffers{reinterpret_cast<uint8_t*>(x.data()), reinterpret_cast<uint8_t*>(x.data()), x.size()});
  opA->key.tag = 5;
  auto fa = tccl_test::submitOp(a, opA, 20000);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  a.abortTag(5, "aborted before the peer was up");
  OpError ea = tccl_test::awaitOp(fa);
  CHECK_MSG(ea.code == ErrorCode::Aborted, "the aborting peer gets the abort: %s", ea.message.c_str());

  o.port = port1;
  Transport b(o);
  b.start();
  b.configure(1, 1, peers, {});
  auto opB = std::make_shared<DirectAllReduce>(AllReduceBuffers{reinterpret_cast<uint8_t*>(y.data()), reinterpret_cast<uint8_t*>(y.data()), y.size()});
  opB->key.tag = 5;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the dial back-off is at most 500 ms
  OpError eb = tccl_test::runOp(b, opB, 8000);
  CHECK_MSG(eb.code == ErrorCode::Aborted, "the peer that was not up yet learns of the abort: %s", eb.message.c_str());
  CHECK_MSG(y[0] == 2.0f, "its input is intact");
  b.close();
  a.close();
}

void testListenerBehindIsDialledAgain() {
  // Peer 0 installs epoch 2 and dials peer 1 at once (configure dials the right neighbour); peer 1 installs it
  // only later, well after the listener's wait for it (2 x connectTimeoutMs), as a process whose JavaScript thread
  // was busy does. Peer 1 answers "not yet" and peer 0 dials again, so the epoch works once both installed it.
  TransportOptions o;
  o.host = "127.0.0.1";
  o.connections = 2;
  o.connectTimeoutMs = 150;
  Transport a(o), b(o);
  a.start();
  b.start();
  std::vector<PeerInfo> peers{{"p0", "127.0.0.1", a.port()}, {"p1", "127.0.0.1", b.port()}};
  a.configure(1, 0, peers, {});
  b.configure(1, 1, peers, {});
  std::array<uint8_t, 16> ticket2{};
  ticket2[0] = 2;
  a.configure(2, 0, peers, ticket2);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // several of b's 300 ms waits for its configure
  b.configure(2, 1, peers, ticket2);
  std::vector<float> x(1000, 1.0f), y(1000, 2.0f);
  auto opA = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<const uint8_t*>(x.data()), reinterpret_cast<uint8_t*>(x.data()), x.size(), DType::F32, ReduceOp::Sum}, 4096);
  auto opB = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<const uint8_t*>(y.data()), reinterpret_cast<uint8_t*>(y.data()), y.size(), DType::F32, ReduceOp::Sum}, 4096);
  auto fa = tccl_test::submitOp(a, opA, 10000);
  auto fb = tccl_test::submitOp(b, opB, 10000);
  OpError ea = tccl_test::awaitOp(fa), eb = tccl_test::awaitOp(fb);
  CHECK_MSG(ea.code == ErrorCode::None, "the early peer's all-reduce succeeds: %s", ea.message.c_str());
  CHECK_MSG(eb.code == ErrorCode::None, "the late peer's all-reduce succeeds: %s", eb.message.c_str());
  CHECK_MSG(x[0] == 3.0f && y[999] == 3.0f, "both hold the sum");
  b.close();
  a.close();
}

}  // namespace

int main() {
  net::initSockets();
  testReformWhileEarlyFrameHalfRead();
  testFramesReadPastTheBudget();
  testHalfArrivedHeaderDoesNotSpin();
  testFailedOpLetsGoOfItsFrames();
  testAbortReachesAPeerStillBeingDialled();
  testListenerBehindIsDialledAgain();
  return TEST_MAIN_RESULT();
}
