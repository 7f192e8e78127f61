// Operations back to back and side by side, with reused tags (issue 11: two healthy peers hung when one of them
// completed a direct all-reduce before it had sent its own input, then met the other in the next operation of the
// same tag). First a deterministic reproduction of that ordering, then a randomized sequence: every peer runs the
// same plan on its own thread without waiting for the others (sizes across every algorithm's threshold, dtypes,
// ops, in place and out of place, quantized, exchange, tags reused and distinct, 1-3 operations in flight), with
// random group sizes (2-4) and connection counts (1-4). Every result is checked against a reference and across
// peers bit for bit.
//
// TCCL_SEQUENCE_OPS (default 2000) and TCCL_SEQUENCE_SEED (default 11) set the length and the plan.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "chain.h"
#include "check.h"
#include "codec.h"
#include "direct.h"
#include "exchange.h"
#include "hash.h"
#include "loopback_group.h"
#include "quantized.h"
#include "ring.h"
#include "socket.h"

using namespace tccl;
using tccl_test::LoopbackGroup;

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Deterministic reproduction: a peer whose start() runs only after it has received the other peer's frame.

template <typename Base>
class LateStart : public Base {
 public:
  using Base::Base;
  void start(Transport& t) override {
    entered.set_value();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(5), [&] { return gotFrame_; });
    lock.unlock();
    Base::start(t);
  }
  void onPayload(Transport& t, int from, const FrameHeader& h, uint8_t* data) override {
    Base::onPayload(t, from, h, data);
    {
      std::lock_guard<std::mutex> lock(mu_);
      gotFrame_ = true;
    }
    cv_.notify_all();
  }

  std::promise<void> entered;  // start() was called: the op is registered, so the other peer's frames find it

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool gotFrame_ = false;
};

AllReduceBuffers floats(std::vector<float>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(v.data()), v.size(), DType::F32, ReduceOp::Sum};
}

