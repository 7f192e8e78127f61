// Tests of the reduction kernels: every (dtype x op) against a scalar reference, in place and out of place
// (including aliasing), integer wrap-around, IEEE specials, order-independent Min/Max, float16/bfloat16
// rounding, finishAverage. Prints float32 Sum throughput (never asserted).
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
#include "reduce.h"

using namespace tccl;

namespace {

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 99) {}
  uint64_t next() { s ^= s >> 12; s ^= s << 25; s ^= s >> 27; return s * 0x2545F4914F6CDD1Dull; }
};

template <class T> T ld(const unsigned char* p, size_t i) { T v; std::memcpy(&v, p + i * sizeof(T), sizeof(T)); return v; }
template <class T> void st(unsigned char* p, size_t i, T v) { std::memcpy(p + i * sizeof(T), &v, sizeof(T)); }

// ---- scalar references, written independently of the kernels ----

template <class T>
T refInt(ReduceOp op, T a, T b) {
  constexpr int bits = 8 * sizeof(T);
  const uint64_t mask = bits == 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
  const uint64_t ua = static_cast<uint64_t>(a) & mask, ub = static_cast<uint64_t>(b) & mask;
  uint64_t r = 0;
  switch (op) {
    case ReduceOp::Sum: case ReduceOp::Avg: r = (ua + ub) & mask; break;
    case ReduceOp::Prod: r = (ua * ub) & mask; break;
    case ReduceOp::Min: return std::min(a, b);
    case ReduceOp::Max: return std::max(a, b);
  }
  T out;
  std::memcpy(&out, &r, sizeof(T));  // little-endian host: low bytes first
  return out;
}

template <class F> struct Bits;
template <> struct Bits<float> { using U = uint32_t; static constexpr U nan = 0x7FC00000u; };
template <> struct Bits<double> { using U = uint64_t; static constexpr U nan = 0x7FF8000000000000ull; };
template <class F> typename Bits<F>::U bitsOf(F f) { typename Bits<F>::U u; std::memcpy(&u, &f, sizeof f); return u; }
template <class F> F ofBits(typename Bits<F>::U u) { F f; std::memcpy(&f, &u, sizeof f); return f; }

template <class F>
F refFloat(ReduceOp op, F a, F b) {
  switch (op) {
    case ReduceOp::Sum: case ReduceOp::Avg: return a + b;
    case ReduceOp::Prod: return a * b;
    case ReduceOp::Min:
    case ReduceOp::Max: {
      if (std::isnan(a) || std::isnan(b)) return ofBits<F>(Bits<F>::nan);
      if (a == 0 && b == 0) {
        const bool neg = op == ReduceOp::Min ? (std::signbit(a) || std::signbit(b)) : (std::signbit(a) && std::signbit(b));
        return neg ? -F(0) : F(0);
      }
      return op == ReduceOp::Min ? (a < b ? a : b) : (a > b ? a : b);
    }
  }
  return a;
}

uint16_t refHalf(ReduceOp op, uint16_t a, uint16_t b, bool bf) {
  auto in = [bf](uint16_t h) { return bf ? bfloat16ToFloat(h) : halfToFloat(h); };
  auto out = [bf](float f) { return bf ? floatToBFloat16(f) : floatToHalf(f); };
  return out(refFloat<float>(op, in(a), in(b)));
}

