// Tests of the float16/bfloat16 conversions and the quantization codecs: exact conversions on known values and
// against a float64 reference, codec layout and error bounds on several distributions, stochastic rounding
// (deterministic, unbiased), NaN/Inf rejection. Prints throughput (never asserted).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "check.h"
#include "codec.h"
#include "hash.h"

using namespace tccl;

namespace {

uint32_t bitsOf(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
float fromBits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
bool sameBits(float a, float b) { return bitsOf(a) == bitsOf(b); }

struct Rng {  // xorshift64*, test data only
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x1234567u) {}
  uint64_t next() { s ^= s >> 12; s ^= s << 25; s ^= s >> 27; return s * 0x2545F4914F6CDD1Dull; }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0,1)
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

// ---- reference conversions in float64 ----

double halfValue(uint16_t h) {  // exact value of a non-NaN half
  const int e = (h >> 10) & 31, m = h & 1023;
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return s * std::numeric_limits<double>::infinity();
  return e == 0 ? s * std::ldexp(m, -24) : s * std::ldexp(1024 + m, e - 25);
}
// Nearest-even rounding of a finite float to the half grid (returns +-Inf past the overflow threshold).
double roundToHalf(float f) {
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return std::copysign(std::numeric_limits<double>::infinity(), f);
  int e = a == 0 ? -14 : std::ilogb(a);
  if (e < -14) e = -14;
  const double ulp = std::ldexp(1.0, e - 10);
  return std::copysign(std::nearbyint(a / ulp) * ulp, f);  // a/ulp exact; nearbyint = ties to even
}
double roundToBf16(float f) {
  const double a = std::fabs(static_cast<double>(f));
  if (a == 0) return static_cast<double>(f);
  int e = std::ilogb(a);
  if (e < -126) e = -126;
  const double ulp = std::ldexp(1.0, e - 7);
  const double r = std::nearbyint(a / ulp) * ulp;
  if (r > 3.3895313892515355e38) return std::copysign(std::numeric_limits<double>::infinity(), f);  // > max bf16
  return std::copysign(r, f);
}

void testHalfKnown() {
  struct K { float f; uint16_t h; };
  const K ks[] = {
      {1.0f, 0x3C00}, {-2.5f, 0xC100}, {65504.0f, 0x7BFF}, {-65504.0f, 0xFBFF}, {0.0f, 0x0000}, {-0.0f, 0x8000},
      {0.5f, 0x3800}, {std::ldexp(1.0f, -14), 0x0400}, {std::ldexp(1.0f, -24), 0x0001},
      {std::ldexp(1023.0f, -24), 0x03FF}, {std::numeric_limits<float>::infinity(), 0x7C00},
      {-std::numeric_limits<float>::infinity(), 0xFC00},
      // rounding ties and the overflow threshold
      {1.0f + std::ldexp(1.0f, -11), 0x3C00}, {1.0f + 3 * std::ldexp(1.0f, -11), 0x3C02},
      {std::ldexp(1.0f, -25), 0x0000}, {3 * std::ldexp(1.0f, -25), 0x0002}, {5 * std::ldexp(1.0f, -25), 0x0002},
      {std::nextafter(std::ldexp(1.0f, -25), 1.0f), 0x0001}, {65519.0f, 0x7BFF}, {65520.0f, 0x7C00},
      {1e10f, 0x7C00}, {-1e10f, 0xFC00}, {1e-10f, 0x0000}, {std::ldexp(2047.0f, -25), 0x0400},
  };
  for (const K& k : ks) {
    CHECK_MSG(floatToHalf(k.f) == k.h, "floatToHalf(%a) = %04x, want %04x", k.f, floatToHalf(k.f), k.h);
  }
  CHECK(halfToFloat(0x3C00) == 1.0f);
  CHECK(halfToFloat(0xC100) == -2.5f);
  CHECK(halfToFloat(0x7BFF) == 65504.0f);
  CHECK(halfToFloat(0x0001) == std::ldexp(1.0f, -24));
  CHECK(sameBits(halfToFloat(0x8000), -0.0f));
  CHECK(std::isinf(halfToFloat(0x7C00)) && halfToFloat(0x7C00) > 0);
  // NaN: stays NaN, quiet, sign kept, payload top bits kept.
  const uint16_t qn = floatToHalf(std::numeric_limits<float>::quiet_NaN());
  CHECK((qn & 0x7E00) == 0x7E00);
  CHECK(floatToHalf(fromBits(0x7F800001u)) == 0x7E00);  // signalling NaN with a low payload -> quiet
  CHECK(floatToHalf(fromBits(0xFFC02000u)) == 0xFE01);
  CHECK(std::isnan(halfToFloat(0x7C01)) && (bitsOf(halfToFloat(0x7C01)) & 0x00400000u) == 0);  // payload kept
  CHECK(std::isnan(halfToFloat(0x7E00)));

  // Every half: decode exactly, and re-encode to itself.
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = halfToFloat(static_cast<uint16_t>(h));
    const bool nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF);
    if (nan) {
      CHECK_MSG(std::isnan(f), "half %04x", h);
      CHECK_MSG((floatToHalf(f) & 0x7FFF) == (h | 0x200) - (h & 0x8000), "half NaN %04x", h);
    } else {
      CHECK_MSG(static_cast<double>(f) == halfValue(static_cast<uint16_t>(h)), "halfToFloat(%04x)", h);
      CHECK_MSG(floatToHalf(f) == h, "round trip %04x", h);
    }
  }
  // Random floats of every magnitude, and every float near the half range, against the float64 reference.
  Rng rng(7);
  for (int i = 0; i < 2000000; ++i) {
    uint32_t b = static_cast<uint32_t>(rng.next());
    if (i & 1) b = (b & 0x80000000u) | (0x33000000u + (b & 0x0FFFFFFFu) % 0x14800000u);  // ~2^-25 .. 2^16
    const float f = fromBits(b);
    if (std::isnan(f)) continue;
    const uint16_t h = floatToHalf(f);
    const double want = roundToHalf(f);
    CHECK_MSG(halfValue(h) == want && std::signbit(halfValue(h)) == std::signbit(want), "floatToHalf(%a) = %04x",
              f, h);
  }
}

