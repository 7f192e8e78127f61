// Entry points of the CUDA kernels library (native/cuda/*.cu, built only with -DTCCL_CUDA=ON, which defines
// TCCL_WITH_CUDA for the addon). Plain C++ declarations, no CUDA headers, so device.cpp can include this in any
// build and call these only under TCCL_WITH_CUDA.
//
// Every function runs synchronously on the calling (native worker) thread: it selects `device`, launches, waits,
// and returns nullptr on success or a static message naming the failed CUDA call. Pointers are device pointers
// (or managed memory) on `device`, except where a name says host.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tccl::gpu {

// Same bytes as tccl::encode (native/core/codec.h): codec 0..4 = None, U8, U4, F16, BF16. out holds
// encodedSize(codec, n, blockSize) bytes. *ok is false when the CPU encode would return false (NaN/Inf input, a
// block range beyond float32, F16/BF16 overflow); the output is then unspecified.
const char* encodeOnDevice(int device, int codec, const float* src, size_t n, uint32_t blockSize, bool stochastic,
                           uint64_t seed, uint8_t* out, bool* ok);
// Same values as tccl::decode (accumulate = false) and tccl::decodeAccumulate (accumulate = true).
const char* decodeOnDevice(int device, int codec, const uint8_t* in, size_t n, uint32_t blockSize, float* out,
                           bool accumulate);
// The leaf level of tccl::contentHash: hostBlockHashes[k] = xxh64(data[k MiB .. ], seed = k) for the
// ceil(len / 1 MiB) blocks. The root (xxh64 over the little-endian block hashes, seed = len) is done on the host.
const char* hashBlocksOnDevice(int device, const void* data, size_t len, uint64_t* hostBlockHashes);

}  // namespace tccl::gpu