// Reference on raw bytes; NaN outputs of Sum/Prod are only required to be NaN.
bool sameResult(DType t, const unsigned char* got, const unsigned char* want, size_t i) {
  switch (t) {
    case DType::F32: {
      const float g = ld<float>(got, i), w = ld<float>(want, i);
      return std::isnan(w) ? std::isnan(g) : bitsOf(g) == bitsOf(w);
    }
    case DType::F64: {
      const double g = ld<double>(got, i), w = ld<double>(want, i);
      return std::isnan(w) ? std::isnan(g) : bitsOf(g) == bitsOf(w);
    }
    case DType::F16: case DType::BF16: {
      const uint16_t g = ld<uint16_t>(got, i), w = ld<uint16_t>(want, i);
      const uint16_t expMask = t == DType::F16 ? 0x7C00 : 0x7F80;
      auto isNan = [&](uint16_t h) { return (h & expMask) == expMask && (h & ~expMask & 0x7FFF) != 0; };
      return isNan(w) ? isNan(g) : g == w;
    }
    default: {
      const size_t sz = dtypeSize(t);
      return std::memcmp(got + i * sz, want + i * sz, sz) == 0;
    }
  }
}

void refReduce(DType t, ReduceOp op, unsigned char* d, const unsigned char* a, const unsigned char* b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    switch (t) {
      case DType::F32: st(d, i, refFloat<float>(op, ld<float>(a, i), ld<float>(b, i))); break;
      case DType::F64: st(d, i, refFloat<double>(op, ld<double>(a, i), ld<double>(b, i))); break;
      case DType::F16: st(d, i, refHalf(op, ld<uint16_t>(a, i), ld<uint16_t>(b, i), false)); break;
      case DType::BF16: st(d, i, refHalf(op, ld<uint16_t>(a, i), ld<uint16_t>(b, i), true)); break;
      case DType::I8: st(d, i, refInt<int8_t>(op, ld<int8_t>(a, i), ld<int8_t>(b, i))); break;
      case DType::U8: st(d, i, refInt<uint8_t>(op, ld<uint8_t>(a, i), ld<uint8_t>(b, i))); break;
      case DType::I16: st(d, i, refInt<int16_t>(op, ld<int16_t>(a, i), ld<int16_t>(b, i))); break;
      case DType::U16: st(d, i, refInt<uint16_t>(op, ld<uint16_t>(a, i), ld<uint16_t>(b, i))); break;
      case DType::I32: st(d, i, refInt<int32_t>(op, ld<int32_t>(a, i), ld<int32_t>(b, i))); break;
      case DType::U32: st(d, i, refInt<uint32_t>(op, ld<uint32_t>(a, i), ld<uint32_t>(b, i))); break;
      case DType::I64: st(d, i, refInt<int64_t>(op, ld<int64_t>(a, i), ld<int64_t>(b, i))); break;
      case DType::U64: st(d, i, refInt<uint64_t>(op, ld<uint64_t>(a, i), ld<uint64_t>(b, i))); break;
    }
  }
}

