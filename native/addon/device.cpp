// N-API glue of the GPU data path, in every build: the CUDA runtime and NCCL are loaded at run time
// (native/cuda/runtime.h), so this compiles without CUDA headers and loads on hosts without GPUs; every GPU call
// then fails with a clear error. The kernels (GPU codecs, GPU content hash) exist only in the CUDA build
// (TCCL_WITH_CUDA, `npm run build:cuda`).
//
// Every copy, kernel and NCCL call runs on a libuv worker thread and settles a Promise; the JS thread only
// validates arguments. Device memory is held by a shared Alloc, so an operation in flight keeps it alive even
// when JS calls free() meanwhile (the memory is released when the last holder lets go).
#include "device.h"

#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../cuda/runtime.h"
#include "args.h"
#include "codec.h"
#include "hash.h"
#ifdef TCCL_WITH_CUDA
#include "../cuda/kernels.h"
#endif

namespace tccl_addon {
namespace {

using namespace tccl::gpu;

struct Failure {
  std::string code;  // empty: success
  std::string message;
  explicit operator bool() const { return !code.empty(); }
};

Napi::Error toError(Napi::Env env, const Failure& f) {
  Napi::Error e = f.code == "INVALID_ARGUMENT" ? Napi::TypeError::New(env, f.message) : Napi::Error::New(env, f.message);
  e.Set("code", Napi::String::New(env, f.code));
  return e;
}
[[noreturn]] void fail(Napi::Env env, const Failure& f) { throw toError(env, f); }
[[noreturn]] void invalid(Napi::Env env, const std::string& msg) { throwInvalid(env, msg); }

// The loaded runtime, or a CUDA_UNAVAILABLE failure saying what is missing.
const CudaApi* runtime(Failure* f) {
  std::string err;
  const CudaApi* api = cudaApi(&err);
  if (!api) *f = {"CUDA_UNAVAILABLE", "CUDA is not available: " + err};
  return api;
}

// Runtime plus a usable device `device` selected on the calling thread.
const CudaApi* useDevice(int device, Failure* f) {
  const CudaApi* api = runtime(f);
  if (!api) return nullptr;
  int count = 0;
  const cudaError e = api->getDeviceCount(&count);
  std::string path;
  cudaApi(nullptr, &path);
  if (e != kCudaSuccess || count == 0) {
    *f = {"CUDA_UNAVAILABLE",
          "CUDA is not available: the CUDA runtime (" + path + ") loaded, but no GPU can be used" +
              (e != kCudaSuccess ? ": " + cudaMessage(api, "cudaGetDeviceCount", e) : std::string(": 0 devices")) +
              ". Check the NVIDIA driver (`nvidia-smi`) and CUDA_VISIBLE_DEVICES."};
    return nullptr;
  }
  if (device < 0 || device >= count) {
    *f = {"INVALID_ARGUMENT", "device " + std::to_string(device) + " does not exist: " + std::to_string(count) +
                                  " GPU(s) visible (0.." + std::to_string(count - 1) + ")"};
    return nullptr;
  }
  const cudaError s = api->setDevice(device);
  if (s != kCudaSuccess) {
    *f = {"CUDA_ERROR", cudaMessage(api, "cudaSetDevice(" + std::to_string(device) + ")", s)};
    return nullptr;
  }
  return api;
}

Failure cudaFailure(const CudaApi* api, const std::string& what, cudaError e) {
  return {"CUDA_ERROR", cudaMessage(api, what, e)};
}

#ifndef TCCL_WITH_CUDA
Failure notBuilt(const char* what) {
  return {"NOT_BUILT", std::string(what) +
                           " needs the CUDA kernels, which are not in this build: rebuild the addon with "
                           "`npm run build:cuda` (CMake with -DTCCL_CUDA=ON; needs nvcc from CUDA 12 or 13)"};
}
#endif

// ---- a Promise settled from a libuv worker thread ----

class Task : public Napi::AsyncWorker {
 public:
  using Work = std::function<Failure()>;
  using Done = std::function<Napi::Value(Napi::Env)>;

