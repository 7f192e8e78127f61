// Connection set-up against real transports on loopback: strangers that connect and say (almost) nothing are held
// under the cap on unauthenticated connections (the oldest evicted for each new one) and closed at the hello
// deadline, while the members of the group still connect and all-reduce; no thread is created per connection.
#include <chrono>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "check.h"
#include "loopback_group.h"
#include "ring.h"
#include "socket.h"
#include "transport.h"

using namespace tccl;

namespace {

// Threads of this process (Linux; -1 elsewhere).
int threadCount() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  return -1;
}

template <typename F>
bool waitUntil(F cond, int ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

void testStrangersUnderTheCap() {
  net::initSockets();
  TransportOptions o;
  o.host = "127.0.0.1";
  o.connections = 2;
  o.maxHandshakes = 8;
  o.connectTimeoutMs = 700;
  Transport a(o), b(o);
  a.start();
  b.start();
  std::vector<PeerInfo> peers{{"a", "127.0.0.1", a.port()}, {"b", "127.0.0.1", b.port()}};
  a.configure(1, 0, peers, {});
  b.configure(1, 1, peers, {});
  int threadsBefore = threadCount();

  std::vector<net::Socket> strangers;
  for (int i = 0; i < 40; ++i) {
    std::string err;
    net::Socket s = net::Socket::connectTo("127.0.0.1", a.port(), 2000, err);
    CHECK_MSG(s.valid(), "stranger %d connects: %s", i, err.c_str());
    s.sendAll("x", 1);
    strangers.push_back(std::move(s));
  }
  CHECK_MSG(waitUntil([&] { return a.stats().handshakesEvicted >= 32; }, 5000), "the oldest strangers were evicted (%llu)",
            static_cast<unsigned long long>(a.stats().handshakesEvicted));
  CHECK_MSG(a.stats().handshakesPending <= 8, "at most the cap is pending (%llu)", static_cast<unsigned long long>(a.stats().handshakesPending));
  if (threadsBefore > 0) CHECK_MSG(threadCount() == threadsBefore, "no thread per connection (%d, was %d)", threadCount(), threadsBefore);

  // The members connect and all-reduce while the strangers hold the cap.
  std::vector<float> x(5000, 1.0f), y(5000, 2.0f);
  auto opA = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<uint8_t*>(x.data()), reinterpret_cast<uint8_t*>(x.data()), x.size()}, 4096);
  auto opB = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<uint8_t*>(y.data()), reinterpret_cast<uint8_t*>(y.data()), y.size()}, 4096);
  opA->key.tag = opB->key.tag = 5;
  auto fb = std::async(std::launch::async, [&] { return tccl_test::runOp(b, opB); });
  OpError ea = tccl_test::runOp(a, opA), eb = fb.get();
  CHECK_MSG(!ea && !eb && x[0] == 3.0f && y[4999] == 3.0f, "the members all-reduce: %s / %s", ea.message.c_str(), eb.message.c_str());

  // The rest are closed at the hello deadline: every stranger's socket ends.
  CHECK_MSG(waitUntil([&] { return a.stats().handshakesPending == 0; }, 5000), "nothing pending after the deadline (%llu)",
            static_cast<unsigned long long>(a.stats().handshakesPending));
  int ended = 0;
  for (auto& s : strangers) {
    s.setNonBlocking(true);
    char c;
    long r = s.readSome(&c, 1);
    ended += r < 0 ? 1 : 0;
  }
  CHECK_MSG(ended == 40, "every stranger's connection was closed (%d of 40)", ended);
  CHECK(a.stats().handshakesEvicted + a.stats().handshakesRefused >= 40);  // each stranger: evicted or timed out
  CHECK(a.stats().internalErrors == 0);
  a.close();
  b.close();
}

// A member that dials for an epoch this peer has not installed yet (normal at every re-form) waits in the hello's
// judging; strangers flooding past the cap meanwhile evict each other, not it, and it gets in once this peer
// installs the epoch.
void testDiallerAheadSurvivesFlood() {
  net::initSockets();
  TransportOptions o;
  o.host = "127.0.0.1";
  o.connections = 2;
  o.maxHandshakes = 8;
  o.connectTimeoutMs = 3000;
  Transport a(o), b(o);
  a.start();
  b.start();
  std::vector<PeerInfo> peers{{"a", "127.0.0.1", a.port()}, {"b", "127.0.0.1", b.port()}};
  a.configure(1, 0, peers, {});
  b.configure(1, 1, peers, {});
  b.configure(2, 1, peers, {});  // b is a moment ahead

  std::vector<float> x(5000, 1.0f), y(5000, 2.0f);
  auto opA = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<uint8_t*>(x.data()), reinterpret_cast<uint8_t*>(x.data()), x.size()}, 4096);
  auto opB = std::make_shared<RingAllReduce>(AllReduceBuffers{reinterpret_cast<uint8_t*>(y.data()), reinterpret_cast<uint8_t*>(y.data()), y.size()}, 4096);
  opA->key.tag = opB->key.tag = 5;
  auto fb = std::async(std::launch::async, [&] { return tccl_test::runOp(b, opB); });
  CHECK_MSG(waitUntil([&] { return a.stats().handshakesPending >= 2; }, 5000), "b's hellos wait at a (%llu)",
            static_cast<unsigned long long>(a.stats().handshakesPending));

  std::vector<net::Socket> strangers;
  for (int i = 0; i < 40; ++i) {
    std::string err;
    net::Socket s = net::Socket::connectTo("127.0.0.1", a.port(), 2000, err);
    CHECK_MSG(s.valid(), "stranger %d connects: %s", i, err.c_str());
    s.sendAll("x", 1);
    strangers.push_back(std::move(s));
  }
  CHECK_MSG(waitUntil([&] { return a.stats().handshakesEvicted >= 32; }, 5000), "strangers evicted (%llu)",
            static_cast<unsigned long long>(a.stats().handshakesEvicted));
  a.configure(2, 0, peers, {});
  OpError ea = tccl_test::runOp(a, opA), eb = fb.get();
  CHECK_MSG(!ea && !eb && x[0] == 3.0f && y[4999] == 3.0f, "the members all-reduce: %s / %s", ea.message.c_str(), eb.message.c_str());
  CHECK(a.stats().internalErrors == 0);
  a.close();
  b.close();
}

}  // namespace

int main() {
  testStrangersUnderTheCap();
  testDiallerAheadSurvivesFlood();
  return TEST_MAIN_RESULT();
}
