// Quantization codecs (U8, U4 per-block min/scale; F16, BF16 casts) and float16/bfloat16 conversions.
// Every result is defined by float32 IEEE operations in a fixed order with no fused multiply-add, so encoded
// bytes and decoded values are bit-identical on every platform (docs/kernels.md).
#include "codec.h"

#include <cmath>
#include <cstring>

#include "kernel_config.h"

namespace tccl {
namespace {

constexpr size_t kBlockHeader = 8;  // float32 min, float32 scale

inline size_t effectiveBlock(size_t n, uint32_t blockSize) { return blockSize ? blockSize : (n ? n : 1); }
inline size_t packedBytes(Codec c, size_t len) { return c == Codec::U4 ? (len + 1) / 2 : len; }
inline size_t blockBytes(Codec c, size_t len) { return kBlockHeader + packedBytes(c, len); }

// Order-preserving signed key of a float32 bit pattern (-0 sorts just below +0; NaNs sort outside +-Inf).
inline int32_t sortKey(uint32_t bits) {
  const int32_t s = static_cast<int32_t>(bits);
  return s ^ ((s >> 31) & 0x7FFFFFFF);
}
inline float keyToFloat(int32_t key) { return detail::bitsFloat(static_cast<uint32_t>(sortKey(static_cast<uint32_t>(key)))); }

// ---- counter-based RNG for stochastic rounding ----

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}
// Uniform u in [0, 1) with 24 random bits for element index i:
//   K = splitmix64(seed ^ ((i >> 32) * 0x9E3779B97F4A7C15)), h = mix32(uint32(i) ^ low32(K)) ^ high32(K),
//   u = (h >> 8) * 2^-24.
struct RngKey { uint32_t k0, k1; };
inline RngKey rngKey(uint64_t seed, uint64_t hi) {
  const uint64_t k = splitmix64(seed ^ (hi * 0x9E3779B97F4A7C15ull));
  return {static_cast<uint32_t>(k), static_cast<uint32_t>(k >> 32)};
}
inline float rngUniform(RngKey k, uint32_t lo) {
  return static_cast<float>((mix32(lo ^ k.k0) ^ k.k1) >> 8) * (1.0f / 16777216.0f);
}

// ---- block quantization ----

// q[j] for j < len (one byte per value, 0..levels). Fast path: t = (x - min) * inv in float32.
void quantNearest(const float* TCCL_RESTRICT x, size_t len, float mn, float inv, float levels, uint8_t* TCCL_RESTRICT q) {
  const float top = levels + 0.5f;
  for (size_t j = 0; j < len; ++j) {
    float v = (x[j] - mn) * inv + 0.5f;
    v = v < top ? v : top;
    q[j] = static_cast<uint8_t>(static_cast<uint32_t>(v));
  }
}
void quantStochastic(const float* TCCL_RESTRICT x, size_t len, float mn, float inv, float levels, RngKey key,
                     uint32_t lo, uint8_t* TCCL_RESTRICT q) {
  for (size_t j = 0; j < len; ++j) {
    float v = (x[j] - mn) * inv + rngUniform(key, lo + static_cast<uint32_t>(j));
    v = v < levels ? v : levels;
    q[j] = static_cast<uint8_t>(static_cast<uint32_t>(v));
  }
}
// Slow path for blocks whose scale is so small (< 2^-128, subnormal) that 1/scale overflows, or whose range
// overflows float32 subtraction: t = (x - min) / scale in float64.
void quantWide(const float* x, size_t len, float mn, float scale, float levels, bool stochastic, uint64_t seed,
               uint64_t index0, uint8_t* q) {
  for (size_t j = 0; j < len; ++j) {
    const uint64_t i = index0 + j;
    const double u = stochastic ? static_cast<double>(rngUniform(rngKey(seed, i >> 32), static_cast<uint32_t>(i))) : 0.5;
    double v = (static_cast<double>(x[j]) - static_cast<double>(mn)) / static_cast<double>(scale) + u;
    const double top = stochastic ? static_cast<double>(levels) : static_cast<double>(levels) + 0.5;
    v = v < top ? v : top;
    q[j] = static_cast<uint8_t>(static_cast<uint32_t>(v));
  }
}

// Quantizes one block of len values with global index index0 into out (header + packed q).
// Returns false on NaN/Inf input, or when min + levels*scale would overflow float32.
bool encodeBlock(Codec c, const float* x, size_t len, const CodecParams& p, uint64_t index0, uint8_t* out) {
  int32_t kmin = 0x7FFFFFFF, kmax = -0x7FFFFFFF - 1;
  for (size_t j = 0; j < len; ++j) {
    const int32_t k = sortKey(detail::floatBits(x[j]));
    kmin = k < kmin ? k : kmin;
    kmax = k > kmax ? k : kmax;
  }
  if (kmax >= 0x7F800000 || kmin < -0x7F800000) return false;  // NaN or +-Inf
  const float mn = keyToFloat(kmin), mx = keyToFloat(kmax);
  const float levels = c == Codec::U4 ? 15.0f : 255.0f;
  const float scale = static_cast<float>((static_cast<double>(mx) - static_cast<double>(mn)) / static_cast<double>(levels));
  // The top level must decode to a finite value (fails only for ranges near the float32 limit, ~3.4e38).
  const float topValue = mn + levels * scale;
  if (!std::isfinite(levels * scale) || !std::isfinite(topValue)) return false;
  std::memcpy(out, &mn, 4);
  std::memcpy(out + 4, &scale, 4);
  uint8_t* packed = out + kBlockHeader;

  constexpr size_t kChunk = 512;  // even, so U4 nibble pairs never straddle chunks
  uint8_t q[kChunk];
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  const bool fast = std::isfinite(inv) && std::isfinite(mx - mn);
  for (size_t c0 = 0; c0 < len; c0 += kChunk) {
    const size_t m = len - c0 < kChunk ? len - c0 : kChunk;
    const uint64_t i0 = index0 + c0;
    if (scale == 0.0f) {
      std::memset(q, 0, m);  // constant block (or a range below float32 resolution): decodes to min
    } else if (!fast) {
      quantWide(x + c0, m, mn, scale, levels, p.stochastic, p.seed, i0, q);
    } else if (!p.stochastic) {
      quantNearest(x + c0, m, mn, inv, levels, q);
    } else {
      // Split where the low 32 bits of the index wrap, so the RNG key is constant over each piece.
      size_t done = 0;
      while (done < m) {
        const uint64_t i = i0 + done;
        const uint64_t toWrap = (uint64_t{1} << 32) - (i & 0xFFFFFFFFull);
        const size_t piece = (m - done) < toWrap ? (m - done) : static_cast<size_t>(toWrap);
        quantStochastic(x + c0 + done, piece, mn, inv, levels, rngKey(p.seed, i >> 32), static_cast<uint32_t>(i),
                        q + done);
        done += piece;
      }
    }
    if (c == Codec::U8) {
      std::memcpy(packed + c0, q, m);
    } else {
      uint8_t* dst = packed + c0 / 2;
      const size_t pairs = m / 2;
      for (size_t j = 0; j < pairs; ++j) dst[j] = static_cast<uint8_t>(q[2 * j] | (q[2 * j + 1] << 4));
      if (m & 1) dst[pairs] = q[m - 1];
    }
  }
  return true;
}

// Dequantize one block: value = min + float(q) * scale (float32, two roundings, no FMA).
// Accumulate: acc[j] = acc[j] + value.
template <bool Acc>
void decodeBlockU8(const uint8_t* TCCL_RESTRICT in, size_t len, float* TCCL_RESTRICT out) {
  float mn, scale;
  std::memcpy(&mn, in, 4);
  std::memcpy(&scale, in + 4, 4);
  const uint8_t* q = in + kBlockHeader;
  for (size_t j = 0; j < len; ++j) {
    const float v = mn + static_cast<float>(q[j]) * scale;
    out[j] = Acc ? out[j] + v : v;
  }
}
template <bool Acc>
void decodeBlockU4(const uint8_t* TCCL_RESTRICT in, size_t len, float* TCCL_RESTRICT out) {
  float mn, scale;
  std::memcpy(&mn, in, 4);
  std::memcpy(&scale, in + 4, 4);
  const uint8_t* q = in + kBlockHeader;
  const size_t pairs = len / 2;
  for (size_t j = 0; j < pairs; ++j) {
    const float lo = mn + static_cast<float>(q[j] & 15u) * scale;
    const float hi = mn + static_cast<float>(q[j] >> 4) * scale;
    out[2 * j] = Acc ? out[2 * j] + lo : lo;
    out[2 * j + 1] = Acc ? out[2 * j + 1] + hi : hi;
  }
  if (len & 1) {
    const float v = mn + static_cast<float>(q[pairs] & 15u) * scale;
    out[len - 1] = Acc ? out[len - 1] + v : v;
  }
}

template <bool Acc>
void decodeBlocks(Codec c, const uint8_t* in, size_t n, uint32_t blockSize, float* out) {
  const size_t bs = effectiveBlock(n, blockSize);
  const size_t stride = blockBytes(c, bs);
  for (size_t b0 = 0; b0 < n; b0 += bs, in += stride) {
    const size_t len = n - b0 < bs ? n - b0 : bs;
    if (c == Codec::U8) decodeBlockU8<Acc>(in, len, out + b0);
    else decodeBlockU4<Acc>(in, len, out + b0);
  }
}

// ---- 16-bit casts ----

template <bool BF>
bool encodeHalf(const float* TCCL_RESTRICT src, size_t n, uint8_t* TCCL_RESTRICT out) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = BF ? detail::f32ToBf16(src[i]) : detail::f32ToF16(src[i]);
    bad |= static_cast<uint32_t>((h & 0x7FFFu) >= (BF ? 0x7F80u : 0x7C00u));  // NaN, Inf or overflow
    std::memcpy(out + 2 * i, &h, 2);
  }
  return bad == 0;
}
template <bool BF, bool Acc>
void decodeHalf(const uint8_t* TCCL_RESTRICT in, size_t n, float* TCCL_RESTRICT out) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    const float v = BF ? detail::bf16ToF32(h) : detail::f16ToF32(h);
    out[i] = Acc ? out[i] + v : v;
  }
}
template <bool Acc>
void decodeRaw(const uint8_t* TCCL_RESTRICT in, size_t n, float* TCCL_RESTRICT out) {
  for (size_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, in + 4 * i, 4);
    out[i] = Acc ? out[i] + v : v;
  }
}