  static Napi::Promise run(Napi::Env env, const std::vector<Napi::Value>& keep, Work work, Done done = nullptr) {
    auto* t = new Task(env, std::move(work), std::move(done));
    for (const auto& v : keep)
      if (v.IsObject()) t->refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    Napi::Promise p = t->deferred_.Promise();
    t->Queue();
    return p;
  }

 private:
  Task(Napi::Env env, Work work, Done done)
      : Napi::AsyncWorker(env, "tccl-gpu"), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        done_(std::move(done)) {}
  void Execute() override {
    try {
      failure_ = work_();
    } catch (const std::exception& e) {
      failure_ = {"INTERNAL", e.what()};
    }
  }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    if (failure_) {
      deferred_.Reject(toError(Env(), failure_).Value());
      return;
    }
    try {
      deferred_.Resolve(done_ ? done_(Env()) : Env().Undefined());
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  Napi::Promise::Deferred deferred_;
  Work work_;
  Done done_;
  Failure failure_;
  std::vector<Napi::ObjectReference> refs_;
};

// ---- device memory ----

struct Alloc {
  void* ptr = nullptr;
  size_t bytes = 0;
  int device = 0;
  bool owned = false;  // allocated here (freed here) or wrapped (the owner frees it)
  ~Alloc() {
    if (!owned || !ptr) return;
    if (const CudaApi* api = cudaApi()) {
      api->setDevice(device);
      api->free(ptr);
    }
  }
};


double numberArg(Napi::Env env, const Napi::Value& v, const char* what, double max) {
  if (!v.IsNumber()) invalid(env, std::string("Expected \"") + what + "\" to be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > max || d != static_cast<double>(static_cast<uint64_t>(d)))
    invalid(env, std::string("\"") + what + "\" out of range: " + std::to_string(d));
  return d;
}

class DeviceMemory : public Napi::ObjectWrap<DeviceMemory> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "DeviceMemory",
                       {InstanceMethod<&DeviceMemory::Allocate>("allocate"), InstanceMethod<&DeviceMemory::Wrap>("wrap"),
                        InstanceMethod<&DeviceMemory::CopyFromHost>("copyFromHost"),
                        InstanceMethod<&DeviceMemory::CopyToHost>("copyToHost"),
                        InstanceMethod<&DeviceMemory::ContentHash>("contentHash"),
                        InstanceMethod<&DeviceMemory::Free>("free"), InstanceAccessor<&DeviceMemory::Pointer>("pointer"),
                        InstanceAccessor<&DeviceMemory::Bytes>("byteLength"),
                        InstanceAccessor<&DeviceMemory::Device>("device"),
                        InstanceAccessor<&DeviceMemory::Owned>("owned"), InstanceAccessor<&DeviceMemory::Freed>("freed")});
  }
  explicit DeviceMemory(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceMemory>(info) {}

  // The live allocation, or a JS exception (freed / not allocated).
  std::shared_ptr<Alloc> live(Napi::Env env, const char* op) {
    if (freed_) fail(env, {"FREED", std::string("DeviceBuffer.") + op + ": the buffer was freed (use after free())"});
    if (!alloc_) fail(env, {"INVALID_STATE", std::string("DeviceBuffer.") + op + ": the buffer holds no memory yet"});
    return alloc_;
  }

 private:
  // allocate(bytes, device): Promise<void>; cudaMalloc on a worker thread.
  Napi::Value Allocate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (alloc_ || freed_ || allocating_) invalid(env, "allocate() may be called once on an empty DeviceMemory");
    const size_t bytes = static_cast<size_t>(numberArg(env, info[0], "byteLength", 9007199254740991.0));
    const int device = static_cast<int>(numberArg(env, info[1], "device", 1 << 20));
    if (bytes == 0) invalid(env, "cannot allocate 0 bytes");
    allocating_ = true;
    auto result = std::make_shared<std::shared_ptr<Alloc>>();
    Napi::Object self = Value();
    return Task::run(
        env, {self},
        [bytes, device, result]() -> Failure {
          Failure f;
          const CudaApi* api = useDevice(device, &f);
          if (!api) return f;
          void* p = nullptr;
          const cudaError e = api->malloc(&p, bytes);
          if (e != kCudaSuccess)
            return cudaFailure(api, "cudaMalloc(" + std::to_string(bytes) + " bytes on device " + std::to_string(device) + ")", e);
          auto a = std::make_shared<Alloc>();
          a->ptr = p;
          a->bytes = bytes;
          a->device = device;
          a->owned = true;
          *result = a;
          return {};
        },
        [this, result](Napi::Env env) -> Napi::Value {
          allocating_ = false;
          alloc_ = *result;
          return env.Undefined();
        });
  }

