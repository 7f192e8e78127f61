// Deterministic 64-bit content hash (definition in docs/kernels.md): the same bytes give the same value on every
// OS, CPU and thread count.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tccl {

constexpr size_t kHashBlockBytes = size_t{1} << 20;

// XXH64 of len bytes with the given seed (the public xxHash 64-bit algorithm).
uint64_t xxh64(const void* data, size_t len, uint64_t seed);
// Tree hash: block k (kHashBlockBytes each, the last may be shorter) hashes to b_k = xxh64(block_k, seed = k);
// the result is xxh64 over the little-endian 8-byte encodings of b_0..b_{m-1}, seed = len. For len == 0 (m == 0)
// that is xxh64 of zero bytes with seed 0.
uint64_t contentHash(const void* data, size_t len);
// Same result as contentHash, using up to `threads` std::threads (the calling thread included) for large inputs.
uint64_t contentHashParallel(const void* data, size_t len, unsigned threads);

}  // namespace tccl