// The op of peer 0 receives peer 1's frame before it has queued its own: it must not complete before it sent.
template <typename Late, typename Plain, typename Make>
void checkFrameBeforeStart(const char* what, Make make) {
  LoopbackGroup g(2, 2);
  std::vector<float> a(1000, 1.0f), b(1000, 2.0f);
  auto opA = make(a, static_cast<Late*>(nullptr));
  auto opB = make(b, static_cast<Plain*>(nullptr));
  opA->key.tag = opB->key.tag = 5;
  // Peer 0's submit blocks in start() until peer 1's frame is in, so it runs on a thread of its own; peer 1 starts
  // once peer 0's op is registered (a frame that arrived before would be replayed only after start()).
  auto entered = opA->entered.get_future();
  auto fa = std::async(std::launch::async, [&] { return tccl_test::runOp(g[0], opA, 3000); });
  CHECK(entered.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  OpError eb = tccl_test::runOp(g[1], opB, 3000);
  OpError ea = fa.get();
  CHECK_MSG(!ea && !eb, "%s: peer 0 got \"%s\", peer 1 got \"%s\"", what, ea.message.c_str(), eb.message.c_str());
}

void testFrameBeforeStart() {
  checkFrameBeforeStart<LateStart<DirectAllReduce>, DirectAllReduce>("direct", [](std::vector<float>& v, auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    return std::make_shared<T>(floats(v));
  });
  checkFrameBeforeStart<LateStart<RingAllReduce>, RingAllReduce>("ring", [](std::vector<float>& v, auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    return std::make_shared<T>(floats(v), 1024);
  });
  checkFrameBeforeStart<LateStart<QuantizedAllReduce>, QuantizedAllReduce>("quantized", [](std::vector<float>& v, auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    return std::make_shared<T>(floats(v), QuantizationParams{}, 1024);
  });
  // All-gather, reduce-scatter and broadcast (root 1: peer 0 only receives, so it gets its frame before start()).
  for (CollectiveKind kind : {CollectiveKind::AllGather, CollectiveKind::ReduceScatter, CollectiveKind::Broadcast}) {
    checkFrameBeforeStart<LateStart<RingChain>, RingChain>(collectiveName(kind), [kind](std::vector<float>& v, auto* type) {
      using T = std::remove_pointer_t<decltype(type)>;
      CollectiveSpec s;
      s.kind = kind;
      auto* f = reinterpret_cast<uint8_t*>(v.data());
      s.input = f;
      s.output = kind == CollectiveKind::Broadcast ? f : f + v.size() / 2 * sizeof(float);
      s.count = kind == CollectiveKind::Broadcast ? v.size() : v.size() / 2;
      if (kind == CollectiveKind::AllGather) s.chunkCounts = {v.size() / 4, v.size() / 4};
      s.root = 1;
      return std::make_shared<T>(s, 1024);
    });
  }
  // Each side sends a stream to the other and receives one.
  checkFrameBeforeStart<LateStart<Exchange>, Exchange>("exchange", [](std::vector<float>& v, auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    auto* bytes = reinterpret_cast<uint8_t*>(v.data());
    uint64_t half = v.size() * 2;
    bool first = std::is_same_v<T, LateStart<Exchange>>;
    int other = first ? 1 : 0;
    return std::make_shared<T>(std::vector<ExchangeSend>{{other, 1, bytes, half}}, std::vector<ExchangeRecv>{{other, 1, bytes + half, half}}, 1024);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Randomized sequence.

enum class Kind { Auto, Ring, Direct, Quantized, Exchange };
const char* kindName(Kind k) {
  switch (k) {
    case Kind::Auto: return "auto";
    case Kind::Ring: return "ring";
    case Kind::Direct: return "direct";
    case Kind::Quantized: return "quantized";
    case Kind::Exchange: return "exchange";
  }
  return "?";
}

struct Stream {
  int from, to;
  uint32_t id;
  uint64_t length;
};

struct PlanOp {
  int index = 0;  // position in the whole plan (seeds the inputs)
  Kind kind = Kind::Auto;
  uint64_t tag = 0;
  uint64_t count = 0;
  DType dtype = DType::F32;
  ReduceOp op = ReduceOp::Sum;
  bool inPlace = true;
  uint32_t segmentBytes = 1 << 18;
  std::vector<Stream> streams;  // exchange only
};

struct Round {
  int peers = 2;
  int connections = 1;
  std::vector<std::vector<PlanOp>> batches;  // the ops of a batch are in flight at the same time (distinct tags)
};

// Input element i of peer r in op j: a small integer, so sums, products, minima and maxima are exact in every dtype.
double inputValue(int r, uint64_t i, int j) { return 1.0 + static_cast<double>((static_cast<uint64_t>(r) * 7 + i * 13 + static_cast<uint64_t>(j) * 3) % 3); }

void writeValue(DType t, uint8_t* p, uint64_t i, double v) {
  switch (t) {
    case DType::F32: reinterpret_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::F64: reinterpret_cast<double*>(p)[i] = v; break;
    case DType::F16: reinterpret_cast<uint16_t*>(p)[i] = floatToHalf(static_cast<float>(v)); break;
    case DType::BF16: reinterpret_cast<uint16_t*>(p)[i] = floatToBFloat16(static_cast<float>(v)); break;
    case DType::I8: reinterpret_cast<int8_t*>(p)[i] = static_cast<int8_t>(v); break;
    case DType::U8: reinterpret_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v); break;
    case DType::I16: reinterpret_cast<int16_t*>(p)[i] = static_cast<int16_t>(v); break;
    case DType::U16: reinterpret_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(v); break;
    case DType::I32: reinterpret_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DType::U32: reinterpret_cast<uint32_t*>(p)[i] = static_cast<uint32_t>(v); break;
    case DType::I64: reinterpret_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
    case DType::U64: reinterpret_cast<uint64_t*>(p)[i] = static_cast<uint64_t>(v); break;
  }
}

double readValue(DType t, const uint8_t* p, uint64_t i) {
  switch (t) {
    case DType::F32: return reinterpret_cast<const float*>(p)[i];
    case DType::F64: return reinterpret_cast<const double*>(p)[i];
    case DType::F16: return halfToFloat(reinterpret_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bfloat16ToFloat(reinterpret_cast<const uint16_t*>(p)[i]);
    case DType::I8: return reinterpret_cast<const int8_t*>(p)[i];
    case DType::U8: return reinterpret_cast<const uint8_t*>(p)[i];
    case DType::I16: return reinterpret_cast<const int16_t*>(p)[i];
    case DType::U16: return reinterpret_cast<const uint16_t*>(p)[i];
    case DType::I32: return reinterpret_cast<const int32_t*>(p)[i];
    case DType::U32: return reinterpret_cast<const uint32_t*>(p)[i];
    case DType::I64: return static_cast<double>(reinterpret_cast<const int64_t*>(p)[i]);
    case DType::U64: return static_cast<double>(reinterpret_cast<const uint64_t*>(p)[i]);
  }
  return 0;
}

double expectedValue(const PlanOp& o, int n, uint64_t i) {
  double acc = inputValue(0, i, o.index);
  for (int r = 1; r < n; ++r) {
    double x = inputValue(r, i, o.index);
    switch (o.op) {
      case ReduceOp::Sum: case ReduceOp::Avg: acc += x; break;
      case ReduceOp::Prod: acc *= x; break;
      case ReduceOp::Min: acc = std::min(acc, x); break;
      case ReduceOp::Max: acc = std::max(acc, x); break;
    }
  }
  if (o.op == ReduceOp::Avg) acc = isFloat(o.dtype) ? acc / n : std::trunc(acc / n);
  return acc;
}

uint8_t streamByte(const Stream& s, uint64_t k, int j) { return static_cast<uint8_t>(s.from * 31 + s.to * 7 + k * 13 + static_cast<uint64_t>(j)); }

Round makeRound(std::mt19937_64& rng, int opsWanted) {
  auto uni = [&](uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng); };
  Round round;
  round.peers = static_cast<int>(uni(2, 4));
  round.connections = static_cast<int>(uni(1, 4));
  static const DType kDTypes[] = {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I8,  DType::U8,
                                  DType::I16, DType::U16, DType::I32, DType::U32,  DType::I64, DType::U64};
  static const uint32_t kSegments[] = {4096, 8192, 65536, 1 << 18};
  int made = 0;
  while (made < opsWanted) {
    std::vector<PlanOp> batch;
    int inFlight = uni(0, 3) == 0 ? static_cast<int>(uni(2, 3)) : 1;
    std::vector<uint64_t> tags{0, 1, 2, 3};
    std::shuffle(tags.begin(), tags.end(), rng);
    for (int b = 0; b < inFlight && made < opsWanted; ++b, ++made) {
      PlanOp o;
      // Mostly tag 0 one op after another (the default tag); distinct tags for ops in flight together.
      o.tag = inFlight == 1 && uni(0, 3) != 0 ? 0 : tags[static_cast<size_t>(b)];
      uint64_t k = uni(0, 9);
      o.kind = k < 5 ? Kind::Auto : k < 7 ? Kind::Ring : k < 8 ? Kind::Direct : k < 9 ? Kind::Quantized : Kind::Exchange;
      o.dtype = o.kind == Kind::Quantized ? (uni(0, 1) ? DType::F32 : DType::BF16) : kDTypes[uni(0, 11)];
      o.op = static_cast<ReduceOp>(o.kind == Kind::Quantized ? uni(0, 1) : uni(0, 4));
      o.inPlace = uni(0, 1) == 0;
      o.segmentBytes = kSegments[uni(0, 3)];
      size_t elem = dtypeSize(o.dtype);
      // Sizes around every threshold: empty, tiny, the direct path's limit (64 KiB per peer sent), several
      // segments, several chunks of several segments.
      uint64_t directLimit = kDirectMaxBytes / elem / static_cast<uint64_t>(round.peers == 2 ? 1 : round.peers - 1);
      switch (uni(0, 5)) {
        case 0: o.count = uni(0, 3); break;
        case 1: o.count = uni(4, 512); break;
        case 2: o.count = directLimit - 3 + uni(0, 6); break;
        case 3: o.count = uni(513, 20000); break;
        case 4: o.count = uni(20000, 200000); break;
        default: o.count = uni(200000, 600000); break;
      }
      if (o.kind == Kind::Direct) o.count = std::min<uint64_t>(o.count, 20000);
      if (o.kind == Kind::Exchange) {
        for (int a = 0; a < round.peers; ++a)
          for (int c = 0; c < round.peers; ++c)
            if (a != c && uni(0, 1)) o.streams.push_back({a, c, static_cast<uint32_t>(a * 16 + c), uni(0, 3) == 0 ? uni(0, 10) : uni(11, 300000)});
      }
      batch.push_back(o);
    }
    round.batches.push_back(std::move(batch));
  }
  return round;
}

// One op as one peer runs it: its buffers, the operation, and the check of its result.
struct Running {
  std::vector<uint8_t> input, output;
  std::vector<std::vector<uint8_t>> sendBufs, recvBufs;  // exchange: one per stream, in plan order
  std::shared_ptr<Operation> op;
  std::future<OpError> settled;
};

std::shared_ptr<Operation> buildOp(const PlanOp& o, int n, int r, Running& run) {
  size_t bytes = o.count * dtypeSize(o.dtype);
  if (o.kind == Kind::Exchange) {
    for (const Stream& s : o.streams) {
      if (s.from == r) {
        run.sendBufs.emplace_back(s.length);
        for (uint64_t k = 0; k < s.length; ++k) run.sendBufs.back()[k] = streamByte(s, k, o.index);
      }
      if (s.to == r) run.recvBufs.emplace_back(s.length, 0);
    }
    std::vector<ExchangeSend> sends;
    std::vector<ExchangeRecv> recvs;
    for (const Stream& s : o.streams) {
      if (s.from == r) sends.push_back({s.to, s.id, run.sendBufs[sends.size()].data(), s.length});
      if (s.to == r) recvs.push_back({s.from, s.id, run.recvBufs[recvs.size()].data(), s.length});
    }
    return std::make_shared<Exchange>(std::move(sends), std::move(recvs), o.segmentBytes);
  }
  run.input.resize(bytes + 1);
  for (uint64_t i = 0; i < o.count; ++i) writeValue(o.dtype, run.input.data(), i, inputValue(r, i, o.index));
  uint8_t* out = run.input.data();
  if (!o.inPlace) {
    run.output.assign(bytes + 1, 0xAB);
    out = run.output.data();
  }
  AllReduceBuffers b{run.input.data(), out, o.count, o.dtype, o.op};
  switch (o.kind) {
    case Kind::Quantized: return std::make_shared<QuantizedAllReduce>(b, QuantizationParams{}, o.segmentBytes);
    case Kind::Direct: return std::make_shared<DirectAllReduce>(b);
    case Kind::Ring: return std::make_shared<RingAllReduce>(b, o.segmentBytes);
    default:
      if (useDirect(bytes, n)) return std::make_shared<DirectAllReduce>(b);
      return std::make_shared<RingAllReduce>(b, o.segmentBytes);
  }
}

// Checks a finished op; returns a hash of its result (compared across peers) or an error text.
bool checkResult(const PlanOp& o, int n, int r, const Running& run, uint64_t& digest, std::string& why) {
  if (o.kind == Kind::Exchange) {
    size_t i = 0;
    for (const Stream& s : o.streams) {
      if (s.to != r) continue;
      const auto& got = run.recvBufs[i++];
      for (uint64_t k = 0; k < s.length; ++k) {
        if (got[k] != streamByte(s, k, o.index)) {
          why = "stream " + std::to_string(s.id) + " byte " + std::to_string(k) + " wrong";
          return false;
        }
      }
    }
    digest = 0;
    return true;
  }
  const uint8_t* res = o.inPlace ? run.input.data() : run.output.data();
  double tol = o.kind == Kind::Quantized ? 0.1 : (o.op == ReduceOp::Avg && isFloat(o.dtype) ? 0.02 : 0.0);
  for (uint64_t i = 0; i < o.count; ++i) {
    double want = expectedValue(o, n, i), got = readValue(o.dtype, res, i);
    if (!(std::fabs(got - want) <= tol)) {
      why = "element " + std::to_string(i) + " is " + std::to_string(got) + ", expected " + std::to_string(want);
      return false;
    }
  }
  if (!o.inPlace) {
    for (uint64_t i = 0; i < o.count; ++i) {
      if (readValue(o.dtype, run.input.data(), i) != inputValue(r, i, o.index)) {
        why = "out-of-place input was written at element " + std::to_string(i);
        return false;
      }
    }
  }
  digest = xxh64(res, o.count * dtypeSize(o.dtype), 0);
  return true;
}

std::string describe(const PlanOp& o) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), "op #%d %s tag %llu count %llu %s %s %s seg %u", o.index, kindName(o.kind),
                static_cast<unsigned long long>(o.tag), static_cast<unsigned long long>(o.count), dtypeName(o.dtype),
                reduceOpName(o.op), o.inPlace ? "in place" : "out of place", o.segmentBytes);
  return buf;
}