  // wrap(pointer: bigint, bytes, device): memory owned by someone else. When the CUDA runtime can describe the
  // pointer, it must be device (or managed) memory on `device`; otherwise it is taken as given and every later
  // operation reports that CUDA is unavailable.
  Napi::Value Wrap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (alloc_ || freed_ || allocating_) invalid(env, "wrap() may be called once on an empty DeviceMemory");
    if (!info[0].IsBigInt()) invalid(env, "Expected the device pointer to be a BigInt");
    bool lossless = false;
    const uint64_t raw = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) invalid(env, "the device pointer does not fit in 64 bits");
    if (raw == 0) invalid(env, "cannot wrap a null device pointer");
    const size_t bytes = static_cast<size_t>(numberArg(env, info[1], "byteLength", 9007199254740991.0));
    const int device = static_cast<int>(numberArg(env, info[2], "device", 1 << 20));
    if (bytes == 0) invalid(env, "cannot wrap 0 bytes");
    if (raw + bytes < raw) invalid(env, "pointer + byteLength overflows the address space");
    std::string err;
    if (const CudaApi* api = cudaApi(&err)) {
      PointerAttributes attr;
      std::memset(&attr, 0, sizeof attr);
      const cudaError e = api->pointerGetAttributes(&attr, reinterpret_cast<void*>(raw));
      if (e == kCudaSuccess) {
        if (attr.type != kMemDevice && attr.type != kMemManaged)
          invalid(env, "the pointer is not CUDA device memory (cudaPointerGetAttributes says " +
                           std::string(attr.type == kMemHost ? "pinned host memory" : "unregistered host memory") + ")");
        if (attr.device != device)
          invalid(env, "the pointer belongs to device " + std::to_string(attr.device) + ", not device " + std::to_string(device));
      }
    }
    auto a = std::make_shared<Alloc>();
    a->ptr = reinterpret_cast<void*>(raw);
    a->bytes = bytes;
    a->device = device;
    a->owned = false;
    alloc_ = a;
    return env.Undefined();
  }

  // copyFromHost(src: TypedArray, byteOffset): Promise<void> (host -> device, on a worker thread).
  Napi::Value CopyFromHost(const Napi::CallbackInfo& info) { return copy(info, true); }
  // copyToHost(dst: TypedArray, byteOffset): Promise<void> (device -> host, on a worker thread).
  Napi::Value CopyToHost(const Napi::CallbackInfo& info) { return copy(info, false); }

  Napi::Value copy(const Napi::CallbackInfo& info, bool toDevice) {
    Napi::Env env = info.Env();
    auto a = live(env, toDevice ? "copyFrom" : "copyTo");
    View h = viewOf(env, info[0], toDevice ? "source" : "destination");
    const size_t off = info[1].IsUndefined() ? 0 : static_cast<size_t>(numberArg(env, info[1], "byteOffset", 9007199254740991.0));
    if (off > a->bytes || h.bytes > a->bytes - off)
      invalid(env, "the copy of " + std::to_string(h.bytes) + " bytes at offset " + std::to_string(off) +
                       " does not fit in the " + std::to_string(a->bytes) + "-byte device buffer");
    return Task::run(env, {info[0], Value()}, [a, h, off, toDevice]() -> Failure {
      if (h.bytes == 0) return {};
      Failure f;
      const CudaApi* api = useDevice(a->device, &f);
      if (!api) return f;
      uint8_t* dev = static_cast<uint8_t*>(a->ptr) + off;
      const cudaError e = toDevice ? api->memcpy(dev, h.data, h.bytes, kMemcpyDefault)
                                   : api->memcpy(h.data, dev, h.bytes, kMemcpyDefault);
      if (e != kCudaSuccess)
        return cudaFailure(api, std::string("cudaMemcpy ") + (toDevice ? "host->device" : "device->host") + " of " +
                                    std::to_string(h.bytes) + " bytes", e);
      return {};
    });
  }

  // contentHash(): Promise<bigint>, same value as the CPU contentHash of the same bytes.
  Napi::Value ContentHash(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto a = live(env, "contentHash");
    auto out = std::make_shared<uint64_t>(0);
    return Task::run(
        env, {Value()},
        [a, out]() -> Failure {
          Failure f;
          const CudaApi* api = useDevice(a->device, &f);
          if (!api) return f;
#ifdef TCCL_WITH_CUDA
          const size_t m = (a->bytes + tccl::kHashBlockBytes - 1) / tccl::kHashBlockBytes;
          std::vector<uint64_t> blocks(m);
          if (const char* e = hashBlocksOnDevice(a->device, a->ptr, a->bytes, blocks.data()))
            return {"CUDA_ERROR", std::string("GPU content hash failed: ") + e};
          std::vector<unsigned char> le(8 * m);
          for (size_t k = 0; k < m; ++k)
            for (int i = 0; i < 8; ++i) le[8 * k + i] = static_cast<unsigned char>(blocks[k] >> (8 * i));
          *out = tccl::xxh64(le.data(), le.size(), static_cast<uint64_t>(a->bytes));
          return {};
#else
          (void)api;
          return notBuilt("DeviceBuffer.contentHash");
#endif
        },
        [out](Napi::Env env) -> Napi::Value { return Napi::BigInt::New(env, *out); });
  }

  // free(): idempotent; the memory goes when no operation in flight holds it any more.
  Napi::Value Free(const Napi::CallbackInfo& info) {
    freed_ = true;
    alloc_.reset();
    return info.Env().Undefined();
  }

  Napi::Value Pointer(const Napi::CallbackInfo& info) {
    return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(alloc_ ? alloc_->ptr : nullptr)));
  }
  Napi::Value Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), alloc_ ? static_cast<double>(alloc_->bytes) : 0); }
  Napi::Value Device(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), alloc_ ? alloc_->device : -1); }
  Napi::Value Owned(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), alloc_ && alloc_->owned); }
  Napi::Value Freed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), freed_); }

  std::shared_ptr<Alloc> alloc_;
  bool freed_ = false;
  bool allocating_ = false;
};

