// All-gather, reduce-scatter and broadcast (native/core/chain.h) on loopback transports in one process: results
// against a reference for several group sizes, segment sizes smaller than a chunk, empty parts, every root, and
// a size mismatch that fails every peer with Mismatch while the inputs stay as they were.
#include <cstring>
#include <future>
#include <memory>
#include <vector>

#include "chain.h"
#include "check.h"
#include "loopback_group.h"
#include "socket.h"

using namespace tccl;
using tccl_test::runOp;
using Group = tccl_test::LoopbackGroup;

namespace {

std::vector<OpError> runAll(Group& g, const std::vector<CollectiveSpec>& specs, uint32_t segBytes) {
  std::vector<std::future<OpError>> futs;
  for (size_t r = 0; r < specs.size(); ++r) {
    auto op = makeCollective(specs[r], segBytes);
    op->key.tag = 3;
    Transport* t = g.members[r].get();
    futs.push_back(std::async(std::launch::async, [t, op] { return runOp(*t, op); }));
  }
  std::vector<OpError> errs;
  for (auto& f : futs) errs.push_back(f.get());
  return errs;
}

void testAllGather() {
  for (int n : {1, 2, 3}) {
    Group g(n);
    // Parts of different sizes, one of them empty, split into many 12-byte segments.
    std::vector<uint64_t> counts;
    for (int r = 0; r < n; ++r) counts.push_back(r == 1 ? 0 : static_cast<uint64_t>(37 * (r + 1)));
    uint64_t total = 0;
    for (auto c : counts) total += c;
    std::vector<std::vector<int32_t>> in(static_cast<size_t>(n)), out(static_cast<size_t>(n), std::vector<int32_t>(total, -1));
    std::vector<CollectiveSpec> specs;
    for (int r = 0; r < n; ++r) {
      for (uint64_t i = 0; i < counts[static_cast<size_t>(r)]; ++i) in[static_cast<size_t>(r)].push_back(r * 1000 + static_cast<int32_t>(i));
      CollectiveSpec s;
      s.kind = CollectiveKind::AllGather;
      s.input = reinterpret_cast<const uint8_t*>(in[static_cast<size_t>(r)].data());
      s.output = reinterpret_cast<uint8_t*>(out[static_cast<size_t>(r)].data());
      s.count = total;
      s.dtype = DType::I32;
      s.chunkCounts = counts;
      specs.push_back(s);
    }
    for (auto& e : runAll(g, specs, 12)) CHECK_MSG(!e, "n=%d: %s", n, e.message.c_str());
    std::vector<int32_t> want;
    for (int r = 0; r < n; ++r) want.insert(want.end(), in[static_cast<size_t>(r)].begin(), in[static_cast<size_t>(r)].end());
    for (int r = 0; r < n; ++r) CHECK_MSG(out[static_cast<size_t>(r)] == want, "all-gather n=%d peer %d", n, r);
  }
}

void testReduceScatter() {
  for (int n : {2, 3}) {
    Group g(n);
    const uint64_t count = 1001;
    std::vector<std::vector<int64_t>> in(static_cast<size_t>(n)), out(static_cast<size_t>(n), std::vector<int64_t>(count, 0));
    std::vector<CollectiveSpec> specs;
    for (int r = 0; r < n; ++r) {
      for (uint64_t i = 0; i < count; ++i) in[static_cast<size_t>(r)].push_back(static_cast<int64_t>(i * (r + 1)));
      CollectiveSpec s;
      s.kind = CollectiveKind::ReduceScatter;
      s.input = reinterpret_cast<const uint8_t*>(in[static_cast<size_t>(r)].data());
      s.output = reinterpret_cast<uint8_t*>(out[static_cast<size_t>(r)].data());
      s.count = count;
      s.dtype = DType::I64;
      s.op = ReduceOp::Sum;
      specs.push_back(s);
    }
    auto before = in;
    for (auto& e : runAll(g, specs, 64)) CHECK_MSG(!e, "n=%d: %s", n, e.message.c_str());
    CHECK_MSG(in == before, "reduce-scatter leaves its input as it was");
    const int64_t factor = n * (n + 1) / 2;
    for (int r = 0; r < n; ++r) {
      bool ok = true;
      for (uint64_t i = count * r / n; i < count * (r + 1) / n; ++i) ok = ok && out[static_cast<size_t>(r)][i] == static_cast<int64_t>(i) * factor;
      CHECK_MSG(ok, "reduce-scatter n=%d: peer %d owns chunk %d", n, r, r);
    }
  }
}

void testBroadcast() {
  const int n = 3;
  Group g(n);
  for (int root = 0; root < n; ++root) {
    const uint64_t count = 5000;
    std::vector<std::vector<double>> buf(static_cast<size_t>(n), std::vector<double>(count, -1.0));
    for (uint64_t i = 0; i < count; ++i) buf[static_cast<size_t>(root)][i] = 0.25 * static_cast<double>(i) + root;
    std::vector<CollectiveSpec> specs;
    for (int r = 0; r < n; ++r) {
      CollectiveSpec s;
      s.kind = CollectiveKind::Broadcast;
      s.input = reinterpret_cast<const uint8_t*>(buf[static_cast<size_t>(r)].data());
      s.output = reinterpret_cast<uint8_t*>(buf[static_cast<size_t>(r)].data());
      s.count = count;
      s.dtype = DType::F64;
      s.root = root;
      specs.push_back(s);
    }
    for (auto& e : runAll(g, specs, 1000)) CHECK_MSG(!e, "root %d: %s", root, e.message.c_str());
    for (int r = 0; r < n; ++r) CHECK_MSG(buf[static_cast<size_t>(r)] == buf[static_cast<size_t>(root)], "broadcast from %d reaches %d", root, r);
  }
}

void testMismatch() {
  Group g(2);
  std::vector<float> a(100, 1.0f), b(101, 2.0f), oa(100), ob(101);
  std::vector<CollectiveSpec> specs(2);
  for (int r = 0; r < 2; ++r) {
    auto& s = specs[static_cast<size_t>(r)];
    s.kind = CollectiveKind::ReduceScatter;
    s.input = reinterpret_cast<const uint8_t*>(r ? b.data() : a.data());
    s.output = reinterpret_cast<uint8_t*>(r ? ob.data() : oa.data());
    s.count = r ? b.size() : a.size();
  }
  for (auto& e : runAll(g, specs, 4096)) CHECK_MSG(e.code == ErrorCode::Mismatch, "mismatch: %s", e.message.c_str());
  CHECK(a == std::vector<float>(100, 1.0f) && b == std::vector<float>(101, 2.0f));
  // A part count that does not fit the group (it changed under the caller): a retryable PeerLost, nothing sent.
  CollectiveSpec s;
  s.kind = CollectiveKind::AllGather;
  s.input = reinterpret_cast<const uint8_t*>(a.data());
  s.output = reinterpret_cast<uint8_t*>(oa.data());
  s.count = 100;
  s.chunkCounts = {40, 30, 30};
  OpError e = runOp(*g.members[0], makeCollective(s, 4096));
  CHECK_MSG(e.code == ErrorCode::PeerLost, "group change: %s", e.message.c_str());
}

}  // namespace

int main() {
  net::initSockets();
  testAllGather();
  testReduceScatter();
  testBroadcast();
  testMismatch();
  return TEST_MAIN_RESULT();
}
