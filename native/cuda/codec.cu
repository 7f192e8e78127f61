// GPU versions of the quantization codecs of native/core/codec.cpp, producing the same bytes and the same float32
// values bit for bit (contract: docs/kernels.md). Every float operation is an explicitly rounded intrinsic
// (__fadd_rn, __fmul_rn, ...), so nvcc can never fuse a multiply and an add; the build also passes
// --fmad=false. Denormals are kept (no -ftz) and division is IEEE (__fdiv_rn, __ddiv_rn), like the CPU.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.h"

namespace tccl::gpu {
namespace {

constexpr int kThreads = 256;
constexpr size_t kHeader = 8;  // float32 min, float32 scale

// ---- bit helpers (device versions of codec.cpp's and codec.h's) ----

__device__ __forceinline__ int32_t sortKey(uint32_t bits) {
  const int32_t s = static_cast<int32_t>(bits);
  return s ^ ((s >> 31) & 0x7FFFFFFF);
}
__device__ __forceinline__ float keyToFloat(int32_t key) {
  return __uint_as_float(static_cast<uint32_t>(sortKey(static_cast<uint32_t>(key))));
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
__device__ __forceinline__ uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}
// u in [0, 1) for global element index i (docs/kernels.md, "Stochastic rounding is deterministic").
__device__ __forceinline__ float rngUniform(uint64_t seed, uint64_t i) {
  const uint64_t k = splitmix64(seed ^ ((i >> 32) * 0x9E3779B97F4A7C15ull));
  const uint32_t h = mix32(static_cast<uint32_t>(i) ^ static_cast<uint32_t>(k)) ^ static_cast<uint32_t>(k >> 32);
  return __fmul_rn(__uint2float_rn(h >> 8), 1.0f / 16777216.0f);
}

__device__ __forceinline__ void storeFloat(uint8_t* p, float f) {
  const uint32_t u = __float_as_uint(f);
  p[0] = static_cast<uint8_t>(u);
  p[1] = static_cast<uint8_t>(u >> 8);
  p[2] = static_cast<uint8_t>(u >> 16);
  p[3] = static_cast<uint8_t>(u >> 24);
}
__device__ __forceinline__ float loadFloat(const uint8_t* p) {
  return __uint_as_float(static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24));
}

// float16 / bfloat16: the branch-free forms of codec.h's tccl::detail, with the two float additions made explicit.
__device__ __forceinline__ float f16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;
  const uint32_t shifted = em << 13;
  const uint32_t normal = shifted + (112u << 23);
  const uint32_t infnan = shifted | 0x7F800000u;
  const float sub = __fsub_rn(__uint_as_float(shifted + (113u << 23)), __uint_as_float(113u << 23));
  const uint32_t isInfNan = 0u - static_cast<uint32_t>(em >= 0x7C00u);
  const uint32_t isSub = 0u - static_cast<uint32_t>(em < 0x0400u);
  const uint32_t mag = (__float_as_uint(sub) & isSub) | (infnan & isInfNan) | (normal & ~(isSub | isInfNan));
  return __uint_as_float(sign | mag);
}
__device__ __forceinline__ uint16_t f32ToF16(float f) {
  const uint32_t x = __float_as_uint(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7FFFFFFFu;
  const uint32_t normal = (a - (112u << 23) + 0xFFFu + ((a >> 13) & 1u)) >> 13;
  const uint32_t sub = __float_as_uint(__fadd_rn(__uint_as_float(a), 0.5f)) - 0x3F000000u;
  const uint32_t big = a > 0x7F800000u ? (0x7E00u | ((a >> 13) & 0x3FFu)) : 0x7C00u;
  const uint32_t isSub = 0u - static_cast<uint32_t>(a < 0x38800000u);
  const uint32_t isBig = 0u - static_cast<uint32_t>(a >= 0x47800000u);
  return static_cast<uint16_t>(sign | ((sub & isSub) | (big & isBig) | (normal & ~(isSub | isBig))));
}
__device__ __forceinline__ float bf16ToF32(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
__device__ __forceinline__ uint16_t f32ToBf16(float f) {
  const uint32_t x = __float_as_uint(f);
  const uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
  const uint32_t nan = (x >> 16) | 0x0040u;
  return static_cast<uint16_t>((x & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

// ---- U8 / U4 encode: one CUDA block per quantization block (grid-stride over blocks) ----

struct BlockPlan {
  float mn, scale, inv;
  int mode;  // 0: constant block (all q = 0), 1: float32 fast path, 2: float64 wide path, -1: invalid
};

// q of element j of a block (global index i) under the plan; mirrors quantNearest/quantStochastic/quantWide.
__device__ __forceinline__ uint32_t quantize(float x, const BlockPlan& p, float levels, bool stochastic, uint64_t seed,
                                             uint64_t i) {
  if (p.mode == 0) return 0;
  if (p.mode == 2) {
    const double u = stochastic ? static_cast<double>(rngUniform(seed, i)) : 0.5;
    double v = __dadd_rn(__ddiv_rn(__dsub_rn(static_cast<double>(x), static_cast<double>(p.mn)),
                                   static_cast<double>(p.scale)), u);
    const double top = stochastic ? static_cast<double>(levels) : __dadd_rn(static_cast<double>(levels), 0.5);
    v = v < top ? v : top;
    return static_cast<uint32_t>(v);
  }
  const float t = __fmul_rn(__fsub_rn(x, p.mn), p.inv);
  if (stochastic) {
    float v = __fadd_rn(t, rngUniform(seed, i));
    v = v < levels ? v : levels;
    return static_cast<uint32_t>(v);
  }
  const float top = __fadd_rn(levels, 0.5f);
  float v = __fadd_rn(t, 0.5f);
  v = v < top ? v : top;
  return static_cast<uint32_t>(v);
}

template <bool U4>
__global__ void encodeBlocksKernel(const float* __restrict__ src, size_t n, size_t bs, size_t stride, size_t nblocks,
                                   bool stochastic, uint64_t seed, uint8_t* __restrict__ out, int* bad) {
  __shared__ int32_t warpMin[kThreads / 32], warpMax[kThreads / 32];
  __shared__ BlockPlan plan;
  const float levels = U4 ? 15.0f : 255.0f;
  const unsigned tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (size_t blk = blockIdx.x; blk < nblocks; blk += gridDim.x) {
    const size_t b0 = blk * bs;
    const size_t len = n - b0 < bs ? n - b0 : bs;
    const float* x = src + b0;
    uint8_t* o = out + blk * stride;

    int32_t kmin = 0x7FFFFFFF, kmax = -0x7FFFFFFF - 1;
    for (size_t j = tid; j < len; j += kThreads) {
      const int32_t k = sortKey(__float_as_uint(x[j]));
      kmin = k < kmin ? k : kmin;
      kmax = k > kmax ? k : kmax;
    }
    for (int off = 16; off > 0; off >>= 1) {
      const int32_t a = __shfl_down_sync(0xFFFFFFFFu, kmin, off), b = __shfl_down_sync(0xFFFFFFFFu, kmax, off);
      kmin = a < kmin ? a : kmin;
      kmax = b > kmax ? b : kmax;
    }
    if (lane == 0) {
      warpMin[warp] = kmin;
      warpMax[warp] = kmax;
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < kThreads / 32; ++w) {
        kmin = warpMin[w] < kmin ? warpMin[w] : kmin;
        kmax = warpMax[w] > kmax ? warpMax[w] : kmax;
      }
      BlockPlan p{0.0f, 0.0f, 0.0f, -1};
      if (kmax >= 0x7F800000 || kmin < -0x7F800000) {
        atomicOr(bad, 1);  // NaN or +-Inf
      } else {
        const float mn = keyToFloat(kmin), mx = keyToFloat(kmax);
        const float scale = __double2float_rn(__ddiv_rn(__dsub_rn(static_cast<double>(mx), static_cast<double>(mn)),
                                                        static_cast<double>(levels)));
        const float span = __fmul_rn(levels, scale);
        const float topValue = __fadd_rn(mn, span);
        if (!isfinite(span) || !isfinite(topValue)) atomicOr(bad, 1);
        storeFloat(o, mn);
        storeFloat(o + 4, scale);
        const float inv = scale > 0.0f ? __fdiv_rn(1.0f, scale) : 0.0f;
        const bool fast = isfinite(inv) && isfinite(__fsub_rn(mx, mn));
        p = BlockPlan{mn, scale, inv, scale == 0.0f ? 0 : (fast ? 1 : 2)};
      }
      plan = p;
    }
    __syncthreads();
    const BlockPlan p = plan;
    if (p.mode >= 0) {
      uint8_t* packed = o + kHeader;
      if (!U4) {
        for (size_t j = tid; j < len; j += kThreads)
          packed[j] = static_cast<uint8_t>(quantize(x[j], p, levels, stochastic, seed, b0 + j));
      } else {
        const size_t bytes = (len + 1) / 2;
        for (size_t j = tid; j < bytes; j += kThreads) {
          const uint32_t lo = quantize(x[2 * j], p, levels, stochastic, seed, b0 + 2 * j);
          const uint32_t hi = 2 * j + 1 < len ? quantize(x[2 * j + 1], p, levels, stochastic, seed, b0 + 2 * j + 1) : 0u;
          packed[j] = static_cast<uint8_t>(lo | (hi << 4));
        }
      }
    }
    __syncthreads();  // plan and warpMin/warpMax are reused by the next block
  }
}

template <bool U4>
__global__ void decodeBlocksKernel(const uint8_t* __restrict__ in, size_t n, size_t bs, size_t stride,
                                   float* __restrict__ out, bool accumulate) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t blk = i / bs, j = i - blk * bs;
    const uint8_t* p = in + blk * stride;
    const float mn = loadFloat(p), scale = loadFloat(p + 4);
    const uint32_t q = U4 ? (p[kHeader + j / 2] >> ((j & 1) * 4)) & 15u : p[kHeader + j];
    const float v = __fadd_rn(mn, __fmul_rn(static_cast<float>(q), scale));
    out[i] = accumulate ? __fadd_rn(out[i], v) : v;
  }
}

template <bool BF>
__global__ void encodeHalfKernel(const float* __restrict__ src, size_t n, uint8_t* __restrict__ out, int* bad) {
  int local = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint16_t h = BF ? f32ToBf16(src[i]) : f32ToF16(src[i]);
    local |= (h & 0x7FFFu) >= (BF ? 0x7F80u : 0x7C00u);
    out[2 * i] = static_cast<uint8_t>(h);
    out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  if (local) atomicOr(bad, 1);
}

template <bool BF>
__global__ void decodeHalfKernel(const uint8_t* __restrict__ in, size_t n, float* __restrict__ out, bool accumulate) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint16_t h = static_cast<uint16_t>(in[2 * i] | (in[2 * i + 1] << 8));
    const float v = BF ? bf16ToF32(h) : f16ToF32(h);
    out[i] = accumulate ? __fadd_rn(out[i], v) : v;
  }
}