Napi::FunctionReference* deviceMemoryCtor(Napi::Env env, Napi::Function* set = nullptr) {
  // One constructor per environment (worker threads get their own), kept as a finalized heap reference.
  static std::mutex mu;
  static std::vector<std::pair<napi_env, Napi::FunctionReference*>> table;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& [e, r] : table)
    if (e == static_cast<napi_env>(env)) {
      if (set) *r = Napi::Persistent(*set);
      return r;
    }
  if (!set) return nullptr;
  auto* r = new Napi::FunctionReference(Napi::Persistent(*set));
  table.emplace_back(env, r);
  return r;
}

DeviceMemory* unwrapMemory(Napi::Env env, const Napi::Value& v, const char* what) {
  Napi::FunctionReference* ctor = deviceMemoryCtor(env);
  if (!v.IsObject() || !ctor || !v.As<Napi::Object>().InstanceOf(ctor->Value()))
    invalid(env, std::string("Expected \"") + what + "\" to be a DeviceBuffer");
  return DeviceMemory::Unwrap(v.As<Napi::Object>());
}

// ---- pinned host memory ----

std::mutex& pinnedMutex() { static std::mutex m; return m; }
std::set<void*>& pinnedLive() { static std::set<void*> s; return s; }

void releasePinned(void* p) {
  {
    std::lock_guard<std::mutex> lock(pinnedMutex());
    if (pinnedLive().erase(p) == 0) return;  // already released by freePinned
  }
  if (const CudaApi* api = cudaApi()) api->freeHost(p);
}