// Runs a round: every peer on its own thread through the same batches, without waiting for the others.
int runRound(const Round& round, int& firstIndex) {
  int n = round.peers;
  int total = 0;
  for (auto& b : round.batches) total += static_cast<int>(b.size());
  std::vector<std::vector<uint64_t>> digests(static_cast<size_t>(n), std::vector<uint64_t>(static_cast<size_t>(total), 0));
  std::vector<std::string> failures(static_cast<size_t>(n));
  std::atomic<bool> stop{false};
  {
    LoopbackGroup g(n, round.connections);
    std::vector<std::thread> threads;
    for (int r = 0; r < n; ++r) {
      threads.emplace_back([&, r] {
        int k = 0;
        for (const auto& batch : round.batches) {
          if (stop.load()) return;
          std::vector<Running> runs(batch.size());
          for (size_t b = 0; b < batch.size(); ++b) {
            runs[b].op = buildOp(batch[b], n, r, runs[b]);
            runs[b].op->key.tag = batch[b].tag;
            runs[b].settled = tccl_test::submitOp(g[r], runs[b].op, 10000);
          }
          for (size_t b = 0; b < batch.size(); ++b, ++k) {
            OpError e = tccl_test::awaitOp(runs[b].settled);
            std::string why = e.message;
            uint64_t digest = 0;
            if (!e && checkResult(batch[b], n, r, runs[b], digest, why)) {
              digests[static_cast<size_t>(r)][static_cast<size_t>(k)] = digest;
              continue;
            }
            failures[static_cast<size_t>(r)] = "peer " + std::to_string(r) + ", " + describe(batch[b]) + ": " + (why.empty() ? "failed" : why);
            stop = true;
            // The other peers' ops now fail or time out; close the transport so they settle at once.
            g[r].close();
            return;
          }
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  int bad = 0;
  for (auto& f : failures) {
    if (f.empty()) continue;
    std::fprintf(stderr, "  %d peers, K=%d: %s\n", n, round.connections, f.c_str());
    ++bad;
  }
  if (!bad) {
    int k = 0;
    for (const auto& batch : round.batches) {
      for (const auto& o : batch) {
        for (int r = 1; r < n; ++r) {
          if (digests[static_cast<size_t>(r)][static_cast<size_t>(k)] != digests[0][static_cast<size_t>(k)]) {
            std::fprintf(stderr, "  %d peers, K=%d: %s: peer %d's result differs from peer 0's\n", n, round.connections, describe(o).c_str(), r);
            ++bad;
          }
        }
        ++k;
      }
    }
  }
  firstIndex += total;
  return bad;
}

void testRandomSequence() {
  const char* opsEnv = std::getenv("TCCL_SEQUENCE_OPS");
  const char* seedEnv = std::getenv("TCCL_SEQUENCE_SEED");
  long totalOps = opsEnv ? std::atol(opsEnv) : 2000;
  uint64_t seed = seedEnv ? std::strtoull(seedEnv, nullptr, 10) : 11;
  std::mt19937_64 rng(seed);
  int index = 0, rounds = 0, failedRounds = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (index < totalOps) {
    Round round = makeRound(rng, static_cast<int>(std::min<long>(300, totalOps - index)));
    int k = index;
    for (auto& b : round.batches)
      for (auto& o : b) o.index = k++;
    int bad = runRound(round, index);
    ++rounds;
    if (bad) ++failedRounds;
    CHECK_MSG(bad == 0, "round %d (%d peers, K=%d, seed %llu) failed", rounds, round.peers, round.connections,
              static_cast<unsigned long long>(seed));
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("random sequence: %d operations in %d rounds (seed %llu), %d failed rounds, %.1f s\n", index, rounds,
              static_cast<unsigned long long>(seed), failedRounds, secs);
}

}  // namespace

int main() {
  net::initSockets();
  testFrameBeforeStart();
  testRandomSequence();
  return TEST_MAIN_RESULT();
}