// Random element bytes with plenty of specials: for floats, NaNs with payloads, +-Inf, +-0, subnormals,
// extreme and ordinary values; for integers, extremes and small values.
void fill(DType t, unsigned char* p, size_t n, Rng& rng) {
  const size_t sz = dtypeSize(t);
  for (size_t i = 0; i < n; ++i) {
    uint64_t r = rng.next();
    const unsigned kind = static_cast<unsigned>(rng.next() % 16);
    if (t == DType::F32) {
      const uint32_t sign = (r >> 40 & 1) ? 0x80000000u : 0;
      const uint32_t specials[] = {0x7F800000u, 0x7FC00000u, 0x7F800001u, 0x7FC12345u, 0, 0x00000001u, 0x7F7FFFFFu};
      uint32_t b = kind < 7 ? sign | specials[kind] : (kind < 12 ? static_cast<uint32_t>(r) : sign | (0x3F000000u + static_cast<uint32_t>(r % 0x01800000u)));
      st(p, i, b);
    } else if (t == DType::F64) {
      const uint64_t sign = (r >> 3 & 1) ? 0x8000000000000000ull : 0;
      const uint64_t specials[] = {0x7FF0000000000000ull, 0x7FF8000000000000ull, 0x7FF0000000000001ull, 0, 1, 0x7FEFFFFFFFFFFFFFull};
      uint64_t b = kind < 6 ? sign | specials[kind] : (kind < 11 ? r : sign | (0x3FE0000000000000ull + (r % 0x0030000000000000ull)));
      st(p, i, b);
    } else if (t == DType::F16 || t == DType::BF16) {
      const bool bf = t == DType::BF16;
      const uint16_t sign = (r >> 20 & 1) ? 0x8000 : 0;
      const uint16_t specials[] = {static_cast<uint16_t>(bf ? 0x7F80 : 0x7C00), static_cast<uint16_t>(bf ? 0x7FC0 : 0x7E00),
                                   static_cast<uint16_t>(bf ? 0x7F81 : 0x7C01), 0, 1, static_cast<uint16_t>(bf ? 0x7F7F : 0x7BFF)};
      uint16_t b = kind < 6 ? static_cast<uint16_t>(sign | specials[kind])
                            : (kind < 11 ? static_cast<uint16_t>(r) : static_cast<uint16_t>(sign | ((bf ? 0x3F00 : 0x3800) + r % 0x0300)));
      st(p, i, b);
    } else {
      if (kind < 4) {  // extremes: 0x80.., 0x7F.., 0xFF.., 0x00..01
        const uint64_t ext[] = {uint64_t{1} << (8 * sz - 1), (uint64_t{1} << (8 * sz - 1)) - 1, ~uint64_t{0}, 1};
        std::memcpy(p + i * sz, &ext[kind], sz);
      } else if (kind < 8) {
        const uint64_t small = r % 7;
        std::memcpy(p + i * sz, &small, sz);
      } else {
        std::memcpy(p + i * sz, &r, sz);
      }
    }
  }
}

void testAgainstReference() {
  Rng rng(1);
  for (int ti = 0; ti < kDTypeCount; ++ti) {
    const DType t = static_cast<DType>(ti);
    const size_t sz = dtypeSize(t);
    for (int oi = 0; oi < kReduceOpCount; ++oi) {
      const ReduceOp op = static_cast<ReduceOp>(oi);
      for (size_t n : {size_t{0}, size_t{1}, size_t{3}, size_t{17}, size_t{1000}, size_t{4099}}) {
        // +1 byte offsets: kernels must not assume alignment.
        std::vector<unsigned char> A(n * sz + 1), B(n * sz + 1), want(n * sz + 1), got(n * sz + 1), got2(n * sz + 1);
        unsigned char* a = A.data() + 1;
        unsigned char* b = B.data() + 1;
        fill(t, a, n, rng);
        fill(t, b, n, rng);
        refReduce(t, op, want.data() + 1, a, b, n);
        auto verify = [&](const unsigned char* g, const char* how) {
          for (size_t i = 0; i < n; ++i) {
            if (!sameResult(t, g, want.data() + 1, i)) {
              CHECK_MSG(false, "%s %s %s n=%zu at %zu", dtypeName(t), reduceOpName(op), how, n, i);
              break;
            }
          }
        };
        // reduceInto
        std::memcpy(got.data() + 1, a, n * sz);
        reduceInto(t, op, got.data() + 1, b, n);
        verify(got.data() + 1, "reduceInto");
        // reduceTo, distinct output
        reduceTo(t, op, got2.data() + 1, a, b, n);
        verify(got2.data() + 1, "reduceTo");
        CHECK(std::memcmp(got.data(), got2.data(), got.size()) == 0 || isFloat(t));
        // reduceTo with dst == a, and with dst == b
        std::memcpy(got.data() + 1, a, n * sz);
        reduceTo(t, op, got.data() + 1, got.data() + 1, b, n);
        verify(got.data() + 1, "reduceTo dst==a");
        std::memcpy(got.data() + 1, b, n * sz);
        reduceTo(t, op, got.data() + 1, a, got.data() + 1, n);
        verify(got.data() + 1, "reduceTo dst==b");
        // x (op) x, every pointer the same
        refReduce(t, op, want.data() + 1, a, a, n);
        std::memcpy(got.data() + 1, a, n * sz);
        reduceInto(t, op, got.data() + 1, got.data() + 1, n);
        verify(got.data() + 1, "self");
      }
    }
  }
}