// allocPinned(bytes): Promise<ArrayBuffer> over page-locked host memory (cudaHostAlloc, portable), the staging area
// for device <-> host copies at full PCIe speed. Freed by freePinned(buffer) (which detaches it) or on GC.
Napi::Value AllocPinnedJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t bytes = static_cast<size_t>(numberArg(env, info[0], "byteLength", 9007199254740991.0));
  if (bytes == 0) invalid(env, "cannot allocate 0 bytes of pinned memory");
  auto out = std::make_shared<void*>(nullptr);
  return Task::run(
      env, {},
      [bytes, out]() -> Failure {
        Failure f;
        const CudaApi* api = useDevice(0, &f);
        if (!api) return f;
        const cudaError e = api->hostAlloc(out.get(), bytes, kHostAllocPortable);
        if (e != kCudaSuccess) return cudaFailure(api, "cudaHostAlloc(" + std::to_string(bytes) + " bytes)", e);
        std::lock_guard<std::mutex> lock(pinnedMutex());
        pinnedLive().insert(*out);
        return {};
      },
      [bytes, out](Napi::Env env) -> Napi::Value {
        return Napi::ArrayBuffer::New(env, *out, bytes, [](Napi::Env, void* p) { releasePinned(p); });
      });
}

Napi::Value FreePinnedJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) invalid(env, "freePinned expects the ArrayBuffer returned by allocPinned");
  auto ab = info[0].As<Napi::ArrayBuffer>();
  void* p = ab.Data();
  {
    std::lock_guard<std::mutex> lock(pinnedMutex());
    if (!p || !pinnedLive().count(p)) return env.Undefined();  // not pinned by us, or already freed
  }
  if (!ab.IsDetached()) ab.Detach();
  releasePinned(p);
  return env.Undefined();
}

// ---- information ----

Napi::Value CudaInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef TCCL_WITH_CUDA
  o.Set("kernels", true);
#else
  o.Set("kernels", false);
#endif
  std::string err, path;
  const CudaApi* api = cudaApi(&err, &path);
  o.Set("runtimeLoaded", api != nullptr);
  o.Set("runtimePath", path);
  o.Set("runtimeError", api ? std::string() : err);
  int devices = 0, driver = 0, rt = 0;
  std::string deviceError;
  if (api) {
    api->runtimeGetVersion(&rt);
    api->driverGetVersion(&driver);
    const cudaError e = api->getDeviceCount(&devices);
    if (e != kCudaSuccess) {
      devices = 0;
      deviceError = cudaMessage(api, "cudaGetDeviceCount", e);
    }
  } else {
    deviceError = "the CUDA runtime is not loaded";
  }
  o.Set("runtimeVersion", rt);
  o.Set("driverVersion", driver);
  o.Set("deviceCount", devices);
  o.Set("deviceError", deviceError);
  std::string nerr, npath;
  const NcclApi* nccl = ncclApi(&nerr, &npath);
  int nv = 0;
  if (nccl) nccl->getVersion(&nv);
  o.Set("ncclLoaded", nccl != nullptr);
  o.Set("ncclPath", npath);
  o.Set("ncclError", nccl ? std::string() : nerr);
  o.Set("ncclVersion", nv);
  return o;
}

// ---- GPU codecs ----

// deviceEncode(codec, src: DeviceMemory, count, blockSize, stochastic, seed, out: DeviceMemory): Promise<boolean>
Napi::Value DeviceEncodeJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int codec = static_cast<int>(numberArg(env, info[0], "codec", tccl::kCodecCount - 1));
  auto src = unwrapMemory(env, info[1], "src")->live(env, "encode");
  const size_t n = static_cast<size_t>(numberArg(env, info[2], "count", 9007199254740991.0));
  const uint32_t block = static_cast<uint32_t>(numberArg(env, info[3], "blockSize", 1 << 24));
  const bool stochastic = info[4].ToBoolean().Value();
  const uint64_t seed = static_cast<uint64_t>(numberArg(env, info[5], "seed", 9007199254740991.0));
  auto out = unwrapMemory(env, info[6], "out")->live(env, "encode");
  if (n > src->bytes / 4) invalid(env, "the source holds fewer than count float32 values");
  if (tccl::encodedSize(static_cast<tccl::Codec>(codec), n, block) > out->bytes) invalid(env, "the output is smaller than encodedSize");
  if (src->device != out->device) invalid(env, "src and out are on different devices");
  auto ok = std::make_shared<bool>(true);
  return Task::run(
      env, {info[1], info[6]},
      [=]() -> Failure {
        Failure f;
        if (!useDevice(src->device, &f)) return f;
#ifdef TCCL_WITH_CUDA
        if (const char* e = encodeOnDevice(src->device, codec, static_cast<const float*>(src->ptr), n, block, stochastic,
                                           seed, static_cast<uint8_t*>(out->ptr), ok.get()))
          return {"CUDA_ERROR", std::string("GPU encode failed: ") + e};
        return {};
#else
        (void)stochastic;
        (void)seed;
        return notBuilt("GPU encode");
#endif
      },
      [ok](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *ok); });
}

