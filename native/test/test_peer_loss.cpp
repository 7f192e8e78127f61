// A peer that drops in the middle of a ring all-reduce, over loopback sockets (the same program runs on Linux and,
// cross-built with mingw-w64, over Winsock under Wine). Two ways to go: its engine closes with the op in flight
// (in process), and its process dies (this program started again as a child, which exits at a chosen frame, so
// the OS closes its sockets and nothing says goodbye). Either way the survivors must fail with PeerLost naming
// it, hold their input unchanged, and all-reduce again as a group of two on the same transports.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#ifdef _WIN32
#ifndef NOMINMAX
#define NOMINMAX
#endif
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#else
#include <csignal>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
extern char** environ;
#endif

#include "check.h"
#include "loopback_group.h"
#include "ring.h"
#include "socket.h"

using namespace tccl;
using tccl_test::awaitOp;
using tccl_test::submitOp;

namespace {

constexpr uint64_t kTag = 5;
constexpr size_t kCount = 1 << 20;  // 4 MiB per peer in 64 KiB segments: 64 segments per peer
constexpr uint32_t kSegment = 64 << 10;
constexpr int kStallAfter = 6;      // data frames the dropping peer takes before it goes
constexpr int kChildExitCode = 3;

// A ring all-reduce that, once it has taken `stallAfter` data frames, calls `onStall` and stops consuming input
// until the op is over: the peer is then certainly mid-operation (it has received and forwarded data, and the
// ring cannot finish without it) when it drops, with no race against the op finishing first.
class StallingRing : public RingAllReduce {
 public:
  StallingRing(const AllReduceBuffers& b, void (*onStall)()) : RingAllReduce(b, kSegment), onStall_(onStall) {}
  bool onHeader(Transport& t, int from, const FrameHeader& h, uint8_t* scratch, uint8_t*& dst) override {
    if (frames_.fetch_add(1) + 1 < kStallAfter) return RingAllReduce::onHeader(t, from, h, scratch, dst);
    if (!stalled_.exchange(true) && onStall_) onStall_();
    // Holds up this transport's I/O thread. Bounded: the test drops this peer within milliseconds; 20 s is a
    // safety net, never the normal path.
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!isDone() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return false;  // the payload is discarded
  }
  bool stalled() const { return stalled_.load(); }

 private:
  void (*onStall_)();
  std::atomic<int> frames_{0};
  std::atomic<bool> stalled_{false};
};

AllReduceBuffers sumOf(std::vector<float>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(v.data()), v.size(), DType::F32, ReduceOp::Sum};
}

std::shared_ptr<RingAllReduce> ringOp(std::vector<float>& v, uint64_t tag) {
  auto op = std::make_shared<RingAllReduce>(sumOf(v), kSegment);
  op->key.tag = tag;
  return op;
}

std::vector<float> inputOf(int rank) {
  std::vector<float> v(kCount);
  for (size_t i = 0; i < kCount; ++i) v[i] = static_cast<float>(rank + 1) + static_cast<float>(i % 13) * 0.25f;
  return v;
}

std::unique_ptr<Transport> startTransport() {
  TransportOptions o;
  o.host = "127.0.0.1";
  o.connections = 2;
  auto t = std::make_unique<Transport>(o);
  t->start();
  return t;
}