void testBFloat16Known() {
  struct K { float f; uint16_t h; };
  const K ks[] = {
      {1.0f, 0x3F80}, {-2.5f, 0xC020}, {0.0f, 0x0000}, {-0.0f, 0x8000},
      {1.0f + std::ldexp(1.0f, -8), 0x3F80}, {1.0f + 3 * std::ldexp(1.0f, -8), 0x3F82},
      {std::numeric_limits<float>::max(), 0x7F80}, {fromBits(0x7F7F0000u), 0x7F7F},
      {std::numeric_limits<float>::infinity(), 0x7F80}, {-std::numeric_limits<float>::infinity(), 0xFF80},
      {fromBits(0x00010000u), 0x0001}, {fromBits(0x00018000u), 0x0002}, {fromBits(0x00008000u), 0x0000},
  };
  for (const K& k : ks) {
    CHECK_MSG(floatToBFloat16(k.f) == k.h, "floatToBFloat16(%a) = %04x, want %04x", k.f, floatToBFloat16(k.f), k.h);
  }
  CHECK(floatToBFloat16(fromBits(0x7F800001u)) == 0x7FC0);
  CHECK(floatToBFloat16(fromBits(0xFFFFFFFFu)) == 0xFFFF);
  CHECK(bfloat16ToFloat(0x3F80) == 1.0f);
  CHECK(bfloat16ToFloat(0xC020) == -2.5f);
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bfloat16ToFloat(static_cast<uint16_t>(h));
    CHECK(bitsOf(f) == h << 16);
    if (!std::isnan(f)) CHECK_MSG(floatToBFloat16(f) == h, "bf16 round trip %04x", h);
  }
  Rng rng(8);
  for (int i = 0; i < 1000000; ++i) {
    const float f = fromBits(static_cast<uint32_t>(rng.next()));
    if (std::isnan(f)) continue;
    const double got = static_cast<double>(bfloat16ToFloat(floatToBFloat16(f)));
    const double want = roundToBf16(f);
    CHECK_MSG(got == want && std::signbit(got) == std::signbit(want), "floatToBFloat16(%a)", f);
  }
}

void testArrays() {
  Rng rng(9);
  std::vector<float> f(1003);
  for (auto& x : f) x = fromBits(static_cast<uint32_t>(rng.next()));
  std::vector<uint16_t> h(f.size()), b(f.size());
  std::vector<float> back(f.size());
  floatToHalfArray(f.data(), h.data(), f.size());
  floatToBFloat16Array(f.data(), b.data(), f.size());
  for (size_t i = 0; i < f.size(); ++i) {
    CHECK(h[i] == floatToHalf(f[i]));
    CHECK(b[i] == floatToBFloat16(f[i]));
  }
  halfToFloatArray(h.data(), back.data(), h.size());
  for (size_t i = 0; i < h.size(); ++i) CHECK(sameBits(back[i], halfToFloat(h[i])));
  bfloat16ToFloatArray(b.data(), back.data(), b.size());
  for (size_t i = 0; i < b.size(); ++i) CHECK(sameBits(back[i], bfloat16ToFloat(b[i])));
}