// deviceDecode(codec, src: DeviceMemory, count, blockSize, out: DeviceMemory, accumulate): Promise<void>
Napi::Value DeviceDecodeJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int codec = static_cast<int>(numberArg(env, info[0], "codec", tccl::kCodecCount - 1));
  auto src = unwrapMemory(env, info[1], "src")->live(env, "decode");
  const size_t n = static_cast<size_t>(numberArg(env, info[2], "count", 9007199254740991.0));
  const uint32_t block = static_cast<uint32_t>(numberArg(env, info[3], "blockSize", 1 << 24));
  auto out = unwrapMemory(env, info[4], "out")->live(env, "decode");
  const bool accumulate = info[5].ToBoolean().Value();
  if (tccl::encodedSize(static_cast<tccl::Codec>(codec), n, block) > src->bytes) invalid(env, "the source is smaller than encodedSize");
  if (n > out->bytes / 4) invalid(env, "the output holds fewer than count float32 values");
  if (src->device != out->device) invalid(env, "src and out are on different devices");
  return Task::run(env, {info[1], info[4]}, [=]() -> Failure {
    Failure f;
    if (!useDevice(src->device, &f)) return f;
#ifdef TCCL_WITH_CUDA
    if (const char* e = decodeOnDevice(src->device, codec, static_cast<const uint8_t*>(src->ptr), n, block,
                                       static_cast<float*>(out->ptr), accumulate))
      return {"CUDA_ERROR", std::string("GPU decode failed: ") + e};
    return {};
#else
    (void)accumulate;
    return notBuilt("GPU decode");
#endif
  });
}

// ---- NCCL: communicator bootstrap and collectives (compiled; not run on a GPU in this repository's CI) ----

const NcclApi* nccl(Failure* f) {
  std::string err;
  const NcclApi* api = ncclApi(&err);
  if (!api) *f = {"NCCL_UNAVAILABLE", err};
  return api;
}

Failure ncclFailure(const NcclApi* api, const std::string& what, ncclResult r) {
  const char* s = api->getErrorString ? api->getErrorString(r) : nullptr;
  return {"NCCL_ERROR", what + " failed: " + (s ? s : "unknown NCCL error") + " (ncclResult " + std::to_string(r) + ")"};
}

// TCCL dtype code (lib/dtype.ts) -> NCCL data type; -1 where NCCL has none (int16, uint16).
int ncclType(uint32_t dtype) {
  static const int map[] = {kNcclFloat32, kNcclFloat64, kNcclFloat16, kNcclBfloat16, kNcclInt8, kNcclUint8,
                            -1,           -1,           kNcclInt32,   kNcclUint32,   kNcclInt64, kNcclUint64};
  return dtype < 12 ? map[dtype] : -1;
}
// TCCL op code (sum, avg, prod, min, max) -> NCCL op.
int ncclOp(uint32_t op) {
  static const int map[] = {kNcclSum, kNcclAvg, kNcclProd, kNcclMin, kNcclMax};
  return op < 5 ? map[op] : -1;
}
size_t dtypeBytes(uint32_t dtype) {
  static const size_t map[] = {4, 8, 2, 2, 1, 1, 2, 2, 4, 4, 8, 8};
  return dtype < 12 ? map[dtype] : 0;
}