template <bool Acc>
void decodeAny(Codec c, const uint8_t* in, size_t n, uint32_t blockSize, float* out) {
  if (n == 0) return;
  switch (c) {
    case Codec::None: decodeRaw<Acc>(in, n, out); return;
    case Codec::U8:
    case Codec::U4: decodeBlocks<Acc>(c, in, n, blockSize, out); return;
    case Codec::F16: decodeHalf<false, Acc>(in, n, out); return;
    case Codec::BF16: decodeHalf<true, Acc>(in, n, out); return;
  }
}

}  // namespace

const char* codecName(Codec c) {
  switch (c) {
    case Codec::None: return "none";
    case Codec::U8: return "u8";
    case Codec::U4: return "u4";
    case Codec::F16: return "f16";
    case Codec::BF16: return "bf16";
  }
  return "unknown";
}

size_t encodedSize(Codec c, size_t n, uint32_t blockSize) {
  switch (c) {
    case Codec::None: return 4 * n;
    case Codec::F16:
    case Codec::BF16: return 2 * n;
    case Codec::U8:
    case Codec::U4: {
      if (n == 0) return 0;
      const size_t bs = effectiveBlock(n, blockSize);
      const size_t full = n / bs, rem = n % bs;
      return full * blockBytes(c, bs) + (rem ? blockBytes(c, rem) : 0);
    }
  }
  return 0;
}

