// One-direction raw loopback TCP reference for bench/shared-state: `rawsink recv` listens and reads from K
// connections; `rawsink send` dials it and writes `bytes` in total over the K connections, one thread per
// connection. The receiver prints the bytes per second it took in, as JSON. Uses the data plane's socket layer.
//   rawsink recv <K> <bytes>            (prints {"port":N}, then {"bytesPerSecond":X})
//   rawsink send <host> <port> <K> <bytes>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "socket.h"

using tccl::net::Listener;
using tccl::net::Socket;

static constexpr size_t kBlock = 256 << 10;

int main(int argc, char** argv) {
  tccl::net::initSockets();
  tccl::net::SocketOptions opts;
  const std::string mode = argc > 1 ? argv[1] : "";
  std::vector<Socket> conns;
  size_t total = 0;
  if (mode == "recv" && argc == 4) {
    const int k = std::atoi(argv[2]);
    total = std::strtoull(argv[3], nullptr, 10);
    Listener listener;
    std::string err;
    if (!listener.listen("127.0.0.1", 0, err)) {
      std::fprintf(stderr, "%s\n", err.c_str());
      return 1;
    }
    std::printf("{\"port\":%u}\n", listener.port());
    std::fflush(stdout);
    while (static_cast<int>(conns.size()) < k) {
      Socket s = listener.accept(10000);
      if (!s.valid()) return 2;
      s.applyOptions(opts);
      conns.push_back(std::move(s));
    }
  } else if (mode == "send" && argc == 6) {
    const int k = std::atoi(argv[4]);
    total = std::strtoull(argv[5], nullptr, 10);
    for (int i = 0; i < k; ++i) {
      std::string err;
      Socket s = Socket::connectTo(argv[2], static_cast<uint16_t>(std::atoi(argv[3])), 5000, err);
      if (!s.valid()) {
        std::fprintf(stderr, "%s\n", err.c_str());
        return 1;
      }
      s.applyOptions(opts);
      conns.push_back(std::move(s));
    }
  } else {
    std::fprintf(stderr, "usage: rawsink recv <K> <bytes> | rawsink send <host> <port> <K> <bytes>\n");
    return 64;
  }
  const bool sending = mode == "send";
  const size_t share = total / conns.size();
  char go = 1;
  // Start together: the receiver releases every connection once all are accepted.
  for (auto& c : conns) {
    if (sending ? !c.recvAll(&go, 1) : !c.sendAll(&go, 1)) return 3;
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (auto& c : conns) {
    workers.emplace_back([&c, share, sending] {
      std::vector<char> block(kBlock, 7);
      for (size_t moved = 0; moved < share;) {
        const size_t n = std::min(kBlock, share - moved);
        if (sending ? !c.sendAll(block.data(), n) : !c.recvAll(block.data(), n)) std::exit(4);
        moved += n;
      }
    });
  }
  for (auto& w : workers) w.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!sending) std::printf("{\"bytesPerSecond\":%.0f}\n", static_cast<double>(share * conns.size()) / secs);
  return 0;
}
