// Quantization codecs for float32 tensors and the float16 / bfloat16 conversions used everywhere.
// Semantics, block layout and error bounds: docs/kernels.md. Assumes a little-endian host with IEEE-754 float32
// arithmetic in round-to-nearest-even mode (SSE2 on x86, any ARMv8); no FTZ/DAZ.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tccl {

// Wire values: these numbers travel in frame headers and in the JS binding, so never renumber.
enum class Codec : uint8_t { None = 0, U8 = 1, U4 = 2, F16 = 3, BF16 = 4 };
constexpr int kCodecCount = 5;
inline bool isValidCodec(unsigned v) { return v < static_cast<unsigned>(kCodecCount); }
const char* codecName(Codec c);

struct CodecParams {
  uint32_t blockSize = 256;  // elements per block for U8/U4 (0 is treated as 1 block of all n elements)
  bool stochastic = false;   // U8/U4: stochastic instead of nearest rounding
  uint64_t seed = 0;         // stochastic rounding: same seed + same data => same bytes
};

// float* arguments are ordinary float32 arrays (4-byte aligned); the encoded byte buffers need no alignment.
// Bytes needed to encode n elements (includes the per-block min/scale for U8/U4). None: 4*n; F16/BF16: 2*n.
size_t encodedSize(Codec c, size_t n, uint32_t blockSize);
// Quantize n float32 values into out (encodedSize bytes). Returns false if an input is NaN or +-Inf (or, for
// F16/BF16, a finite input would overflow to Inf); out is then unspecified. Codec::None copies verbatim and
// accepts every value.
bool encode(Codec c, const float* src, size_t n, const CodecParams& p, uint8_t* out);
// out[i] = dequantized value of element i.
void decode(Codec c, const uint8_t* in, size_t n, uint32_t blockSize, float* out);
// acc[i] += dequantized value of element i (one float32 addition per element, after dequantizing).
void decodeAccumulate(Codec c, const uint8_t* in, size_t n, uint32_t blockSize, float* acc);

// Conversions: round to nearest-even, NaN kept as a quiet NaN (sign and top payload bits kept), overflow to Inf.
uint16_t floatToHalf(float f);
float halfToFloat(uint16_t h);
uint16_t floatToBFloat16(float f);
float bfloat16ToFloat(uint16_t h);
void floatToHalfArray(const float* src, uint16_t* dst, size_t n);
void halfToFloatArray(const uint16_t* src, float* dst, size_t n);
void floatToBFloat16Array(const float* src, uint16_t* dst, size_t n);
void bfloat16ToFloatArray(const uint16_t* src, float* dst, size_t n);

// Branch-free inline forms, so loops over them auto-vectorize (reduce.cpp, codec.cpp). Same results as above.
namespace detail {

inline uint32_t floatBits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bitsFloat(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float f16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;               // exponent and mantissa
  const uint32_t shifted = em << 13;             // mantissa aligned to float32
  // Normal: rebias the exponent by 127-15. Inf/NaN (exponent 31): exponent 255, payload kept.
  // Zero/subnormal (exponent 0): m * 2^-24 computed exactly as (2^-14 + m*2^-24) - 2^-14.
  const uint32_t normal = shifted + (112u << 23);
  const uint32_t infnan = shifted | 0x7F800000u;
  const float sub = bitsFloat(shifted + (113u << 23)) - bitsFloat(113u << 23);
  // Selections by masks rather than ?: so that compilers keep the loop branch-free and vectorize it.
  const uint32_t isInfNan = 0u - static_cast<uint32_t>(em >= 0x7C00u);
  const uint32_t isSub = 0u - static_cast<uint32_t>(em < 0x0400u);
  const uint32_t mag = (floatBits(sub) & isSub) | (infnan & isInfNan) | (normal & ~(isSub | isInfNan));
  return bitsFloat(sign | mag);
}

inline uint16_t f32ToF16(float f) {
  const uint32_t x = floatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7FFFFFFFu;
  // |f| >= 2^-14 (half normal range): drop 13 mantissa bits with round-to-nearest-even; a carry out of the
  // mantissa bumps the exponent and, past 65504 + half an ulp, lands exactly on Inf (0x7C00).
  const uint32_t normal = (a - (112u << 23) + 0xFFFu + ((a >> 13) & 1u)) >> 13;
  // |f| < 2^-14: let the FPU round, adding 0.5 puts the half-subnormal ulp (2^-24) at the float's last bit.
  const uint32_t sub = floatBits(bitsFloat(a) + 0.5f) - 0x3F000000u;
  // |f| >= 65536 (Inf for sure) or Inf/NaN.
  const uint32_t big = a > 0x7F800000u ? (0x7E00u | ((a >> 13) & 0x3FFu)) : 0x7C00u;
  const uint32_t isSub = 0u - static_cast<uint32_t>(a < 0x38800000u);
  const uint32_t isBig = 0u - static_cast<uint32_t>(a >= 0x47800000u);
  const uint32_t r = (sub & isSub) | (big & isBig) | (normal & ~(isSub | isBig));
  return static_cast<uint16_t>(sign | r);
}

inline float bf16ToF32(uint16_t h) { return bitsFloat(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32ToBf16(float f) {
  const uint32_t x = floatBits(f);
  const uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;  // nearest-even; overflow carries into Inf
  const uint32_t nan = (x >> 16) | 0x0040u;                          // quiet NaN, sign and payload top kept
  return static_cast<uint16_t>((x & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

}  // namespace detail
}  // namespace tccl