__global__ void decodeRawKernel(const uint8_t* __restrict__ in, size_t n, float* __restrict__ out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = __fadd_rn(out[i], loadFloat(in + 4 * i));
}

unsigned gridFor(size_t items) {
  const size_t g = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(g < 1 ? 1 : (g > (1u << 20) ? (1u << 20) : g));
}

const char* check(cudaError_t e) { return e == cudaSuccess ? nullptr : cudaGetErrorString(e); }

const char* finish() {
  if (const char* e = check(cudaGetLastError())) return e;
  return check(cudaDeviceSynchronize());
}

}  // namespace

const char* encodeOnDevice(int device, int codec, const float* src, size_t n, uint32_t blockSize, bool stochastic,
                           uint64_t seed, uint8_t* out, bool* ok) {
  *ok = true;
  if (const char* e = check(cudaSetDevice(device))) return e;
  if (n == 0) return nullptr;
  if (codec == 0) return check(cudaMemcpy(out, src, 4 * n, cudaMemcpyDeviceToDevice));
  int* bad = nullptr;
  if (const char* e = check(cudaMalloc(&bad, sizeof(int)))) return e;
  const char* err = check(cudaMemset(bad, 0, sizeof(int)));
  if (!err) {
    if (codec == 1 || codec == 2) {
      const size_t bs = blockSize ? blockSize : n;
      const size_t stride = kHeader + (codec == 2 ? (bs + 1) / 2 : bs);
      const size_t nblocks = (n + bs - 1) / bs;
      const unsigned grid = static_cast<unsigned>(nblocks < (1u << 20) ? nblocks : (1u << 20));
      if (codec == 1) encodeBlocksKernel<false><<<grid, kThreads>>>(src, n, bs, stride, nblocks, stochastic, seed, out, bad);
      else encodeBlocksKernel<true><<<grid, kThreads>>>(src, n, bs, stride, nblocks, stochastic, seed, out, bad);
    } else if (codec == 3) {
      encodeHalfKernel<false><<<gridFor(n), kThreads>>>(src, n, out, bad);
    } else if (codec == 4) {
      encodeHalfKernel<true><<<gridFor(n), kThreads>>>(src, n, out, bad);
    } else {
      err = "unknown codec";
    }
  }
  if (!err) err = finish();
  int flag = 0;
  if (!err) err = check(cudaMemcpy(&flag, bad, sizeof(int), cudaMemcpyDeviceToHost));
  cudaFree(bad);
  *ok = flag == 0;
  return err;
}

