// Run-time loading of the CUDA runtime (libcudart) and NCCL (libnccl.so.2), with the few functions TCCL calls
// declared here, so the default CPU build needs no CUDA headers and one binary runs on hosts with and without
// GPUs. Header-only (inline, function-local statics) so both build systems compile it as part of the addon.
//
// Search order, CUDA runtime: $TCCL_CUDART_PATH (a full path; when set, nothing else is tried), then
// libcudart.so, libcudart.so.13, libcudart.so.12 on the loader's path, then /usr/local/cuda/lib64/.
// NCCL: $TCCL_NCCL_PATH, then libnccl.so.2, libnccl.so. Windows: cudart64_13.dll, cudart64_12.dll (NCCL does not
// exist there). Every failure keeps a message that says what was tried and what to install.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#else
#include <dlfcn.h>
#endif

namespace tccl::gpu {

// ---- CUDA runtime ABI (the subset used; values as documented by the CUDA runtime API) ----
using cudaError = int;                 // cudaError_t: 0 = cudaSuccess
using cudaStream = void*;              // cudaStream_t (nullptr = legacy default stream)
constexpr cudaError kCudaSuccess = 0;
constexpr int kMemcpyDefault = 4;      // cudaMemcpyDefault: direction inferred from unified addressing
constexpr unsigned kHostAllocPortable = 1;
enum MemoryType : int { kMemUnregistered = 0, kMemHost = 1, kMemDevice = 2, kMemManaged = 3 };

// cudaPointerAttributes (CUDA 11+ layout); padded in case later runtimes append fields.
struct PointerAttributes {
  int type;
  int device;
  void* devicePointer;
  void* hostPointer;
  unsigned char reserved[64];
};

struct CudaApi {
  const char* (*getErrorString)(cudaError);
  cudaError (*getDeviceCount)(int*);
  cudaError (*setDevice)(int);
  cudaError (*malloc)(void**, size_t);
  cudaError (*free)(void*);
  cudaError (*memcpy)(void*, const void*, size_t, int);
  cudaError (*memset)(void*, int, size_t);
  cudaError (*hostAlloc)(void**, size_t, unsigned);
  cudaError (*freeHost)(void*);
  cudaError (*pointerGetAttributes)(PointerAttributes*, const void*);
  cudaError (*driverGetVersion)(int*);
  cudaError (*runtimeGetVersion)(int*);
  cudaError (*deviceSynchronize)();
  cudaError (*streamCreate)(cudaStream*);
  cudaError (*streamDestroy)(cudaStream);
  cudaError (*streamSynchronize)(cudaStream);
};

// ---- NCCL ABI (nccl.h is not needed: these match NCCL 2.x) ----
using ncclResult = int;  // 0 = ncclSuccess, 7 = ncclInProgress
using ncclComm = void*;
struct NcclUniqueId { char internal[128]; };
enum NcclDataType : int {
  kNcclInt8 = 0, kNcclUint8 = 1, kNcclInt32 = 2, kNcclUint32 = 3, kNcclInt64 = 4, kNcclUint64 = 5,
  kNcclFloat16 = 6, kNcclFloat32 = 7, kNcclFloat64 = 8, kNcclBfloat16 = 9,
};
enum NcclRedOp : int { kNcclSum = 0, kNcclProd = 1, kNcclMax = 2, kNcclMin = 3, kNcclAvg = 4 };

struct NcclApi {
  ncclResult (*getVersion)(int*);
  ncclResult (*getUniqueId)(NcclUniqueId*);
  ncclResult (*commInitRank)(ncclComm*, int, NcclUniqueId, int);
  ncclResult (*commDestroy)(ncclComm);
  ncclResult (*commAbort)(ncclComm);
  ncclResult (*commGetAsyncError)(ncclComm, ncclResult*);
  const char* (*getErrorString)(ncclResult);
  ncclResult (*allReduce)(const void*, void*, size_t, int, int, ncclComm, cudaStream);
  ncclResult (*reduceScatter)(const void*, void*, size_t, int, int, ncclComm, cudaStream);
  ncclResult (*allGather)(const void*, void*, size_t, int, ncclComm, cudaStream);
};

struct LoadResult {
  bool ok = false;
  std::string path;   // the file that was loaded
  std::string error;  // why nothing was loaded (what was tried, what to install)
};

namespace detail {

inline void* openLibrary(const std::string& name, std::string* why) {
#if defined(_WIN32)
  HMODULE h = LoadLibraryA(name.c_str());
  if (!h) *why = "LoadLibrary error " + std::to_string(GetLastError());
  return reinterpret_cast<void*>(h);
#else
  void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    *why = e ? e : "dlopen failed";
  }
  return h;
#endif
}

inline void* symbol(void* lib, const char* name) {
#if defined(_WIN32)
  return reinterpret_cast<void*>(GetProcAddress(reinterpret_cast<HMODULE>(lib), name));
#else
  return dlsym(lib, name);
#endif
}

inline std::string envPath(const char* var) {
  const char* v = std::getenv(var);
  return v ? std::string(v) : std::string();
}

// Tries each candidate; returns the first handle that loads.
inline void* openFirst(const std::vector<std::string>& candidates, LoadResult* r) {
  std::string tried;
  for (const auto& c : candidates) {
    std::string why;
    if (void* h = openLibrary(c, &why)) {
      r->path = c;
      return h;
    }
    tried += "\n  " + c + ": " + why;
  }
  r->error = tried;
  return nullptr;
}

template <typename Fn>
bool bind(void* lib, Fn*& slot, const char* name, std::string* missing) {
  slot = reinterpret_cast<Fn*>(symbol(lib, name));
  if (!slot) *missing += std::string(missing->empty() ? "" : ", ") + name;
  return slot != nullptr;
}

struct CudaState {
  std::once_flag once;
  CudaApi api{};
  LoadResult result;
};
struct NcclState {
  std::once_flag once;
  NcclApi api{};
  LoadResult result;
};
inline CudaState& cudaState() { static CudaState s; return s; }
inline NcclState& ncclState() { static NcclState s; return s; }

inline void loadCuda(CudaState& s) {
  std::vector<std::string> candidates;
  const std::string env = envPath("TCCL_CUDART_PATH");
  if (!env.empty()) {
    candidates.push_back(env);
  } else {
#if defined(_WIN32)
    candidates = {"cudart64_13.dll", "cudart64_12.dll", "cudart64_110.dll"};
#elif defined(__APPLE__)
    candidates = {};
#else
    candidates = {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "/usr/local/cuda/lib64/libcudart.so.13",
                  "/usr/local/cuda/lib64/libcudart.so.12", "/usr/local/cuda/lib64/libcudart.so"};
#endif
  }
  const char* install =
      "the CUDA runtime library (libcudart) was not found. Install the NVIDIA driver and the CUDA runtime "
      "(e.g. `apt install cuda-cudart-13-0`, or `pip install nvidia-cuda-runtime-cu13` and add its lib directory "
      "to LD_LIBRARY_PATH), or point TCCL_CUDART_PATH at libcudart.so.";
#if defined(__APPLE__)
  s.result.error = "CUDA is not available on macOS: device buffers need Linux or Windows with an NVIDIA GPU";
  return;
#endif
  void* lib = openFirst(candidates, &s.result);
  if (!lib) {
    s.result.error = std::string(install) + " Tried:" + s.result.error;
    return;
  }
  std::string missing;
  CudaApi& a = s.api;
  bind(lib, a.getErrorString, "cudaGetErrorString", &missing);
  bind(lib, a.getDeviceCount, "cudaGetDeviceCount", &missing);
  bind(lib, a.setDevice, "cudaSetDevice", &missing);
  bind(lib, a.malloc, "cudaMalloc", &missing);
  bind(lib, a.free, "cudaFree", &missing);
  bind(lib, a.memcpy, "cudaMemcpy", &missing);
  bind(lib, a.memset, "cudaMemset", &missing);
  bind(lib, a.hostAlloc, "cudaHostAlloc", &missing);
  bind(lib, a.freeHost, "cudaFreeHost", &missing);
  bind(lib, a.pointerGetAttributes, "cudaPointerGetAttributes", &missing);
  bind(lib, a.driverGetVersion, "cudaDriverGetVersion", &missing);
  bind(lib, a.runtimeGetVersion, "cudaRuntimeGetVersion", &missing);
  bind(lib, a.deviceSynchronize, "cudaDeviceSynchronize", &missing);
  bind(lib, a.streamCreate, "cudaStreamCreate", &missing);
  bind(lib, a.streamDestroy, "cudaStreamDestroy", &missing);
  bind(lib, a.streamSynchronize, "cudaStreamSynchronize", &missing);
  if (!missing.empty()) {
    s.result.error = s.result.path + " is not a usable CUDA runtime (missing " + missing +
                     "); install CUDA runtime 12 or 13 or point TCCL_CUDART_PATH at one";
    return;
  }
  s.result.ok = true;
}

inline void loadNccl(NcclState& s) {
  std::vector<std::string> candidates;
  const std::string env = envPath("TCCL_NCCL_PATH");
  if (!env.empty()) candidates.push_back(env);
  else candidates = {"libnccl.so.2", "libnccl.so"};
#if defined(_WIN32) || defined(__APPLE__)
  s.result.error = "NCCL is only available on Linux; device all-reduce uses the staged host path here";
  return;
#endif
  void* lib = openFirst(candidates, &s.result);
  if (!lib) {
    s.result.error =
        "NCCL (libnccl.so.2) was not found: install it (`apt install libnccl2`, or `pip install nvidia-nccl-cu13` "
        "and add site-packages/nvidia/nccl/lib to LD_LIBRARY_PATH), or point TCCL_NCCL_PATH at libnccl.so.2. Tried:" +
        s.result.error;
    return;
  }
  std::string missing;
  NcclApi& a = s.api;
  bind(lib, a.getVersion, "ncclGetVersion", &missing);
  bind(lib, a.getUniqueId, "ncclGetUniqueId", &missing);
  bind(lib, a.commInitRank, "ncclCommInitRank", &missing);
  bind(lib, a.commDestroy, "ncclCommDestroy", &missing);
  bind(lib, a.commAbort, "ncclCommAbort", &missing);
  bind(lib, a.commGetAsyncError, "ncclCommGetAsyncError", &missing);
  bind(lib, a.getErrorString, "ncclGetErrorString", &missing);
  bind(lib, a.allReduce, "ncclAllReduce", &missing);
  bind(lib, a.reduceScatter, "ncclReduceScatter", &missing);
  bind(lib, a.allGather, "ncclAllGather", &missing);
  if (!missing.empty()) {
    s.result.error = s.result.path + " is not a usable NCCL 2 library (missing " + missing + ")";
    return;
  }
  s.result.ok = true;
}

}  // namespace detail

// The CUDA runtime, loaded once per process. Returns nullptr (and *error, if given) when it is not available.
inline const CudaApi* cudaApi(std::string* error = nullptr, std::string* path = nullptr) {
  auto& s = detail::cudaState();
  std::call_once(s.once, [&] { detail::loadCuda(s); });
  if (path) *path = s.result.path;
  if (!s.result.ok) {
    if (error) *error = s.result.error;
    return nullptr;
  }
  return &s.api;
}

// NCCL, loaded once per process.
inline const NcclApi* ncclApi(std::string* error = nullptr, std::string* path = nullptr) {
  auto& s = detail::ncclState();
  std::call_once(s.once, [&] { detail::loadNccl(s); });
  if (path) *path = s.result.path;
  if (!s.result.ok) {
    if (error) *error = s.result.error;
    return nullptr;
  }
  return &s.api;
}

// "cudaMalloc(1048576 bytes) failed: out of memory (error 2)".
inline std::string cudaMessage(const CudaApi* api, const std::string& what, cudaError e) {
  const char* s = api && api->getErrorString ? api->getErrorString(e) : nullptr;
  return what + " failed: " + (s ? s : "unknown CUDA error") + " (error " + std::to_string(e) + ")";
}

}  // namespace tccl::gpu