// The survivors' side: both ops fail with PeerLost for p2, inputs intact; then a group of two (epoch 2) sums.
void checkSurvivors(const char* how, Transport& t0, Transport& t1, std::future<OpError>& f0, std::future<OpError>& f1,
                    std::vector<PeerInfo> peers) {
  std::vector<OpError> errs{awaitOp(f0), awaitOp(f1)};
  for (size_t r = 0; r < 2; ++r) {
    const OpError& e = errs[r];
    // A Timeout here would mean the drop went unnoticed until the op's deadline.
    CHECK_MSG(e.code == ErrorCode::PeerLost && e.message.find("p2") != std::string::npos,
              "%s: peer %zu got code %d: %s", how, r, static_cast<int>(e.code), e.message.c_str());
    CHECK_MSG(e.peer == "p2", "%s: peer %zu's error names the lost peer (got '%s')", how, r, e.peer.c_str());
  }
  std::printf("%s: survivors failed with \"%s\"\n", how, errs[0].message.c_str());

  std::vector<float> a = inputOf(0), b = inputOf(1);
  const std::vector<PeerInfo> two{peers[0], peers[1]};
  t0.configure(2, 0, two, {});
  t1.configure(2, 1, two, {});
  auto g0 = submitOp(t0, ringOp(a, kTag + 1), 30000);
  auto g1 = submitOp(t1, ringOp(b, kTag + 1), 30000);
  OpError r0 = awaitOp(g0), r1 = awaitOp(g1);
  CHECK_MSG(!r0 && !r1, "%s: all-reduce after the drop: %s / %s", how, r0.message.c_str(), r1.message.c_str());
  const std::vector<float> x = inputOf(0), y = inputOf(1);
  bool ok = true;
  for (size_t i = 0; i < kCount; ++i) ok = ok && a[i] == x[i] + y[i] && std::memcmp(&a[i], &b[i], 4) == 0;
  CHECK_MSG(ok, "%s: the group of two sums its inputs, bit-identical on both", how);
}