template <class T>
T red(ReduceOp op, T a, T b, DType t) {
  reduceInto(t, op, &a, &b, 1);
  return a;
}

void testIntegers() {
  CHECK(red<int8_t>(ReduceOp::Sum, 127, 1, DType::I8) == -128);
  CHECK(red<int8_t>(ReduceOp::Prod, -128, -1, DType::I8) == -128);
  CHECK(red<uint8_t>(ReduceOp::Sum, 255, 1, DType::U8) == 0);
  CHECK(red<uint8_t>(ReduceOp::Avg, 200, 100, DType::U8) == 44);
  CHECK(red<uint16_t>(ReduceOp::Prod, 65535, 65535, DType::U16) == 1);  // no int promotion overflow
  CHECK(red<int16_t>(ReduceOp::Prod, 300, 300, DType::I16) == static_cast<int16_t>(90000 - 65536));
  CHECK(red<int32_t>(ReduceOp::Sum, INT32_MAX, 1, DType::I32) == INT32_MIN);
  CHECK(red<int32_t>(ReduceOp::Prod, INT32_MIN, -1, DType::I32) == INT32_MIN);
  CHECK(red<uint32_t>(ReduceOp::Sum, 0xFFFFFFFFu, 2, DType::U32) == 1);
  CHECK(red<int64_t>(ReduceOp::Sum, INT64_MAX, 1, DType::I64) == INT64_MIN);
  CHECK(red<int64_t>(ReduceOp::Prod, INT64_MIN, -1, DType::I64) == INT64_MIN);
  CHECK(red<uint64_t>(ReduceOp::Prod, 0x100000001ull, 0x100000001ull, DType::U64) == 0x200000001ull);
  CHECK(red<int8_t>(ReduceOp::Min, -128, 127, DType::I8) == -128);
  CHECK(red<uint64_t>(ReduceOp::Max, ~0ull, 1, DType::U64) == ~0ull);
  CHECK(red<int64_t>(ReduceOp::Min, INT64_MIN, 0, DType::I64) == INT64_MIN);
}

