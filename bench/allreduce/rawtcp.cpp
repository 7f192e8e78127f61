// Raw loopback TCP reference for the benchmarks: two processes, K connections between them. By default every
// connection sends and receives at once (both directions, like the two peers of a ring: bench/allreduce); with
// `oneway` the connecting side only sends and the serving side only receives (a state transfer:
// bench/shared-state). Prints bytes per second per direction as JSON. Uses the project's own socket layer with
// the same options the data plane uses.
//   rawtcp serve <port> <K> <bytesPerDirection> [oneway]     (prints {"port":N}, then {"bytesPerSecond":X})
//   rawtcp connect <host> <port> <K> <bytesPerDirection> [oneway]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "socket.h"

using namespace tccl::net;

static constexpr size_t kChunk = 256 << 10;  // same segment size as the data plane

enum class Direction { Both, SendOnly, RecvOnly };

static double run(std::vector<Socket>& socks, size_t bytesPerDirection, Direction dir) {
  size_t k = socks.size();
  size_t per = bytesPerDirection / k;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (auto& s : socks) {
    if (dir != Direction::RecvOnly) threads.emplace_back([&s, per] {
      std::vector<char> buf(kChunk, 1);
      for (size_t done = 0; done < per;) {
        size_t n = std::min(kChunk, per - done);
        if (!s.sendAll(buf.data(), n)) std::exit(3);
        done += n;
      }
    });
    if (dir != Direction::SendOnly) threads.emplace_back([&s, per] {
      std::vector<char> buf(kChunk);
      for (size_t done = 0; done < per;) {
        size_t n = std::min(kChunk, per - done);
        if (!s.recvAll(buf.data(), n)) std::exit(4);
        done += n;
      }
    });
  }
  for (auto& t : threads) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(per * k) / secs;
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
  } else {
    std::fprintf(stderr, "usage: rawtcp serve <port> <K> <bytes> [oneway] | rawtcp connect <host> <port> <K> <bytes> [oneway]\n");
    return 64;
  }
  // A one-byte barrier so both ends start streaming together.
  char b = 0;
  for (auto& s : socks) s.sendAll(&b, 1);
  for (auto& s : socks) s.recvAll(&b, 1);
  double bps = run(socks, bytes, dir);
  std::printf("{\"bytesPerSecond\":%.0f}\n", bps);
  return 0;
}
