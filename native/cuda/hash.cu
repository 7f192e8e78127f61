// GPU leaf level of the content hash (docs/kernels.md): b_k = XXH64(block k of 1 MiB, seed = k). XXH64 keeps four
// independent accumulators over 32-byte stripes, so each block is hashed by four adjacent threads (one lane each);
// lane 0 merges them and hashes the tail. The root hash over the b_k runs on the host with the CPU xxh64, so the
// result equals tccl::contentHash for the same bytes.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "kernels.h"

namespace tccl::gpu {
namespace {

constexpr size_t kBlock = size_t{1} << 20;  // tccl::kHashBlockBytes
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ull;

__device__ __forceinline__ uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
__device__ __forceinline__ uint64_t round64(uint64_t acc, uint64_t input) { return rotl(acc + input * kP2, 31) * kP1; }
__device__ __forceinline__ uint64_t merge(uint64_t h, uint64_t acc) { return (h ^ round64(0, acc)) * kP1 + kP4; }

template <bool Aligned>
__device__ __forceinline__ uint64_t load64(const uint8_t* p) {
  if (Aligned) return *reinterpret_cast<const uint64_t*>(p);
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
template <bool Aligned>
__device__ __forceinline__ uint32_t load32(const uint8_t* p) {
  if (Aligned) return *reinterpret_cast<const uint32_t*>(p);
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// Thread t works on block k = t / 4 as lane t % 4. Every thread of a warp reaches the shuffles (inactive ones with
// zero stripes), so the full mask is valid.
template <bool Aligned>
__global__ void hashBlocksKernel(const uint8_t* __restrict__ data, size_t len, size_t m, uint64_t* __restrict__ out) {
  const size_t t = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  const size_t k = t >> 2;
  const unsigned lane = threadIdx.x & 3u;
  const bool active = k < m;
  const size_t off = active ? k * kBlock : 0;
  const size_t n = active ? (len - off < kBlock ? len - off : kBlock) : 0;
  const uint8_t* p = data + off;
  const uint64_t seed = k;
  const size_t stripes = n >= 32 ? n / 32 : 0;
  uint64_t v = lane == 0 ? seed + kP1 + kP2 : lane == 1 ? seed + kP2 : lane == 2 ? seed : seed - kP1;
  for (size_t s = 0; s < stripes; ++s) v = round64(v, load64<Aligned>(p + 32 * s + 8 * lane));
  const unsigned base = threadIdx.x & ~3u;
  const uint64_t v1 = __shfl_sync(0xFFFFFFFFu, v, base);
  const uint64_t v2 = __shfl_sync(0xFFFFFFFFu, v, base + 1);
  const uint64_t v3 = __shfl_sync(0xFFFFFFFFu, v, base + 2);
  const uint64_t v4 = __shfl_sync(0xFFFFFFFFu, v, base + 3);
  if (!active || lane != 0) return;
  uint64_t h;
  if (n >= 32) {
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge(h, v1);
    h = merge(h, v2);
    h = merge(h, v3);
    h = merge(h, v4);
  } else {
    h = seed + kP5;
  }
  h += static_cast<uint64_t>(n);
  const uint8_t* q = p + 32 * stripes;
  const uint8_t* const end = p + n;
  while (end - q >= 8) {
    h ^= round64(0, load64<Aligned>(q));
    h = rotl(h, 27) * kP1 + kP4;
    q += 8;
  }
  if (end - q >= 4) {
    h ^= static_cast<uint64_t>(load32<Aligned>(q)) * kP1;
    h = rotl(h, 23) * kP2 + kP3;
    q += 4;
  }
  while (q < end) {
    h ^= static_cast<uint64_t>(*q) * kP5;
    h = rotl(h, 11) * kP1;
    ++q;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  out[k] = h;
}

const char* check(cudaError_t e) { return e == cudaSuccess ? nullptr : cudaGetErrorString(e); }

}  // namespace

const char* hashBlocksOnDevice(int device, const void* data, size_t len, uint64_t* hostBlockHashes) {
  if (const char* e = check(cudaSetDevice(device))) return e;
  const size_t m = (len + kBlock - 1) / kBlock;
  if (m == 0) return nullptr;
  uint64_t* dev = nullptr;
  if (const char* e = check(cudaMalloc(&dev, m * sizeof(uint64_t)))) return e;
  constexpr unsigned kThreads = 128;  // 32 blocks of 1 MiB per CUDA block
  const size_t threads = 4 * m;
  const unsigned grid = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  const auto* bytes = static_cast<const uint8_t*>(data);
  if (reinterpret_cast<uintptr_t>(bytes) % 8 == 0) hashBlocksKernel<true><<<grid, kThreads>>>(bytes, len, m, dev);
  else hashBlocksKernel<false><<<grid, kThreads>>>(bytes, len, m, dev);
  const char* err = check(cudaGetLastError());
  if (!err) err = check(cudaMemcpy(hostBlockHashes, dev, m * sizeof(uint64_t), cudaMemcpyDeviceToHost));
  cudaFree(dev);
  return err;
}

}  // namespace tccl::gpu