// ncclUniqueId(): Uint8Array(128). The id is created by one rank and must reach the others over the control
// plane (the master relays it; docs/gpu.md "bootstrap hook").
Napi::Value NcclUniqueIdJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Failure f;
  const NcclApi* api = nccl(&f);
  if (!api) fail(env, f);
  NcclUniqueId id;
  const ncclResult r = api->getUniqueId(&id);
  if (r != 0) fail(env, ncclFailure(api, "ncclGetUniqueId", r));
  auto out = Napi::Uint8Array::New(env, sizeof id.internal);
  std::memcpy(out.Data(), id.internal, sizeof id.internal);
  return out;
}

struct CommState {
  std::mutex mu;
  ncclComm comm = nullptr;
  int device = 0;
  int rank = 0, nranks = 0;
  cudaStream stream = nullptr;
  bool aborted = false;
};

class NcclCommunicator : public Napi::ObjectWrap<NcclCommunicator> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NcclCommunicator",
                       {InstanceMethod<&NcclCommunicator::InitRank>("init"),
                        InstanceMethod<&NcclCommunicator::Collective>("collective"),
                        InstanceMethod<&NcclCommunicator::Abort>("abort"),
                        InstanceMethod<&NcclCommunicator::Destroy>("destroy")});
  }
  explicit NcclCommunicator(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NcclCommunicator>(info) {}
  ~NcclCommunicator() override {
    // Not destroyed by the user: abort on a thread of its own (never block the JS thread on NCCL).
    auto s = state_;
    if (s && s->comm) std::thread([s] { abortNow(s); }).detach();
  }

 private:
  static void abortNow(const std::shared_ptr<CommState>& s) {
    std::lock_guard<std::mutex> lock(s->mu);
    if (!s->comm) return;
    if (const NcclApi* api = ncclApi()) api->commAbort(s->comm);
    s->comm = nullptr;
    s->aborted = true;
  }

  // init(id: Uint8Array(128), nranks, rank, device): Promise<void>; ncclCommInitRank blocks until all ranks join.
  Napi::Value InitRank(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (state_) invalid(env, "init() may be called once");
    View id = viewOf(env, info[0], "id");
    if (id.bytes != sizeof(NcclUniqueId)) invalid(env, "the NCCL unique id must be 128 bytes");
    const int nranks = static_cast<int>(numberArg(env, info[1], "nranks", 1 << 20));
    const int rank = static_cast<int>(numberArg(env, info[2], "rank", 1 << 20));
    const int device = static_cast<int>(numberArg(env, info[3], "device", 1 << 20));
    if (nranks < 1 || rank >= nranks) invalid(env, "rank must be in [0, nranks)");
    NcclUniqueId uid;
    std::memcpy(uid.internal, id.data, sizeof uid.internal);
    auto s = std::make_shared<CommState>();
    s->device = device;
    s->rank = rank;
    s->nranks = nranks;
    state_ = s;
    return Task::run(env, {Value()}, [s, uid, nranks, rank]() -> Failure {
      Failure f;
      const NcclApi* api = nccl(&f);
      if (!api) return f;
      const CudaApi* cuda = useDevice(s->device, &f);
      if (!cuda) return f;
      const cudaError ce = cuda->streamCreate(&s->stream);
      if (ce != kCudaSuccess) return cudaFailure(cuda, "cudaStreamCreate", ce);
      ncclComm comm = nullptr;
      const ncclResult r = api->commInitRank(&comm, nranks, uid, rank);
      if (r != 0) return ncclFailure(api, "ncclCommInitRank(rank " + std::to_string(rank) + " of " + std::to_string(nranks) + ")", r);
      std::lock_guard<std::mutex> lock(s->mu);
      s->comm = comm;
      return {};
    });
  }

  // collective(kind, send: DeviceMemory, recv: DeviceMemory, count, dtype, op): Promise<void>.
  // kind 0 = allReduce (count elements), 1 = reduceScatter (count = elements per rank received),
  // 2 = allGather (count = elements per rank sent). Runs on the communicator's stream and waits for it.
  Napi::Value Collective(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto s = state_;
    if (!s) invalid(env, "the communicator is not initialized");
    const int kind = static_cast<int>(numberArg(env, info[0], "kind", 2));
    auto send = unwrapMemory(env, info[1], "send")->live(env, "nccl");
    auto recv = unwrapMemory(env, info[2], "recv")->live(env, "nccl");
    const size_t count = static_cast<size_t>(numberArg(env, info[3], "count", 9007199254740991.0));
    const uint32_t dtype = static_cast<uint32_t>(numberArg(env, info[4], "dtype", 255));
    const uint32_t op = static_cast<uint32_t>(numberArg(env, info[5], "op", 255));
    const int nt = ncclType(dtype), no = ncclOp(op);
    if (nt < 0) invalid(env, "NCCL has no reduction for this dtype (int16/uint16): use the staged host path");
    if (kind != 2 && no < 0) invalid(env, "unknown reduce op code " + std::to_string(op));
    const size_t es = dtypeBytes(dtype);
    const size_t sendBytes = es * count * (kind == 1 ? s->nranks : 1);
    const size_t recvBytes = es * count * (kind == 2 ? s->nranks : 1);
    if (send->bytes < sendBytes || recv->bytes < recvBytes) invalid(env, "a device buffer is too small for this collective");
    return Task::run(env, {Value(), info[1], info[2]}, [=]() -> Failure {
      Failure f;
      const NcclApi* api = nccl(&f);
      if (!api) return f;
      const CudaApi* cuda = useDevice(s->device, &f);
      if (!cuda) return f;
      ncclComm comm;
      {
        std::lock_guard<std::mutex> lock(s->mu);
        if (!s->comm) return {"ABORTED", "the NCCL communicator was aborted or destroyed"};
        comm = s->comm;
      }
      ncclResult r = 0;
      if (kind == 0) r = api->allReduce(send->ptr, recv->ptr, count, nt, no, comm, s->stream);
      else if (kind == 1) r = api->reduceScatter(send->ptr, recv->ptr, count, nt, no, comm, s->stream);
      else r = api->allGather(send->ptr, recv->ptr, count, nt, comm, s->stream);
      if (r != 0) return ncclFailure(api, "NCCL collective", r);
      const cudaError e = cuda->streamSynchronize(s->stream);
      if (e != kCudaSuccess) return cudaFailure(cuda, "cudaStreamSynchronize after an NCCL collective", e);
      return {};
    });
  }

  // abort(): ncclCommAbort on a thread of its own; in-flight collectives fail, later ones reject with ABORTED.
  Napi::Value Abort(const Napi::CallbackInfo& info) {
    auto s = state_;
    if (s) std::thread([s] { abortNow(s); }).detach();
    return info.Env().Undefined();
  }

  Napi::Value Destroy(const Napi::CallbackInfo& info) {
    auto s = state_;
    state_.reset();
    return Task::run(info.Env(), {}, [s]() -> Failure {
      if (!s) return {};
      std::lock_guard<std::mutex> lock(s->mu);
      const NcclApi* api = ncclApi();
      if (s->comm && api) api->commDestroy(s->comm);
      s->comm = nullptr;
      if (s->stream)
        if (const CudaApi* cuda = cudaApi()) cuda->streamDestroy(s->stream);
      s->stream = nullptr;
      return {};
    });
  }

  std::shared_ptr<CommState> state_;
};

}  // namespace

void registerDevice(Napi::Env env, Napi::Object exports) {
  Napi::Function mem = DeviceMemory::Init(env);
  deviceMemoryCtor(env, &mem);
  exports.Set("DeviceMemory", mem);
  exports.Set("NcclCommunicator", NcclCommunicator::Init(env));
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfoJs));
  exports.Set("allocPinned", Napi::Function::New(env, AllocPinnedJs));
  exports.Set("freePinned", Napi::Function::New(env, FreePinnedJs));
  exports.Set("deviceEncode", Napi::Function::New(env, DeviceEncodeJs));
  exports.Set("deviceDecode", Napi::Function::New(env, DeviceDecodeJs));
  exports.Set("ncclUniqueId", Napi::Function::New(env, NcclUniqueIdJs));
}

}  // namespace tccl_addon