// ---- quantization codecs ----

size_t blockOf(size_t n, uint32_t bs) { return bs ? bs : n; }

// Checks decode(encode(x)) per block against the documented bound and returns the worst error in units of scale.
double checkRoundTrip(Codec c, const std::vector<float>& x, uint32_t bs, bool stochastic, const char* what) {
  const size_t n = x.size();
  CodecParams p;
  p.blockSize = bs;
  p.stochastic = stochastic;
  p.seed = 42;
  std::vector<uint8_t> enc(encodedSize(c, n, bs) + 1, 0xAB);
  CHECK_MSG(encode(c, x.data(), n, p, enc.data()), "%s: encode failed", what);
  CHECK_MSG(enc.back() == 0xAB, "%s: wrote past encodedSize", what);
  std::vector<float> y(n, 0.0f);
  decode(c, enc.data(), n, bs, y.data());
  // decodeAccumulate = one float addition onto the accumulator.
  std::vector<float> acc(n);
  for (size_t i = 0; i < n; ++i) acc[i] = static_cast<float>(i % 7) - 3.0f;
  std::vector<float> acc0 = acc;
  decodeAccumulate(c, enc.data(), n, bs, acc.data());
  for (size_t i = 0; i < n; ++i) CHECK_MSG(sameBits(acc[i], acc0[i] + y[i]), "%s: decodeAccumulate at %zu", what, i);

  const size_t B = blockOf(n, bs);
  const size_t perBlock = 8 + (c == Codec::U4 ? (B + 1) / 2 : B);
  double worst = 0;
  for (size_t b0 = 0, k = 0; b0 < n; b0 += B, ++k) {
    const size_t len = std::min(B, n - b0);
    float mn, scale;
    std::memcpy(&mn, enc.data() + k * perBlock, 4);
    std::memcpy(&scale, enc.data() + k * perBlock + 4, 4);
    const float lo = *std::min_element(x.begin() + b0, x.begin() + b0 + len);
    const float hi = *std::max_element(x.begin() + b0, x.begin() + b0 + len);
    CHECK_MSG(mn == lo, "%s: block %zu min", what, k);
    const double levels = c == Codec::U4 ? 15.0 : 255.0;
    CHECK_MSG(scale == static_cast<float>((static_cast<double>(hi) - lo) / levels), "%s: block %zu scale", what, k);
    const double mag = std::max(std::fabs(static_cast<double>(lo)), std::fabs(static_cast<double>(hi)));
    // float32 rounding of t, of scale and of min + q*scale; subnormal scales are only multiples of 2^-149.
    const double slack = 4.0 * std::ldexp(mag, -24) + 256.0 * std::ldexp(1.0, -149);
    const double bound = (stochastic ? 1.0 : 0.5) * scale * (1 + 1e-5) + slack;
    double sq = 0;
    for (size_t i = b0; i < b0 + len; ++i) {
      const double err = std::fabs(static_cast<double>(y[i]) - x[i]);
      sq += err * err;
      CHECK_MSG(err <= bound, "%s: elem %zu x=%a y=%a err=%g bound=%g", what, i, x[i], y[i], err, bound);
      if (scale > 0) worst = std::max(worst, err / scale);
      const double yv = y[i];
      CHECK_MSG(yv >= lo - slack && yv <= hi + slack, "%s: decoded value outside block range", what);
    }
    CHECK_MSG(std::sqrt(sq / len) <= bound, "%s: block %zu RMS", what, k);
    if (scale == 0) {
      for (size_t i = b0; i < b0 + len; ++i) CHECK_MSG(y[i] == x[i], "%s: constant block decodes exactly", what);
    }
  }
  return worst;
}