void testFloatSpecials() {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float payload = ofBits<float>(0xFFC01234u), snan = ofBits<float>(0x7F800001u);
  for (ReduceOp op : {ReduceOp::Min, ReduceOp::Max}) {
    for (float x : {1.0f, -inf, inf, 0.0f, nan}) {
      for (float n : {nan, payload, snan}) {
        CHECK(bitsOf(red(op, x, n, DType::F32)) == 0x7FC00000u);
        CHECK(bitsOf(red(op, n, x, DType::F32)) == 0x7FC00000u);
      }
    }
    const double dn = ofBits<double>(0xFFF0000000000123ull);
    CHECK(bitsOf(red(op, 1.0, dn, DType::F64)) == 0x7FF8000000000000ull);
    CHECK(bitsOf(red(op, dn, -0.0, DType::F64)) == 0x7FF8000000000000ull);
    for (uint16_t h : {uint16_t{0x7C01}, uint16_t{0xFE00}, uint16_t{0x7FFF}}) {
      CHECK(red<uint16_t>(op, h, 0x3C00, DType::F16) == 0x7E00);
      CHECK(red<uint16_t>(op, 0x3C00, h, DType::F16) == 0x7E00);
    }
    for (uint16_t h : {uint16_t{0x7F81}, uint16_t{0xFFC0}}) {
      CHECK(red<uint16_t>(op, h, 0x3F80, DType::BF16) == 0x7FC0);
      CHECK(red<uint16_t>(op, 0x3F80, h, DType::BF16) == 0x7FC0);
    }
  }
  // Signed zeros, both operand orders.
  CHECK(bitsOf(red(ReduceOp::Min, -0.0f, 0.0f, DType::F32)) == 0x80000000u);
  CHECK(bitsOf(red(ReduceOp::Min, 0.0f, -0.0f, DType::F32)) == 0x80000000u);
  CHECK(bitsOf(red(ReduceOp::Max, -0.0f, 0.0f, DType::F32)) == 0u);
  CHECK(bitsOf(red(ReduceOp::Max, 0.0f, -0.0f, DType::F32)) == 0u);
  CHECK(bitsOf(red(ReduceOp::Min, 0.0, -0.0, DType::F64)) == 0x8000000000000000ull);
  CHECK(bitsOf(red(ReduceOp::Max, -0.0, 0.0, DType::F64)) == 0u);
  CHECK(red<uint16_t>(ReduceOp::Min, 0x0000, 0x8000, DType::F16) == 0x8000);
  CHECK(red<uint16_t>(ReduceOp::Max, 0x8000, 0x0000, DType::F16) == 0x0000);
  CHECK(red<uint16_t>(ReduceOp::Min, 0x0000, 0x8000, DType::BF16) == 0x8000);
  CHECK(red<uint16_t>(ReduceOp::Max, 0x8000, 0x0000, DType::BF16) == 0x0000);
  CHECK(red(ReduceOp::Min, -inf, 1.0f, DType::F32) == -inf);
  CHECK(red(ReduceOp::Max, 1.0f, inf, DType::F32) == inf);
  // Sum/Prod follow IEEE.
  CHECK(std::isnan(red(ReduceOp::Sum, inf, -inf, DType::F32)));
  CHECK(std::isnan(red(ReduceOp::Prod, 0.0f, inf, DType::F32)));
  CHECK(std::isnan(red(ReduceOp::Sum, 1.0f, nan, DType::F32)));
  CHECK(bitsOf(red(ReduceOp::Sum, -0.0f, -0.0f, DType::F32)) == 0x80000000u);
  CHECK(bitsOf(red(ReduceOp::Sum, -0.0f, 0.0f, DType::F32)) == 0u);
  CHECK(red(ReduceOp::Sum, 3e38f, 3e38f, DType::F32) == inf);
  // float16 Sum rounds at every addition, to nearest-even: 2048 + 1 = 2048 (tie, even), 2048 + 3 = 2052.
  CHECK(red<uint16_t>(ReduceOp::Sum, floatToHalf(2048.0f), floatToHalf(1.0f), DType::F16) == floatToHalf(2048.0f));
  CHECK(red<uint16_t>(ReduceOp::Sum, floatToHalf(2048.0f), floatToHalf(3.0f), DType::F16) == floatToHalf(2052.0f));
  CHECK(red<uint16_t>(ReduceOp::Sum, 0x7BFF, 0x7BFF, DType::F16) == 0x7C00);  // overflow to Inf
  CHECK(red<uint16_t>(ReduceOp::Sum, floatToBFloat16(256.0f), floatToBFloat16(1.0f), DType::BF16) == floatToBFloat16(256.0f));
  CHECK(red<uint16_t>(ReduceOp::Prod, floatToHalf(-2.5f), floatToHalf(4.0f), DType::F16) == floatToHalf(-10.0f));
}

