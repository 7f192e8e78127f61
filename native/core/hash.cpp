// XXH64 written from the public xxHash specification, and the block-tree content hash built on it.
#include "hash.h"

#include <cstring>
#include <thread>
#include <vector>

namespace tccl {
namespace {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ull;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
// Little-endian loads (the project assumes a little-endian host; memcpy keeps unaligned loads legal).
inline uint64_t read64(const unsigned char* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
inline uint32_t read32(const unsigned char* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }

inline uint64_t lane(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  acc = rotl(acc, 31);
  return acc * kP1;
}
inline uint64_t merge(uint64_t h, uint64_t acc) {
  h ^= lane(0, acc);
  return h * kP1 + kP4;
}

void putLE64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

// Block hashes b_k for k in [first, last).
void hashBlocks(const unsigned char* data, size_t len, size_t first, size_t last, uint64_t* out) {
  for (size_t k = first; k < last; ++k) {
    const size_t off = k * kHashBlockBytes;
    const size_t n = len - off < kHashBlockBytes ? len - off : kHashBlockBytes;
    out[k] = xxh64(data + off, n, static_cast<uint64_t>(k));
  }
}

uint64_t combine(const std::vector<uint64_t>& blocks, size_t len) {
  std::vector<unsigned char> bytes(blocks.size() * 8);
  for (size_t k = 0; k < blocks.size(); ++k) putLE64(bytes.data() + 8 * k, blocks[k]);
  return xxh64(bytes.data(), bytes.size(), static_cast<uint64_t>(len));
}

}  // namespace

uint64_t xxh64(const void* data, size_t len, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + len;
  uint64_t h;
  if (len >= 32) {
    uint64_t v1 = seed + kP1 + kP2, v2 = seed + kP2, v3 = seed, v4 = seed - kP1;
    const unsigned char* const limit = end - 32;
    do {
      v1 = lane(v1, read64(p));
      v2 = lane(v2, read64(p + 8));
      v3 = lane(v3, read64(p + 16));
      v4 = lane(v4, read64(p + 24));
      p += 32;
    } while (p <= limit);
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge(h, v1);
    h = merge(h, v2);
    h = merge(h, v3);
    h = merge(h, v4);
  } else {
    h = seed + kP5;
  }
  h += static_cast<uint64_t>(len);
  while (end - p >= 8) {
    h ^= lane(0, read64(p));
    h = rotl(h, 27) * kP1 + kP4;
    p += 8;
  }
  if (end - p >= 4) {
    h ^= static_cast<uint64_t>(read32(p)) * kP1;
    h = rotl(h, 23) * kP2 + kP3;
    p += 4;
  }
  while (p < end) {
    h ^= static_cast<uint64_t>(*p) * kP5;
    h = rotl(h, 11) * kP1;
    ++p;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

uint64_t contentHash(const void* data, size_t len) {
  const size_t m = (len + kHashBlockBytes - 1) / kHashBlockBytes;
  std::vector<uint64_t> blocks(m);
  hashBlocks(static_cast<const unsigned char*>(data), len, 0, m, blocks.data());
  return combine(blocks, len);
}

uint64_t contentHashParallel(const void* data, size_t len, unsigned threads) {
  const size_t m = (len + kHashBlockBytes - 1) / kHashBlockBytes;
  if (threads <= 1 || m < 2) return contentHash(data, len);
  const size_t workers = threads < m ? threads : m;
  std::vector<uint64_t> blocks(m);
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  size_t next = 0;  // first block not yet handed out; worker w gets a contiguous range
  for (size_t w = 0; w < workers; ++w) {
    const size_t count = m / workers + (w < m % workers ? 1 : 0);
    const size_t first = next, last = next + count;
    next = last;
    if (w + 1 == workers) {
      hashBlocks(bytes, len, first, last, blocks.data());  // the calling thread takes the last range
      break;
    }
    try {
      pool.emplace_back(hashBlocks, bytes, len, first, last, blocks.data());
    } catch (...) {
      hashBlocks(bytes, len, first, last, blocks.data());  // could not start a thread: do it here
    }
  }
  for (auto& t : pool) t.join();
  return combine(blocks, len);
}

}  // namespace tccl