const char* decodeOnDevice(int device, int codec, const uint8_t* in, size_t n, uint32_t blockSize, float* out,
                           bool accumulate) {
  if (const char* e = check(cudaSetDevice(device))) return e;
  if (n == 0) return nullptr;
  switch (codec) {
    case 0:
      if (!accumulate) return check(cudaMemcpy(out, in, 4 * n, cudaMemcpyDeviceToDevice));
      decodeRawKernel<<<gridFor(n), kThreads>>>(in, n, out);
      break;
    case 1:
    case 2: {
      const size_t bs = blockSize ? blockSize : n;
      const size_t stride = kHeader + (codec == 2 ? (bs + 1) / 2 : bs);
      if (codec == 1) decodeBlocksKernel<false><<<gridFor(n), kThreads>>>(in, n, bs, stride, out, accumulate);
      else decodeBlocksKernel<true><<<gridFor(n), kThreads>>>(in, n, bs, stride, out, accumulate);
      break;
    }
    case 3: decodeHalfKernel<false><<<gridFor(n), kThreads>>>(in, n, out, accumulate); break;
    case 4: decodeHalfKernel<true><<<gridFor(n), kThreads>>>(in, n, out, accumulate); break;
    default: return "unknown codec";
  }
  return finish();
}

}  // namespace tccl::gpu