bool encode(Codec c, const float* src, size_t n, const CodecParams& p, uint8_t* out) {
  switch (c) {
    case Codec::None:
      if (n) std::memcpy(out, src, 4 * n);
      return true;
    case Codec::F16: return encodeHalf<false>(src, n, out);
    case Codec::BF16: return encodeHalf<true>(src, n, out);
    case Codec::U8:
    case Codec::U4: {
      const size_t bs = effectiveBlock(n, p.blockSize);
      const size_t stride = blockBytes(c, bs);
      for (size_t b0 = 0; b0 < n; b0 += bs, out += stride) {
        const size_t len = n - b0 < bs ? n - b0 : bs;
        if (!encodeBlock(c, src + b0, len, p, b0, out)) return false;
      }
      return true;
    }
  }
  return false;
}

void decode(Codec c, const uint8_t* in, size_t n, uint32_t blockSize, float* out) {
  decodeAny<false>(c, in, n, blockSize, out);
}

void decodeAccumulate(Codec c, const uint8_t* in, size_t n, uint32_t blockSize, float* acc) {
  decodeAny<true>(c, in, n, blockSize, acc);
}

uint16_t floatToHalf(float f) { return detail::f32ToF16(f); }
float halfToFloat(uint16_t h) { return detail::f16ToF32(h); }
uint16_t floatToBFloat16(float f) { return detail::f32ToBf16(f); }
float bfloat16ToFloat(uint16_t h) { return detail::bf16ToF32(h); }

void floatToHalfArray(const float* TCCL_RESTRICT src, uint16_t* TCCL_RESTRICT dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = detail::f32ToF16(src[i]);
}
void halfToFloatArray(const uint16_t* TCCL_RESTRICT src, float* TCCL_RESTRICT dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = detail::f16ToF32(src[i]);
}
void floatToBFloat16Array(const float* TCCL_RESTRICT src, uint16_t* TCCL_RESTRICT dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = detail::f32ToBf16(src[i]);
}
void bfloat16ToFloatArray(const uint16_t* TCCL_RESTRICT src, float* TCCL_RESTRICT dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = detail::bf16ToF32(src[i]);
}

}  // namespace tccl