void testLayout() {
  CHECK(encodedSize(Codec::None, 10, 256) == 40);
  CHECK(encodedSize(Codec::F16, 10, 256) == 20);
  CHECK(encodedSize(Codec::BF16, 10, 256) == 20);
  CHECK(encodedSize(Codec::U8, 0, 256) == 0);
  CHECK(encodedSize(Codec::U8, 256, 256) == 264);
  CHECK(encodedSize(Codec::U8, 257, 256) == 264 + 9);
  CHECK(encodedSize(Codec::U4, 256, 256) == 136);
  CHECK(encodedSize(Codec::U4, 259, 256) == 136 + 8 + 2);
  CHECK(encodedSize(Codec::U4, 21, 7) == 3 * (8 + 4));
  CHECK(encodedSize(Codec::U8, 1000, 0) == 1008);  // blockSize 0: one block

  // A worked example: [min][scale][q...] with q = round((x - min) / scale).
  const float x[5] = {0.0f, 1.0f, 2.0f, 3.0f, 1.5f};
  uint8_t out[64];
  CodecParams p;
  p.blockSize = 5;
  CHECK(encode(Codec::U8, x, 5, p, out));
  float mn, scale;
  std::memcpy(&mn, out, 4);
  std::memcpy(&scale, out + 4, 4);
  CHECK(mn == 0.0f && scale == 3.0f / 255.0f);
  CHECK(out[8] == 0 && out[9] == 85 && out[10] == 170 && out[11] == 255 && out[12] == 128);  // 127.5 rounds up
  CHECK(encode(Codec::U4, x, 5, p, out));
  std::memcpy(&scale, out + 4, 4);
  CHECK(scale == 0.2f);
  CHECK(out[8] == (0 | 5 << 4) && out[9] == (10 | 15 << 4) && out[10] == 8);  // low nibble first; 7.5 -> 8
  float y[5];
  decode(Codec::U4, out, 5, 5, y);
  CHECK(y[0] == 0.0f && y[3] == 0.0f + 15.0f * 0.2f);
}

void testDistributions() {
  const size_t n = 100003;  // not a multiple of any block size used
  Rng rng(11);
  std::vector<float> normal(n), uniform(n), cauchy(n), constant(n, 0.37f), wide(n), tiny(n), mixed(n);
  for (size_t i = 0; i < n; ++i) {
    normal[i] = static_cast<float>(rng.normal() * 3.0 + 1.0);
    uniform[i] = static_cast<float>(rng.uniform() * 20.0 - 5.0);
    cauchy[i] = static_cast<float>(std::tan(3.141592653589793 * (rng.uniform() - 0.5)));
    wide[i] = static_cast<float>((rng.uniform() * 2.0 - 1.0) * 1.5e38);  // range near the float32 limit
    tiny[i] = fromBits(static_cast<uint32_t>(rng.next() % 2000)) * ((i & 1) ? 1.0f : -1.0f);  // subnormals
    mixed[i] = (i / 300) % 2 ? -0.0f : normal[i];
  }
  for (Codec c : {Codec::U8, Codec::U4}) {
    for (uint32_t bs : {256u, 100u, 7u, 1u, 0u, 4096u}) {
      for (bool st : {false, true}) {
        char what[96];
        const char* names[] = {"normal", "uniform", "cauchy", "constant", "wide", "tiny", "mixed"};
        const std::vector<float>* data[] = {&normal, &uniform, &cauchy, &constant, &wide, &tiny, &mixed};
        for (int d = 0; d < 7; ++d) {
          std::snprintf(what, sizeof what, "%s bs=%u %s %s", codecName(c), bs, st ? "stochastic" : "nearest",
                        names[d]);
          const double worst = checkRoundTrip(c, *data[d], bs, st, what);
          if (!st && d == 1 && bs == 256) std::printf("%s: max error %.4f * scale\n", what, worst);
        }
      }
    }
  }
  // Exact-level inputs decode exactly: x = min + q*scale.
  std::vector<float> grid(256);
  for (int q = 0; q < 256; ++q) grid[q] = -1.0f + static_cast<float>(q) * (2.0f / 255.0f);
  for (size_t i = 0; i < grid.size(); ++i) grid[i] = -1.0f + static_cast<float>(i) * static_cast<float>(2.0 / 255.0);
  CodecParams p;
  std::vector<uint8_t> enc(encodedSize(Codec::U8, 256, 256));
  CHECK(encode(Codec::U8, grid.data(), 256, p, enc.data()));
  for (int q = 0; q < 256; ++q) CHECK_MSG(enc[8 + q] == q, "grid level %d", q);

  // F16 / BF16 codecs: plain round-to-nearest-even casts.
  for (Codec c : {Codec::F16, Codec::BF16}) {
    std::vector<uint8_t> e(encodedSize(c, n, 0));
    CHECK(encode(c, normal.data(), n, p, e.data()));
    std::vector<float> y(n);
    decode(c, e.data(), n, 0, y.data());
    for (size_t i = 0; i < n; ++i) {
      const float want = c == Codec::F16 ? halfToFloat(floatToHalf(normal[i])) : bfloat16ToFloat(floatToBFloat16(normal[i]));
      CHECK(sameBits(y[i], want));
    }
  }
  // None: verbatim.
  {
    std::vector<uint8_t> e(encodedSize(Codec::None, n, 0));
    CHECK(encode(Codec::None, cauchy.data(), n, p, e.data()));
    std::vector<float> y(n);
    decode(Codec::None, e.data(), n, 0, y.data());
    CHECK(std::memcmp(y.data(), cauchy.data(), 4 * n) == 0);
  }
}