// Min/Max give the same bits whatever the accumulation order (ring position), NaNs and zeros included.
void testOrderIndependence() {
  Rng rng(5);
  const size_t n = 2000, peers = 5;
  for (DType t : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::U8}) {
    const size_t sz = dtypeSize(t);
    std::vector<std::vector<unsigned char>> in(peers, std::vector<unsigned char>(n * sz));
    for (auto& v : in) fill(t, v.data(), n, rng);
    for (ReduceOp op : {ReduceOp::Min, ReduceOp::Max}) {
      std::vector<unsigned char> first;
      const size_t orders[][5] = {{0, 1, 2, 3, 4}, {4, 3, 2, 1, 0}, {2, 0, 4, 1, 3}, {1, 3, 0, 4, 2}};
      for (const auto& ord : orders) {
        std::vector<unsigned char> acc = in[ord[0]];
        for (size_t k = 1; k < peers; ++k) reduceInto(t, op, acc.data(), in[ord[k]].data(), n);
        if (first.empty()) first = acc;
        CHECK_MSG(acc == first, "%s %s depends on order", dtypeName(t), reduceOpName(op));
      }
      // Tree order: (a op b) op (c op (d op e)) via reduceTo.
      std::vector<unsigned char> x(n * sz), y(n * sz);
      reduceTo(t, op, x.data(), in[0].data(), in[1].data(), n);
      reduceTo(t, op, y.data(), in[3].data(), in[4].data(), n);
      reduceTo(t, op, y.data(), in[2].data(), y.data(), n);
      reduceTo(t, op, x.data(), x.data(), y.data(), n);
      CHECK_MSG(x == first, "%s %s tree order", dtypeName(t), reduceOpName(op));
    }
  }
}

void testAverage() {
  {
    int32_t v[] = {-7, 7, -1, 1, INT32_MIN, INT32_MAX, 0, -6};
    finishAverage(DType::I32, v, 8, 2);
    const int32_t want[] = {-3, 3, 0, 0, INT32_MIN / 2, INT32_MAX / 2, 0, -3};
    CHECK(std::memcmp(v, want, sizeof v) == 0);
  }
  {
    int8_t v[] = {-128, 127, -5, 5};
    finishAverage(DType::I8, v, 4, 3);
    CHECK(v[0] == -42 && v[1] == 42 && v[2] == -1 && v[3] == 1);
    finishAverage(DType::I8, v, 4, 0xFFFFFFFFu);
    CHECK(v[0] == 0 && v[1] == 0);
  }
  {
    int64_t v[] = {INT64_MIN, INT64_MAX, -9};
    finishAverage(DType::I64, v, 3, 4);
    CHECK(v[0] == INT64_MIN / 4 && v[1] == INT64_MAX / 4 && v[2] == -2);
    uint64_t u[] = {~0ull, 10};
    finishAverage(DType::U64, u, 2, 3);
    CHECK(u[0] == ~0ull / 3 && u[1] == 3);
  }
  // 32-bit and smaller integers: exhaustive-ish comparison with integer division, large values and divisors.
  Rng rng(3);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t d = (i & 1) ? static_cast<uint32_t>(rng.next()) | 2u : static_cast<uint32_t>(rng.next() % 1000 + 2);
    int32_t s = static_cast<int32_t>(rng.next());
    uint32_t u = static_cast<uint32_t>(rng.next());
    int16_t s16 = static_cast<int16_t>(rng.next());
    const int32_t ws = static_cast<int32_t>(static_cast<int64_t>(s) / static_cast<int64_t>(d));
    const uint32_t wu = u / d;
    const int16_t w16 = static_cast<int16_t>(s16 / static_cast<int64_t>(d));
    finishAverage(DType::I32, &s, 1, d);
    finishAverage(DType::U32, &u, 1, d);
    finishAverage(DType::I16, &s16, 1, d);
    CHECK_MSG(s == ws && u == wu && s16 == w16, "integer average, divisor %u", d);
  }
  // Exact multiples at the top of the range (where float64 quotients sit next to integers).
  for (uint32_t d : {3u, 65537u, 0xFFFFFFFFu, 0xFFFFFFFEu}) {
    uint32_t u[3] = {(0xFFFFFFFFu / d) * d, (0xFFFFFFFFu / d) * d - 1, 0xFFFFFFFFu};
    const uint32_t w[3] = {u[0] / d, u[1] / d, u[2] / d};
    finishAverage(DType::U32, u, 3, d);
    CHECK(u[0] == w[0] && u[1] == w[1] && u[2] == w[2]);
  }
  // Floats.
  {
    float f[] = {1.0f, 3.0f, -0.0f, std::numeric_limits<float>::infinity(), 16777215.0f};
    finishAverage(DType::F32, f, 5, 3);
    CHECK(f[0] == static_cast<float>(1.0 / 3.0) && f[1] == 1.0f && bitsOf(f[2]) == 0x80000000u && std::isinf(f[3]));
    CHECK(f[4] == 5592405.0f);
    float g = 1.0f;
    finishAverage(DType::F32, &g, 1, 16777217u);  // divisor not representable in float32: float64 quotient
    CHECK(g == static_cast<float>(1.0 / 16777217.0));
    double x[] = {1.0, -7.5};
    finishAverage(DType::F64, x, 2, 3);
    CHECK(x[0] == 1.0 / 3.0 && x[1] == -2.5);
    uint16_t h[] = {floatToHalf(3.0f), floatToHalf(1.0f), 0x7E00};
    finishAverage(DType::F16, h, 3, 3);
    CHECK(h[0] == floatToHalf(1.0f) && h[1] == floatToHalf(1.0f / 3.0f) && h[2] == 0x7E00);
    uint16_t b[] = {floatToBFloat16(10.0f)};
    finishAverage(DType::BF16, b, 1, 4);
    CHECK(b[0] == floatToBFloat16(2.5f));
  }
  // Divisor 0 and 1: unchanged.
  {
    int32_t v[] = {5, -5};
    finishAverage(DType::I32, v, 2, 0);
    finishAverage(DType::I32, v, 2, 1);
    CHECK(v[0] == 5 && v[1] == -5);
  }
  // Avg accumulates exactly like Sum.
  {
    float a[] = {1.5f, 2.0f}, b[] = {2.25f, -4.0f};
    reduceInto(DType::F32, ReduceOp::Avg, a, b, 2);
    CHECK(a[0] == 3.75f && a[1] == -2.0f);
  }
}

