// wanblast: a bulk TCP traffic generator and sink for measuring the WAN emulator itself (Linux only).
//
//   wanblast sink HOST CONNS      listen on HOST:0, print "port N"; once CONNS connections have come and closed,
//                                 print "result BYTES SECONDS MIN_CONN_BYTES MAX_CONN_BYTES" and exit.
//                                 SECONDS runs from the first byte to the last end of stream.
//   wanblast send HOST PORT CONNS SECONDS
//                                 open CONNS connections, write as fast as possible for SECONDS, close.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

using Clock = std::chrono::steady_clock;

static sockaddr_in addr(const char* host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    std::fprintf(stderr, "bad address %s\n", host);
    std::exit(2);
  }
  return a;
}

static int sink(const char* host, int conns) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = addr(host, 0);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || listen(lfd, 128) < 0) {
    std::perror("listen");
    return 1;
  }
  socklen_t len = sizeof a;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  std::printf("port %d\n", ntohs(a.sin_port));
  std::fflush(stdout);
  std::mutex mu;
  bool started = false;
  Clock::time_point first, last;
  std::vector<uint64_t> bytes(size_t(conns), 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < conns; ++i) {
    int fd = accept(lfd, nullptr, nullptr);
    if (fd < 0) {
      std::perror("accept");
      return 1;
    }
    threads.emplace_back([&, fd, i] {
      std::vector<char> buf(1 << 20);
      for (;;) {
        ssize_t n = recv(fd, buf.data(), buf.size(), 0);
        if (n <= 0) break;
        if (bytes[size_t(i)] == 0) {
          std::lock_guard<std::mutex> g(mu);
          if (!started) {
            started = true;
            first = Clock::now();
          }
        }
        bytes[size_t(i)] += uint64_t(n);
      }
      std::lock_guard<std::mutex> g(mu);
      last = Clock::now();
      close(fd);
    });
  }
  for (auto& t : threads) t.join();
  uint64_t total = 0, mn = ~0ull, mx = 0;
  for (uint64_t b : bytes) {
    total += b;
    mn = b < mn ? b : mn;
    mx = b > mx ? b : mx;
  }
  double secs = started ? std::chrono::duration<double>(last - first).count() : 0;
  std::printf("result %llu %.6f %llu %llu\n", (unsigned long long)total, secs, (unsigned long long)mn,
              (unsigned long long)mx);
  return 0;
}

static int send(const char* host, int port, int conns, double seconds) {
  sockaddr_in a = addr(host, port);
  std::vector<int> fds;
  for (int i = 0; i < conns; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
      std::perror("connect");
      return 1;
    }
    fds.push_back(fd);
  }
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int fd : fds) {
    threads.emplace_back([fd, deadline] {
      std::vector<char> buf(256 * 1024, 'x');
      while (Clock::now() < deadline) {
        ssize_t n = ::send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
        if (n <= 0) break;
      }
      close(fd);
    });
  }
  for (auto& t : threads) t.join();
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "sink") == 0) return sink(argv[2], std::atoi(argv[3]));
  if (argc == 6 && std::strcmp(argv[1], "send") == 0)
    return send(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), std::atof(argv[5]));
  std::fprintf(stderr, "usage: wanblast sink HOST CONNS | wanblast send HOST PORT CONNS SECONDS\n");
  return 2;
}