void testStochastic() {
  // Same seed and data: same bytes; another seed: other bytes; stochastic != nearest.
  const size_t n = 5000;
  Rng rng(12);
  std::vector<float> x(n);
  for (auto& v : x) v = static_cast<float>(rng.normal());
  for (Codec c : {Codec::U8, Codec::U4}) {
    CodecParams p;
    p.stochastic = true;
    p.seed = 99;
    const size_t sz = encodedSize(c, n, p.blockSize);
    std::vector<uint8_t> a(sz), b(sz), d(sz), nearest(sz);
    CHECK(encode(c, x.data(), n, p, a.data()));
    CHECK(encode(c, x.data(), n, p, b.data()));
    CHECK(a == b);
    p.seed = 100;
    CHECK(encode(c, x.data(), n, p, d.data()));
    CHECK(a != d);
    p.stochastic = false;
    CHECK(encode(c, x.data(), n, p, nearest.data()));
    CHECK(a != nearest);
  }
  // Unbiased: one value between two levels, many elements (independent draws) and many seeds.
  for (Codec c : {Codec::U8, Codec::U4}) {
    const uint32_t bs = 1024;
    const size_t m = 64 * bs;
    const double levels = c == Codec::U4 ? 15.0 : 255.0;
    const double target = 0.3;  // t = 76.5 (U8) or 4.5 (U4): nearest rounding would always go up
    std::vector<float> v(m, static_cast<float>(target));
    for (size_t b0 = 0; b0 < m; b0 += bs) { v[b0] = 0.0f; v[b0 + 1] = 1.0f; }
    CodecParams p;
    p.blockSize = bs;
    p.stochastic = true;
    double sum = 0;
    size_t count = 0;
    std::vector<uint8_t> e(encodedSize(c, m, bs));
    std::vector<float> y(m);
    for (uint64_t seed = 0; seed < 8; ++seed) {
      p.seed = seed * 1000003u;
      CHECK(encode(c, v.data(), m, p, e.data()));
      decode(c, e.data(), m, bs, y.data());
      for (size_t i = 0; i < m; ++i) {
        if (i % bs < 2) continue;
        sum += y[i];
        ++count;
      }
    }
    const double mean = sum / static_cast<double>(count);
    const double scale = 1.0 / levels;
    const double sigma = 0.5 * scale / std::sqrt(static_cast<double>(count));
    std::printf("%s stochastic: mean of %zu draws of %.3f = %.6f (%.2f sigma)\n", codecName(c), count, target, mean,
                (mean - target) / sigma);
    CHECK_MSG(std::fabs(mean - target) < 6 * sigma + 1e-6, "%s stochastic mean %.6f", codecName(c), mean);
    // A single element over many seeds.
    double s1 = 0;
    const int seeds = 4000;
    float one[3] = {0.0f, 1.0f, static_cast<float>(target)};
    uint8_t e1[32];
    for (int s = 0; s < seeds; ++s) {
      p.seed = static_cast<uint64_t>(s);
      p.blockSize = 3;
      CHECK(encode(c, one, 3, p, e1));
      float out[3];
      decode(c, e1, 3, 3, out);
      s1 += out[2];
    }
    const double mean1 = s1 / seeds;
    CHECK_MSG(std::fabs(mean1 - target) < 6 * 0.5 * scale / std::sqrt(static_cast<double>(seeds)),
              "%s stochastic per-seed mean %.6f", codecName(c), mean1);
  }
}

