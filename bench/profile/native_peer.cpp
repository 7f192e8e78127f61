// One peer of a ring all-reduce benchmark on the native core alone (no Node), for profiles and CPU accounting:
//   native_peer RANK PORT0,PORT1,... K MIB ITERS [outofplace]
// Every peer listens on its port of the list, forms the group, runs ITERS float32 sum all-reduces of MIB MiB after
// two warm-up runs and prints one JSON line: median time, bus bandwidth, CPU seconds (user + system) per GB
// reduced, context switches, threads. bench/profile/run.sh starts the peers and, with --perf, records a profile.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include "direct.h"
#include "ring.h"
#include "socket.h"
#include "transport.h"

using namespace tccl;

// Threads of this process while its transport is up (Linux /proc; -1 elsewhere).
static long countThreads() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  long n = -1;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "Threads: %ld", &n) == 1) break;
  }
  std::fclose(f);
  return n;
}

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: native_peer RANK PORT0,PORT1,... K MIB ITERS [outofplace]\n");
    return 64;
  }
  net::initSockets();
  int rank = std::atoi(argv[1]);
  std::vector<int> ports;
  std::stringstream list(argv[2]);
  for (std::string p; std::getline(list, p, ',');) ports.push_back(std::atoi(p.c_str()));
  int k = std::atoi(argv[3]);
  size_t bytes = static_cast<size_t>(std::atof(argv[4]) * (1 << 20)) / 4 * 4;
  int iters = std::atoi(argv[5]);
  bool outOfPlace = argc > 6 && std::string(argv[6]) == "outofplace";

  TransportOptions o;
  o.host = "127.0.0.1";
  o.port = static_cast<uint16_t>(ports[static_cast<size_t>(rank)]);
  o.connections = k;
  Transport t(o);
  t.start();
  std::vector<PeerInfo> peers;
  for (size_t i = 0; i < ports.size(); ++i) peers.push_back({"p" + std::to_string(i), "127.0.0.1", static_cast<uint16_t>(ports[i])});
  t.configure(1, rank, peers, {});

  std::vector<float> data(bytes / 4, 1.0f), out(outOfPlace ? bytes / 4 : 0);
  std::vector<double> times;
  rusage r0{}, r1{};
  for (int i = 0; i < iters + 2; ++i) {
    if (i == 2) getrusage(RUSAGE_SELF, &r0);
    AllReduceBuffers b{reinterpret_cast<const uint8_t*>(data.data()), reinterpret_cast<uint8_t*>(outOfPlace ? out.data() : data.data()),
                       data.size(), DType::F32, ReduceOp::Sum};
    std::shared_ptr<Operation> op;
    if (useDirect(bytes, static_cast<int>(ports.size()))) op = std::make_shared<DirectAllReduce>(b);
    else op = std::make_shared<RingAllReduce>(b, o.maxSegmentBytes);
    op->key.tag = 1;
    auto done = std::make_shared<std::promise<OpError>>();
    auto settled = done->get_future();
    op->onSettled = [done](const OpError& e) { done->set_value(e); };
    auto t0 = std::chrono::steady_clock::now();
    t.submit(op, 60000);  // the first run also waits for the other peers to start listening
    OpError e = settled.get();
    if (e) {
      std::fprintf(stderr, "peer %d: %s\n", rank, e.message.c_str());
      return 1;
    }
    if (i >= 2) times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  getrusage(RUSAGE_SELF, &r1);
  long threads = countThreads();
  auto secs = [](const timeval& a, const timeval& b) { return static_cast<double>(b.tv_sec - a.tv_sec) + static_cast<double>(b.tv_usec - a.tv_usec) / 1e6; };
  double cpu = secs(r0.ru_utime, r1.ru_utime) + secs(r0.ru_stime, r1.ru_stime);
  std::sort(times.begin(), times.end());
  double ms = times[times.size() / 2];
  double n = static_cast<double>(ports.size());
  std::printf("{\"rank\":%d,\"bytes\":%zu,\"medianMs\":%.3f,\"busbwGBs\":%.3f,\"cpuSecondsPerGBReduced\":%.3f,\"voluntarySwitches\":%ld,\"involuntarySwitches\":%ld,\"threads\":%ld}\n",
              rank, bytes, ms, static_cast<double>(bytes) / (ms / 1e3) * 2 * (n - 1) / n / 1e9, cpu / (static_cast<double>(iters) * static_cast<double>(bytes) / 1e9),
              r1.ru_nvcsw - r0.ru_nvcsw, r1.ru_nivcsw - r0.ru_nivcsw, threads);
  t.close();
  return 0;
}
