// Raw loopback TCP reference for the benchmarks, on the project's own socket layer with the data plane's socket
// options. Prints bytes per second per direction and the process's CPU seconds as JSON.
//   rawtcp serve <port> <K> <bytesPerDirection> [oneway]     (prints {"port":N}, then the result)
//   rawtcp connect <host> <port> <K> <bytesPerDirection> [oneway]
//     two processes, K connections between them; every connection sends and receives at once, or with `oneway`
//     the connecting side only sends and the serving side only receives (a state transfer: bench/shared-state);
//   rawtcp ring <K> <bytesPerDirection>                      (prints {"port":N}, reads its right neighbour's port)
//     one of N processes in a ring, like the peers of a ring all-reduce (bench/allreduce): K connections to the
//     right neighbour that only send, K from the left that only receive, all at once.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include "socket.h"

using namespace tccl::net;

static constexpr size_t kChunk = 256 << 10;  // same segment size as the data plane

enum class Direction { Both, SendOnly, RecvOnly };

static double cpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// The data streams through buffers as large as a tensor of the benchmark (64 MiB each way), in segments like the
// data plane's, so the raw reference pays the same memory traffic as the all-reduce, not just cache-hot copies.
static constexpr size_t kTensorBytes = size_t(64) << 20;

// Sends bytesPerDirection over `out` and receives as much over `in` (the same sockets for both directions).
static double run(std::vector<Socket>& out, std::vector<Socket>& in, size_t bytesPerDirection, Direction dir) {
  std::vector<char> sendBuf(dir != Direction::RecvOnly ? kTensorBytes : 0, 1), recvBuf(dir != Direction::SendOnly ? kTensorBytes : 0);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  // Connection i of K streams segments i, i+K, i+2K, ... of the buffer, wrapping around.
  auto stream = [bytesPerDirection](Socket& s, char* base, size_t i, size_t k, bool sending) {
    size_t per = bytesPerDirection / k;
    size_t slots = kTensorBytes / kChunk;
    for (size_t done = 0, seg = i; done < per; seg += k) {
      size_t n = std::min(kChunk, per - done);
      char* p = base + (seg % slots) * kChunk;
      if (!(sending ? s.sendAll(p, n) : s.recvAll(p, n))) std::exit(sending ? 3 : 4);
      done += n;
    }
  };
  for (size_t i = 0; i < out.size() && dir != Direction::RecvOnly; ++i)
    threads.emplace_back([&, i] { stream(out[i], sendBuf.data(), i, out.size(), true); });
  for (size_t i = 0; i < in.size() && dir != Direction::SendOnly; ++i)
    threads.emplace_back([&, i] { stream(in[i], recvBuf.data(), i, in.size(), false); });
  for (auto& t : threads) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(bytesPerDirection) / secs;
}

int main(int argc, char** argv) {
  initSockets();
  SocketOptions opts;
  std::string mode = argc > 1 ? argv[1] : "";
  std::vector<Socket> socks;
  size_t bytes;
  bool oneway = std::string(argv[argc - 1]) == "oneway";
  if (oneway) --argc;
  Direction dir = !oneway ? Direction::Both : mode == "serve" ? Direction::RecvOnly : Direction::SendOnly;
  if (mode == "serve" && argc == 5) {
    int k = std::atoi(argv[3]);
    bytes = std::strtoull(argv[4], nullptr, 10);
    Listener l;
    std::string err;
    if (!l.listen("127.0.0.1", static_cast<uint16_t>(std::atoi(argv[2])), err)) {
      std::fprintf(stderr, "%s\n", err.c_str());
      return 1;
    }
    std::printf("{\"port\":%u}\n", l.port());
    std::fflush(stdout);
    while (static_cast<int>(socks.size()) < k) {
      Socket s = l.accept(10000);
      if (!s.valid()) return 2;
      s.applyOptions(opts);
      socks.push_back(std::move(s));
    }
  } else if (mode == "connect" && argc == 6) {
    int k = std::atoi(argv[4]);
    bytes = std::strtoull(argv[5], nullptr, 10);
    for (int i = 0; i < k; ++i) {
      std::string err;
      Socket s = Socket::connectTo(argv[2], static_cast<uint16_t>(std::atoi(argv[3])), 5000, err);
      if (!s.valid()) {
        std::fprintf(stderr, "%s\n", err.c_str());
        return 1;
      }
      s.applyOptions(opts);
      socks.push_back(std::move(s));
    }
  } else if (mode == "ring" && argc == 4) {
    int k = std::atoi(argv[2]);
    bytes = std::strtoull(argv[3], nullptr, 10);
    Listener l;
    std::string err;
    if (!l.listen("127.0.0.1", 0, err)) {
      std::fprintf(stderr, "%s\n", err.c_str());
      return 1;
    }
    std::printf("{\"port\":%u}\n", l.port());
    std::fflush(stdout);
    unsigned right = 0;
    if (std::scanf("%u", &right) != 1) return 64;
    std::vector<Socket> out, in;
    std::thread dialer([&] {
      for (int i = 0; i < k; ++i) {
        std::string e;
        Socket s = Socket::connectTo("127.0.0.1", static_cast<uint16_t>(right), 5000, e);
        if (!s.valid()) std::exit(1);
        s.applyOptions(opts);
        out.push_back(std::move(s));
      }
    });
    while (static_cast<int>(in.size()) < k) {
      Socket s = l.accept(10000);
      if (!s.valid()) return 2;
      s.applyOptions(opts);
      in.push_back(std::move(s));
    }
    dialer.join();
    // Barrier: a byte around the ring, so every process starts streaming together.
    char b = 0;
    out[0].sendAll(&b, 1);
    in[0].recvAll(&b, 1);
    double cpu0 = cpuSeconds();
    double bps = run(out, in, bytes, Direction::Both);
    std::printf("{\"bytesPerSecond\":%.0f,\"cpuSeconds\":%.4f}\n", bps, cpuSeconds() - cpu0);
    return 0;
  } else {
    std::fprintf(stderr, "usage: rawtcp serve <port> <K> <bytes> [oneway] | rawtcp connect <host> <port> <K> <bytes> [oneway] | rawtcp ring <K> <bytes>\n");
    return 64;
  }
  // A one-byte barrier so both ends start streaming together.
  char b = 0;
  for (auto& s : socks) s.sendAll(&b, 1);
  for (auto& s : socks) s.recvAll(&b, 1);
  double cpu0 = cpuSeconds();
  double bps = run(socks, socks, bytes, dir);
  std::printf("{\"bytesPerSecond\":%.0f,\"cpuSeconds\":%.4f}\n", bps, cpuSeconds() - cpu0);
  return 0;
}