void testRejects() {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const size_t n = 1000;
  for (Codec c : {Codec::U8, Codec::U4, Codec::F16, Codec::BF16}) {
    for (float bad : {nan, -nan, inf, -inf, fromBits(0x7F800001u)}) {
      for (size_t pos : {size_t{0}, size_t{300}, n - 1}) {
        std::vector<float> x(n, 1.0f);
        x[pos] = bad;
        std::vector<uint8_t> e(encodedSize(c, n, 256));
        CodecParams p;
        CHECK_MSG(!encode(c, x.data(), n, p, e.data()), "%s accepted %a at %zu", codecName(c), bad, pos);
        p.stochastic = true;
        CHECK(!encode(c, x.data(), n, p, e.data()));
      }
    }
  }
  // Finite values that overflow the 16-bit formats.
  const float big16[2] = {1.0f, 70000.0f};
  uint8_t e[8];
  CodecParams p;
  CHECK(!encode(Codec::F16, big16, 2, p, e));
  const float ok16[2] = {1.0f, 65504.0f};
  CHECK(encode(Codec::F16, ok16, 2, p, e));
  const float bigbf[1] = {std::numeric_limits<float>::max()};
  CHECK(!encode(Codec::BF16, bigbf, 1, p, e));
  // A block range beyond float32 cannot be decoded (min + 255*scale overflows): rejected.
  const float huge[2] = {-3e38f, 3e38f};
  CHECK(!encode(Codec::U8, huge, 2, p, e));
  CHECK(!encode(Codec::U4, huge, 2, p, e));
  // None copies anything.
  const float any[2] = {nan, inf};
  CHECK(encode(Codec::None, any, 2, p, e));
}

// Bytes pinned so that a change of rounding, RNG or layout on any platform shows up.
void testGolden() {
  const size_t n = 1000;
  std::vector<float> x(n);
  Rng rng(13);  // integer arithmetic and one correctly rounded division only: no libm, same on every platform
  for (auto& v : x) v = static_cast<float>(static_cast<int32_t>(rng.next() % 2000001) - 1000000) / 3000.0f;
  uint64_t h[4];
  int k = 0;
  for (Codec c : {Codec::U8, Codec::U4}) {
    for (bool st : {false, true}) {
      CodecParams p;
      p.blockSize = 100;
      p.stochastic = st;
      p.seed = 5;
      std::vector<uint8_t> e(encodedSize(c, n, p.blockSize));
      CHECK(encode(c, x.data(), n, p, e.data()));
      h[k++] = xxh64(e.data(), e.size(), 0);
    }
  }
  std::printf("golden: %016llx %016llx %016llx %016llx\n", (unsigned long long)h[0], (unsigned long long)h[1],
              (unsigned long long)h[2], (unsigned long long)h[3]);
  const uint64_t want[4] = {0x1e045377f1138a49ull, 0x61811fb6e4b60c3aull, 0x3872c492686d1881ull, 0x864f36704baa7ed5ull};
  for (int i = 0; i < 4; ++i) CHECK_MSG(h[i] == want[i], "golden encoding %d changed", i);
}

void bench() {
  const size_t n = size_t{16} << 20;  // 64 MiB of float32
  Rng rng(14);
  std::vector<float> x(n), acc(n, 0.0f);
  for (auto& v : x) v = static_cast<float>(rng.normal());
  std::vector<uint8_t> e(encodedSize(Codec::None, n, 256));
  auto gbs = [&](auto&& f) {
    double best = 1e30;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      f();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return static_cast<double>(n) * 4 / best / 1e9;  // GB/s of float32 input
  };
  for (Codec c : {Codec::U8, Codec::U4, Codec::F16, Codec::BF16}) {
    CodecParams p;
    const double enc = gbs([&] { encode(c, x.data(), n, p, e.data()); });
    p.stochastic = true;
    const double encS = gbs([&] { encode(c, x.data(), n, p, e.data()); });
    const double dec = gbs([&] { decodeAccumulate(c, e.data(), n, 256, acc.data()); });
    std::printf("%-4s 64 MiB float32: encode %.2f GB/s, stochastic %.2f GB/s, decodeAccumulate %.2f GB/s\n",
                codecName(c), enc, encS, dec);
  }
}

}  // namespace

int main() {
  testHalfKnown();
  testBFloat16Known();
  testArrays();
  testLayout();
  testDistributions();
  testStochastic();
  testRejects();
  testGolden();
  bench();
  return TEST_MAIN_RESULT();
}
