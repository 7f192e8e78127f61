// Codec throughput on one core: encode, decode and decodeAccumulate of float32 data, for every codec.
// Prints one JSON line. GB/s counts the float32 bytes (4 per element), like docs/kernels.md.
//   codec_bench [elements] [runs] [blockSize]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>
#include <algorithm>

#include "codec.h"

using namespace tccl;

static double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename F>
static double medianGBs(size_t n, int runs, F&& f) {
  std::vector<double> r;
  for (int i = 0; i < runs; ++i) {
    double t0 = seconds();
    f();
    r.push_back(4.0 * static_cast<double>(n) / (seconds() - t0) / 1e9);
  }
  std::sort(r.begin(), r.end());
  return r[r.size() / 2];
}

int main(int argc, char** argv) {
  size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : (16u << 20);
  int runs = argc > 2 ? std::atoi(argv[2]) : 5;
  uint32_t bs = argc > 3 ? static_cast<uint32_t>(std::atoi(argv[3])) : 256;
  std::vector<float> x(n), acc(n, 0.0f), out(n);
  std::mt19937 g(1);
  std::normal_distribution<float> d;
  for (auto& v : x) v = d(g);
  struct Case { const char* name; Codec c; bool stochastic; };
  const Case cases[] = {{"uint8", Codec::U8, false}, {"uint8-stochastic", Codec::U8, true}, {"uint4", Codec::U4, false},
                        {"uint4-stochastic", Codec::U4, true}, {"float16", Codec::F16, false}, {"bfloat16", Codec::BF16, false}};
  std::string json = "{\"elements\":" + std::to_string(n) + ",\"blockSize\":" + std::to_string(bs) + ",\"runs\":" + std::to_string(runs) + ",\"codecs\":[";
  bool first = true;
  for (const auto& k : cases) {
    std::vector<uint8_t> enc(encodedSize(k.c, n, bs));
    CodecParams p;
    p.blockSize = bs;
    p.stochastic = k.stochastic;
    p.seed = 7;
    bool ok = true;
    double e = medianGBs(n, runs, [&] { ok = encode(k.c, x.data(), n, p, enc.data()) && ok; });
    double dec = medianGBs(n, runs, [&] { decode(k.c, enc.data(), n, bs, out.data()); });
    double da = medianGBs(n, runs, [&] { decodeAccumulate(k.c, enc.data(), n, bs, acc.data()); });
    char line[400];
    std::snprintf(line, sizeof line, "%s{\"codec\":\"%s\",\"ok\":%s,\"bytesPerElement\":%.4f,\"encodeGBs\":%.3f,\"decodeGBs\":%.3f,\"decodeAccumulateGBs\":%.3f}",
                  first ? "" : ",", k.name, ok ? "true" : "false", static_cast<double>(enc.size()) / static_cast<double>(n), e, dec, da);
    json += line;
    first = false;
  }
  json += "]}";
  std::printf("%s\n", json.c_str());
  return 0;
}