void testNames() {
  CHECK(std::strcmp(dtypeName(DType::BF16), "bfloat16") == 0);
  CHECK(std::strcmp(dtypeName(DType::U64), "uint64") == 0);
  CHECK(std::strcmp(dtypeName(static_cast<DType>(99)), "unknown") == 0);
  CHECK(std::strcmp(reduceOpName(ReduceOp::Avg), "avg") == 0);
  CHECK(std::strcmp(reduceOpName(static_cast<ReduceOp>(9)), "unknown") == 0);
}

void bench() {
  const size_t bytes = size_t{64} << 20;
  std::vector<float> a(bytes / 4, 1.0f), b(bytes / 4, 0.5f);
  std::vector<uint16_t> h(bytes / 2, 0x3C00), g(bytes / 2, 0x3800);
  auto gbs = [&](auto&& f) {
    double best = 1e30;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      f();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return static_cast<double>(bytes) / best / 1e9;
  };
  std::printf("reduceInto 64 MiB: f32 sum %.2f GB/s, f32 max %.2f GB/s, f16 sum %.2f GB/s, bf16 sum %.2f GB/s\n",
              gbs([&] { reduceInto(DType::F32, ReduceOp::Sum, a.data(), b.data(), a.size()); }),
              gbs([&] { reduceInto(DType::F32, ReduceOp::Max, a.data(), b.data(), a.size()); }),
              gbs([&] { reduceInto(DType::F16, ReduceOp::Sum, h.data(), g.data(), h.size()); }),
              gbs([&] { reduceInto(DType::BF16, ReduceOp::Sum, h.data(), g.data(), h.size()); }));
}

}  // namespace

int main() {
  testAgainstReference();
  testIntegers();
  testFloatSpecials();
  testOrderIndependence();
  testAverage();
  testNames();
  bench();
  return TEST_MAIN_RESULT();
}
