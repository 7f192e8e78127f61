// Tests of the content hash: XXH64 against the xxHash sanity vectors, the block-tree definition, parallel ==
// serial, and sensitivity to single-bit changes. Prints throughput (never asserted).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "check.h"
#include "hash.h"

using namespace tccl;

namespace {

// The xxHash sanity buffer: byte i is the top byte of a 64-bit multiplicative sequence.
std::vector<unsigned char> sanityBuffer(size_t n) {
  std::vector<unsigned char> b(n);
  uint64_t gen = 2654435761u;
  for (size_t i = 0; i < n; ++i) {
    b[i] = static_cast<unsigned char>(gen >> 56);
    gen *= 11400714785074694797ull;
  }
  return b;
}

std::vector<unsigned char> noise(size_t n, uint64_t seed) {
  std::vector<unsigned char> b(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    b[i] = static_cast<unsigned char>(x >> 32);
  }
  return b;
}

// The tree definition, recomputed the obvious way.
uint64_t treeByHand(const unsigned char* p, size_t len) {
  std::vector<unsigned char> leaves;
  for (size_t off = 0, k = 0; off < len; off += kHashBlockBytes, ++k) {
    const size_t n = len - off < kHashBlockBytes ? len - off : kHashBlockBytes;
    const uint64_t b = xxh64(p + off, n, k);
    for (int i = 0; i < 8; ++i) leaves.push_back(static_cast<unsigned char>(b >> (8 * i)));
  }
  return xxh64(leaves.data(), leaves.size(), len);
}

void testVectors() {
  const auto buf = sanityBuffer(222);
  const uint64_t prime = 2654435761u;
  struct V { size_t len; uint64_t seed; uint64_t expected; };
  const V vs[] = {
      {0, 0, 0xEF46DB3751D8E999ull},   {0, prime, 0xAC75FDA2929B17EFull}, {1, 0, 0xE934A84ADB052768ull},
      {1, prime, 0x5014607643A9B4C3ull}, {4, 0, 0x9136A0DCA57457EEull},   {14, 0, 0x8282DCC4994E35C8ull},
      {14, prime, 0xC3BD6BF63DEB6DF0ull}, {222, 0, 0xB641AE8CB691C174ull}, {222, prime, 0x20CB8AB7AE10C14Aull},
  };
  for (const V& v : vs) {
    const uint64_t h = xxh64(buf.data(), v.len, v.seed);
    CHECK_MSG(h == v.expected, "xxh64(len=%zu, seed=%llu) = %016llx", v.len, (unsigned long long)v.seed,
              (unsigned long long)h);
  }
  CHECK(xxh64(nullptr, 0, 0) == 0xEF46DB3751D8E999ull);
  // Unaligned input gives the same result.
  std::vector<unsigned char> shifted(223);
  std::memcpy(shifted.data() + 1, buf.data(), 222);
  CHECK(xxh64(shifted.data() + 1, 222, 0) == 0xB641AE8CB691C174ull);
}

void testTree() {
  CHECK(contentHash(nullptr, 0) == 0xEF46DB3751D8E999ull);  // no blocks: xxh64 of nothing, seed 0
  const size_t B = kHashBlockBytes;
  const auto data = noise(3 * B + 17, 1);
  const size_t sizes[] = {0, 1, 7, 31, 32, 33, 1000, B - 1, B, B + 1, 2 * B - 1, 2 * B, 2 * B + 1, 3 * B + 17};
  for (size_t len : sizes) {
    const uint64_t serial = contentHash(data.data(), len);
    CHECK_MSG(serial == treeByHand(data.data(), len), "tree definition, len=%zu", len);
    for (unsigned threads : {0u, 1u, 2u, 3u, 4u, 8u, 64u}) {
      CHECK_MSG(contentHashParallel(data.data(), len, threads) == serial, "parallel len=%zu threads=%u", len,
                threads);
    }
  }
  // A single-block input is not simply xxh64 of the bytes (the tree adds a level).
  CHECK(contentHash(data.data(), 100) != xxh64(data.data(), 100, 0));
}

void testBitFlips() {
  const size_t B = kHashBlockBytes;
  auto data = noise(2 * B + 3, 2);
  const uint64_t base = contentHash(data.data(), data.size());
  const size_t positions[] = {0, 1, 100, B - 1, B, B + 12345, 2 * B, 2 * B + 2};
  for (size_t pos : positions) {
    for (int bit : {0, 7}) {
      data[pos] ^= static_cast<unsigned char>(1u << bit);
      CHECK_MSG(contentHash(data.data(), data.size()) != base, "flip at %zu bit %d", pos, bit);
      CHECK(contentHashParallel(data.data(), data.size(), 2) == contentHash(data.data(), data.size()));
      data[pos] ^= static_cast<unsigned char>(1u << bit);
    }
  }
  CHECK(contentHash(data.data(), data.size()) == base);
  // Length is part of the hash: trailing zero bytes change it.
  std::vector<unsigned char> zeros(100, 0);
  CHECK(contentHash(zeros.data(), 99) != contentHash(zeros.data(), 100));
}

void bench() {
  const size_t len = size_t{256} << 20;
  const auto data = noise(len, 3);
  auto time = [&](auto&& f) {
    double best = 1e30;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      f();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return static_cast<double>(len) / best / 1e9;
  };
  volatile uint64_t sink = 0;
  const double serial = time([&] { sink = sink + contentHash(data.data(), len); });
  const double par = time([&] { sink = sink + contentHashParallel(data.data(), len, 2); });
  std::printf("contentHash 256 MiB: %.2f GB/s serial, %.2f GB/s with 2 threads\n", serial, par);
}

}  // namespace

int main() {
  testVectors();
  testTree();
  testBitFlips();
  bench();
  return TEST_MAIN_RESULT();
}