// Its engine closes while the op is in flight: a departure announced on the wire.
void testEngineClosesMidRing() {
  std::vector<std::unique_ptr<Transport>> ts;
  std::vector<PeerInfo> peers;
  for (int i = 0; i < 3; ++i) {
    ts.push_back(startTransport());
    peers.push_back({"p" + std::to_string(i), "127.0.0.1", ts.back()->port()});
  }
  for (int i = 0; i < 3; ++i) ts[static_cast<size_t>(i)]->configure(1, i, peers, {});
  std::vector<std::vector<float>> data{inputOf(0), inputOf(1), inputOf(2)};
  auto op0 = ringOp(data[0], kTag), op1 = ringOp(data[1], kTag);
  auto dying = std::make_shared<StallingRing>(sumOf(data[2]), nullptr);
  dying->key.tag = kTag;
  auto f0 = submitOp(*ts[0], op0, 30000);
  auto f1 = submitOp(*ts[1], op1, 30000);
  auto f2 = submitOp(*ts[2], dying, 30000);
  for (int i = 0; i < 10000 && !dying->stalled(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK_MSG(dying->stalled(), "the third peer never received %d data frames", kStallAfter);
  CHECK_MSG(!op0->isDone() && !op1->isDone(), "the survivors' all-reduce is still running when the peer drops");
  ts[2]->close();
  OpError e2 = awaitOp(f2);
  CHECK_MSG(e2.code == ErrorCode::Closed, "the closed peer's own op settles Closed (got %d)", static_cast<int>(e2.code));
  // Whether a survivor learns it from the goodbye or from the other survivor's abort decides whether the peer
  // field is filled; the message names the peer either way.
  checkSurvivors("engine closed mid-op", *ts[0], *ts[1], f0, f1, peers);
  CHECK_MSG(data[0] == inputOf(0) && data[1] == inputOf(1), "survivors held their input after the failure");
  for (auto& t : ts) t->close();
}

// ---- The child process: one member that dies at its stall point. ----

[[noreturn]] void dieNow() {
  std::fflush(stdout);
  std::_Exit(kChildExitCode);  // no destructors, no goodbye: the OS closes the sockets, as for a crash
}

int childMain(const std::string& portFile, uint16_t port0, uint16_t port1) {
  auto t = startTransport();
  {
    std::ofstream f(portFile + ".tmp");
    f << t->port() << "\n";
  }
  std::rename((portFile + ".tmp").c_str(), portFile.c_str());  // the parent sees the whole number or nothing
  std::vector<PeerInfo> peers{{"p0", "127.0.0.1", port0}, {"p1", "127.0.0.1", port1}, {"p2", "127.0.0.1", t->port()}};
  t->configure(1, 2, peers, {});
  std::vector<float> data = inputOf(2);
  auto op = std::make_shared<StallingRing>(sumOf(data), &dieNow);
  op->key.tag = kTag;
  auto f = submitOp(*t, op, 30000);
  // Reaching here means the op ended without the stall: the parent reports it through the exit code.
  OpError e = awaitOp(f);
  std::fprintf(stderr, "child: the op settled (%s) before %d frames arrived\n", e.message.c_str(), kStallAfter);
  t->close();
  return 1;
}

// Starts this program again as the child; waits for its exit (bounded). Returns its exit code, -1 on failure.
class Child {
 public:
  bool start(const char* self, const std::vector<std::string>& args) {
#ifdef _WIN32
    char path[MAX_PATH];
    if (!GetModuleFileNameA(nullptr, path, MAX_PATH)) return false;
    std::string cmd = std::string("\"") + path + "\"";
    for (auto& a : args) cmd += " \"" + a + "\"";
    STARTUPINFOA si{};
    si.cb = sizeof(si);
    if (!CreateProcessA(path, cmd.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr, &si, &pi_)) return false;
    CloseHandle(pi_.hThread);
    return true;
#else
    std::vector<std::string> all{self};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    return posix_spawn(&pid_, self, nullptr, nullptr, argv.data(), environ) == 0;
#endif
  }
  int wait(int timeoutMs) {
#ifdef _WIN32
    if (WaitForSingleObject(pi_.hProcess, static_cast<DWORD>(timeoutMs)) != WAIT_OBJECT_0) {
      TerminateProcess(pi_.hProcess, 99);
      WaitForSingleObject(pi_.hProcess, 5000);
      CloseHandle(pi_.hProcess);
      return -1;
    }
    DWORD code = 0;
    GetExitCodeProcess(pi_.hProcess, &code);
    CloseHandle(pi_.hProcess);
    return static_cast<int>(code);
#else
    for (int waited = 0; waited < timeoutMs; waited += 10) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    return -1;
#endif
  }

 private:
#ifdef _WIN32
  PROCESS_INFORMATION pi_{};
#else
  pid_t pid_ = -1;
#endif
};

// Its process dies mid-op: connections end with no word, the case the heartbeat-free data plane must catch.
void testProcessDiesMidRing(const char* self) {
  auto t0 = startTransport(), t1 = startTransport();
  const std::string portFile = "peer_loss_child." + std::to_string(t0->port()) + ".port";
  std::remove(portFile.c_str());
  Child child;
  if (!child.start(self, {"child", portFile, std::to_string(t0->port()), std::to_string(t1->port())})) {
    CHECK_MSG(false, "could not start the child process");
    return;
  }
  uint16_t childPort = 0;
  for (int i = 0; i < 1000 && childPort == 0; ++i) {
    std::ifstream f(portFile);
    unsigned p = 0;
    if (f >> p) childPort = static_cast<uint16_t>(p);
    else std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::remove(portFile.c_str());
  CHECK_MSG(childPort != 0, "the child never reported its port");
  if (childPort == 0) {
    child.wait(1);
    return;
  }
  std::vector<PeerInfo> peers{{"p0", "127.0.0.1", t0->port()}, {"p1", "127.0.0.1", t1->port()}, {"p2", "127.0.0.1", childPort}};
  t0->configure(1, 0, peers, {});
  t1->configure(1, 1, peers, {});
  std::vector<float> a = inputOf(0), b = inputOf(1);
  auto f0 = submitOp(*t0, ringOp(a, kTag), 30000);
  auto f1 = submitOp(*t1, ringOp(b, kTag), 30000);
  const int code = child.wait(30000);
  CHECK_MSG(code == kChildExitCode, "the child died at its stall point, mid-operation (exit code %d)", code);
  checkSurvivors("process died mid-op", *t0, *t1, f0, f1, peers);
  CHECK_MSG(a == inputOf(0) && b == inputOf(1), "survivors held their input after the failure");
  t0->close();
  t1->close();
}

}  // namespace

int main(int argc, char** argv) {
  net::initSockets();
  if (argc == 5 && std::strcmp(argv[1], "child") == 0)
    return childMain(argv[2], static_cast<uint16_t>(std::atoi(argv[3])), static_cast<uint16_t>(std::atoi(argv[4])));
  testEngineClosesMidRing();
  testProcessDiesMidRing(argv[0]);
  return TEST_MAIN_RESULT();
}
