// N-API glue of the CPU engine and kernels (device.cpp is the GPU half; native/addon is the only code that
// includes napi.h, native/core never does). Its JS surface is declared in lib/binding.ts. Arguments are copied
// from JS values into plain C++ structs on the main thread; native threads never touch a JS value; buffers are
// kept alive by references until the operation's promise settles, which happens through a thread-safe function
// on the main thread.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <thread>

#include "args.h"
#include "chain.h"
#include "codec.h"
#include "direct.h"
#include "dtype.h"
#include "exchange.h"
#include "hash.h"
#include "reduce.h"
#include "quantized.h"
#include "ring.h"
#include "transport.h"
#include "device.h"

namespace {

using namespace tccl;

Napi::Error makeError(Napi::Env env, const OpError& e) {
  Napi::Error err = Napi::Error::New(env, e.message.empty() ? errorCodeName(e.code) : e.message);
  err.Set("code", Napi::String::New(env, errorCodeName(e.code)));
  if (!e.peer.empty()) err.Set("peer", Napi::String::New(env, e.peer));
  return err;
}

using tccl_addon::throwInvalid;
using tccl_addon::View;
using tccl_addon::viewOf;

uint32_t uintArg(Napi::Env env, const Napi::Value& v, const char* what, uint32_t max) {
  if (!v.IsNumber()) throwInvalid(env, std::string("Expected \"") + what + "\" to be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > max || d != static_cast<double>(static_cast<uint64_t>(d)))
    throwInvalid(env, std::string("\"") + what + "\" out of range");
  return static_cast<uint32_t>(d);
}

// An optional count (absent or undefined: the transport's default), up to 2^53.
void optionalCount(Napi::Env env, const Napi::Object& o, const char* what, double max, size_t& out) {
  Napi::Value v = o.Get(what);
  if (v.IsUndefined()) return;
  if (!v.IsNumber()) throwInvalid(env, std::string("Expected \"") + what + "\" to be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 1) || d > max || d != static_cast<double>(static_cast<uint64_t>(d))) throwInvalid(env, std::string("\"") + what + "\" out of range");
  out = static_cast<size_t>(d);
}

// Settles one promise from any thread, exactly once, keeping the JS buffers alive until then.
class PendingOp {
 public:
  PendingOp(Napi::Env env, std::vector<Napi::Value> keep)
      : deferred_(Napi::Promise::Deferred::New(env)) {
    for (auto& v : keep) refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    tsfn_ = Napi::ThreadSafeFunction::New(env, Napi::Function(), "tccl-op", 0, 1);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  // Called from a native thread (or the main thread) once.
  static void settle(std::shared_ptr<PendingOp> self, OpError error, std::shared_ptr<Operation> op) {
    auto payload = new std::tuple<std::shared_ptr<PendingOp>, OpError, std::shared_ptr<Operation>>(self, error, op);
    napi_status st = self->tsfn_.BlockingCall(payload, [](Napi::Env env, Napi::Function, decltype(payload) p) {
      auto& [pending, err, operation] = *p;
      Napi::HandleScope scope(env);
      if (err) {
        pending->deferred_.Reject(makeError(env, err).Value());
      } else {
        Napi::Object result = Napi::Object::New(env);
        result.Set("bytesSent", Napi::Number::New(env, static_cast<double>(operation->bytesSent.load())));
        result.Set("bytesReceived", Napi::Number::New(env, static_cast<double>(operation->bytesReceived.load())));
        result.Set("worldSize", Napi::Number::New(env, operation->worldSize));
        pending->deferred_.Resolve(result);
      }
      for (auto& r : pending->refs_) r.Reset();
      delete p;
    });
    if (st != napi_ok) delete payload;  // environment is shutting down
    self->tsfn_.Release();
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> refs_;
  Napi::ThreadSafeFunction tsfn_;
};

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {InstanceAccessor<&Engine::Port>("port"), InstanceMethod<&Engine::Configure>("configure"),
                        InstanceMethod<&Engine::AllReduce>("allReduce"), InstanceMethod<&Engine::Exchange>("exchange"),
                        InstanceMethod<&Engine::Collective>("collective"),
                        InstanceMethod<&Engine::Abort>("abort"), InstanceMethod<&Engine::Stats>("stats"),
                        InstanceMethod<&Engine::Close>("close")});
  }

  explicit Engine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Engine>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throwInvalid(env, "Engine options must be an object");
    auto o = info[0].As<Napi::Object>();
    TransportOptions opts;
    if (o.Has("host")) opts.host = o.Get("host").ToString().Utf8Value();
    opts.port = static_cast<uint16_t>(uintArg(env, o.Get("port"), "port", 65535));
    opts.connections = static_cast<int>(uintArg(env, o.Get("connections"), "connections", 256));
    if (opts.connections < 1) throwInvalid(env, "\"connections\" must be at least 1");
    opts.socketBufferBytes = static_cast<int>(uintArg(env, o.Get("socketBufferBytes"), "socketBufferBytes", 1u << 30));
    opts.connectTimeoutMs = static_cast<int>(uintArg(env, o.Get("connectTimeoutMs"), "connectTimeoutMs", 600000));
    opts.connectRetryMs = static_cast<int>(uintArg(env, o.Get("connectRetryMs"), "connectRetryMs", 0x7fffffff));
    if (o.Has("sourceAddress") && o.Get("sourceAddress").IsString()) opts.sourceAddress = o.Get("sourceAddress").ToString().Utf8Value();
    size_t n = static_cast<size_t>(opts.maxHandshakes);
    optionalCount(env, o, "maxHandshakes", 1 << 20, n);
    opts.maxHandshakes = static_cast<int>(n);
    optionalCount(env, o, "maxEarlyBytes", 9007199254740991.0, opts.maxEarlyBytes);
    optionalCount(env, o, "maxEarlyBytesPerPeer", 9007199254740991.0, opts.maxEarlyBytesPerPeer);
    n = static_cast<size_t>(opts.redialQuietMs);
    optionalCount(env, o, "redialQuietMs", 0x7fffffff, n);
    opts.redialQuietMs = static_cast<int>(n);
    transport_ = std::make_shared<Transport>(opts);
    try {
      transport_->start();
    } catch (const std::exception& e) {
      Napi::Error err = Napi::Error::New(env, std::string("cannot start the data-plane listener: ") + e.what());
      err.Set("code", Napi::String::New(env, "LISTEN_FAILED"));
      throw err;
    }
  }

  ~Engine() override {
    // Garbage-collected without close(): close on a thread of its own, never on the JS thread.
    if (transport_) {
      auto t = transport_;
      try {
        std::thread([t] { t->close(); }).detach();
      } catch (const std::exception&) {
        t->close();  // no thread to be had: close here (bounded by the linger) rather than end the process
      }
    }
  }

 private:
  Napi::Value Port(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), transport_ ? transport_->port() : 0); }

  Napi::Value Configure(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ensureOpen(env);
    if (!info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsArray() || !info[3].IsTypedArray())
      throwInvalid(env, "configure(epoch, myIndex, peers, ticket)");
    uint64_t epoch = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
    int myIndex = info[1].As<Napi::Number>().Int32Value();
    auto arr = info[2].As<Napi::Array>();
    std::vector<PeerInfo> peers;
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      Napi::Value v = arr.Get(i);
      if (!v.IsObject()) throwInvalid(env, "each peer must be an object {id, host, port}");
      auto p = v.As<Napi::Object>();
      PeerInfo pi;
      pi.id = p.Get("id").ToString().Utf8Value();
      pi.host = p.Get("host").ToString().Utf8Value();
      pi.port = static_cast<uint16_t>(uintArg(env, p.Get("port"), "peer port", 65535));
      peers.push_back(pi);
    }
    if (myIndex < 0 || myIndex >= static_cast<int>(peers.size())) throwInvalid(env, "myIndex out of range");
    View t = viewOf(env, info[3], "ticket");
    if (t.bytes != 16) throwInvalid(env, "the ticket must be 16 bytes");
    std::array<uint8_t, 16> ticket;
    std::memcpy(ticket.data(), t.data, 16);
    try {
      transport_->configure(epoch, myIndex, std::move(peers), ticket);
    } catch (const std::invalid_argument& e) {
      throwInvalid(env, e.what());
    }
    return env.Undefined();
  }

  Napi::Value AllReduce(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throwInvalid(env, "allReduce(args) expects an object");
    auto a = info[0].As<Napi::Object>();
    Napi::Value inputV = a.Get("input");
    Napi::Value outputV = a.Get("output");
    View in = viewOf(env, inputV, "input");
    View out = viewOf(env, outputV, "output");
    uint32_t dtype = uintArg(env, a.Get("dtype"), "dtype", 255);
    uint32_t op = uintArg(env, a.Get("op"), "op", 255);
    if (!isValidDType(dtype)) throwInvalid(env, "unknown dtype code " + std::to_string(dtype));
    if (!isValidReduceOp(op)) throwInvalid(env, "unknown reduce op code " + std::to_string(op));
    size_t es = dtypeSize(static_cast<DType>(dtype));
    if (in.bytes % es != 0) throwInvalid(env, "input byte length is not a multiple of the element size");
    if (out.bytes != in.bytes) throwInvalid(env, "output and input differ in byte length");
    if (in.data != out.data && in.data < out.data + out.bytes && out.data < in.data + in.bytes)
      throwInvalid(env, "output overlaps input without being the same memory");
    double tagD = a.Get("tag").ToNumber().DoubleValue();
    if (!(tagD >= 0) || tagD > 9007199254740991.0) throwInvalid(env, "tag out of range");
    uint32_t timeoutMs = uintArg(env, a.Get("timeoutMs"), "timeoutMs", 0x7fffffff);
    // Quantized all-reduce (native/core/quantized.h): {codec: 1..4, blockSize, stochastic, seed}.
    bool quantized = false;
    QuantizationParams qp;
    if (a.Has("quantization") && !a.Get("quantization").IsUndefined() && !a.Get("quantization").IsNull()) {
      if (!a.Get("quantization").IsObject()) throwInvalid(env, "\"quantization\" must be an object");
      auto q = a.Get("quantization").As<Napi::Object>();
      uint32_t codec = uintArg(env, q.Get("codec"), "quantization.codec", 255);
      if (codec == 0 || !isValidCodec(codec)) throwInvalid(env, "unknown quantization codec code " + std::to_string(codec));
      if (!isFloat(static_cast<DType>(dtype)))
        throwInvalid(env, std::string("quantization needs float data (float32, float64, float16, bfloat16), got ") + dtypeName(static_cast<DType>(dtype)));
      if (op != static_cast<uint32_t>(ReduceOp::Sum) && op != static_cast<uint32_t>(ReduceOp::Avg))
        throwInvalid(env, std::string("quantization supports the sum and avg ops only, got ") + reduceOpName(static_cast<ReduceOp>(op)));
      qp.codec = static_cast<Codec>(codec);
      qp.blockSize = q.Has("blockSize") && !q.Get("blockSize").IsUndefined() ? uintArg(env, q.Get("blockSize"), "quantization.blockSize", 1u << 24) : 256;
      if (qp.blockSize == 0) throwInvalid(env, "\"quantization.blockSize\" must be at least 1");
      qp.stochastic = q.Get("stochastic").ToBoolean().Value();
      Napi::Value seedV = q.Get("seed");
      if (!seedV.IsUndefined()) {
        double sd = seedV.ToNumber().DoubleValue();
        if (!(sd >= 0) || sd > 9007199254740991.0 || sd != std::floor(sd)) throwInvalid(env, "\"quantization.seed\" out of range");
        qp.seed = static_cast<uint64_t>(sd);
      }
      quantized = true;
    }

    auto pending = std::make_shared<PendingOp>(env, std::vector<Napi::Value>{inputV, outputV});
    Napi::Promise promise = pending->promise();
    AllReduceBuffers b{in.data, out.data, in.bytes / es, static_cast<DType>(dtype), static_cast<ReduceOp>(op)};
    uint32_t segBytes = transport_ ? transport_->options().maxSegmentBytes : 262144;
    std::shared_ptr<Operation> ring;
    // 0 = auto (direct for small buffers, ring otherwise), 1 = ring, 2 = direct; every peer must choose alike.
    uint32_t algorithm = a.Has("algorithm") && !a.Get("algorithm").IsUndefined() ? uintArg(env, a.Get("algorithm"), "algorithm", 2) : 0;
    if (algorithm == 2 && in.bytes > kDirectForcedMaxBytes) throwInvalid(env, "the direct algorithm takes at most 1 MiB");
    bool direct = algorithm == 2 || (algorithm == 0 && transport_ && useDirect(in.bytes, transport_->worldSize()));
    if (quantized) ring = std::make_shared<QuantizedAllReduce>(b, qp, segBytes);
    else if (direct) ring = std::make_shared<DirectAllReduce>(b);
    else ring = std::make_shared<RingAllReduce>(b, segBytes);
    ring->key.tag = static_cast<uint64_t>(tagD);
    std::weak_ptr<Operation> weak = ring;
    ring->onSettled = [pending, weak](const OpError& e) {
      auto op = weak.lock();
      PendingOp::settle(pending, e, op);
    };
    if (!transport_) {
      ring->markDone();
      PendingOp::settle(pending, {ErrorCode::Closed, "the engine is closed", ""}, ring);
      return promise;
    }
    transport_->submit(ring, static_cast<int>(timeoutMs));
    return promise;
  }

  Napi::Value Exchange(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throwInvalid(env, "exchange(args) expects an object");
    auto a = info[0].As<Napi::Object>();
    double tagD = a.Get("tag").ToNumber().DoubleValue();
    if (!(tagD >= 0) || tagD > 9007199254740991.0) throwInvalid(env, "tag out of range");
    uint32_t timeoutMs = uintArg(env, a.Get("timeoutMs"), "timeoutMs", 0x7fffffff);
    if (!a.Get("sends").IsArray() || !a.Get("recvs").IsArray()) throwInvalid(env, "exchange needs sends and recvs arrays");
    std::vector<Napi::Value> keep;
    std::vector<ExchangeSend> sends;
    std::vector<ExchangeRecv> recvs;
    auto sa = a.Get("sends").As<Napi::Array>();
    for (uint32_t i = 0; i < sa.Length(); ++i) {
      if (!sa.Get(i).IsObject()) throwInvalid(env, "each send must be {to, stream, data}");
      auto o = sa.Get(i).As<Napi::Object>();
      View v = viewOf(env, o.Get("data"), "send data");
      keep.push_back(o.Get("data"));
      sends.push_back({static_cast<int>(uintArg(env, o.Get("to"), "to", 1u << 20)), uintArg(env, o.Get("stream"), "stream", 0xffffffffu), v.data, v.bytes});
    }
    auto ra = a.Get("recvs").As<Napi::Array>();
    for (uint32_t i = 0; i < ra.Length(); ++i) {
      if (!ra.Get(i).IsObject()) throwInvalid(env, "each recv must be {from, stream, data}");
      auto o = ra.Get(i).As<Napi::Object>();
      View v = viewOf(env, o.Get("data"), "recv data");
      keep.push_back(o.Get("data"));
      recvs.push_back({static_cast<int>(uintArg(env, o.Get("from"), "from", 1u << 20)), uintArg(env, o.Get("stream"), "stream", 0xffffffffu), v.data, v.bytes});
    }
    auto pending = std::make_shared<PendingOp>(env, keep);
    Napi::Promise promise = pending->promise();
    auto op = std::make_shared<tccl::Exchange>(std::move(sends), std::move(recvs),
                                               transport_ ? transport_->options().maxSegmentBytes : 262144);
    op->key.tag = static_cast<uint64_t>(tagD);
    std::weak_ptr<Operation> weak = op;
    op->onSettled = [pending, weak](const OpError& e) { PendingOp::settle(pending, e, weak.lock()); };
    if (!transport_) {
      op->markDone();
      PendingOp::settle(pending, {ErrorCode::Closed, "the engine is closed", ""}, op);
      return promise;
    }
    transport_->submit(op, static_cast<int>(timeoutMs));
    return promise;
  }

  // All-gather, reduce-scatter and broadcast (native/core/chain.h): marshals the arguments; native/core picks the
  // algorithm. {kind, input, output, dtype, op, root, chunkCounts?, tag, timeoutMs}; output holds the whole buffer.
  Napi::Value Collective(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throwInvalid(env, "collective(args) expects an object");
    auto a = info[0].As<Napi::Object>();
    Napi::Value inputV = a.Get("input");
    Napi::Value outputV = a.Get("output");
    View in = viewOf(env, inputV, "input");
    View out = viewOf(env, outputV, "output");
    CollectiveSpec spec;
    spec.kind = static_cast<CollectiveKind>(uintArg(env, a.Get("kind"), "kind", 2));
    uint32_t dtype = uintArg(env, a.Get("dtype"), "dtype", 255);
    uint32_t op = uintArg(env, a.Get("op"), "op", 255);
    if (!isValidDType(dtype)) throwInvalid(env, "unknown dtype code " + std::to_string(dtype));
    if (!isValidReduceOp(op)) throwInvalid(env, "unknown reduce op code " + std::to_string(op));
    spec.dtype = static_cast<DType>(dtype);
    spec.op = static_cast<ReduceOp>(op);
    spec.root = static_cast<int>(uintArg(env, a.Get("root"), "root", 1u << 20));
    size_t es = dtypeSize(spec.dtype);
    if (in.bytes % es != 0 || out.bytes % es != 0) throwInvalid(env, "a buffer's byte length is not a multiple of the element size");
    spec.count = out.bytes / es;
    if (a.Get("chunkCounts").IsArray()) {
      auto arr = a.Get("chunkCounts").As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); ++i) spec.chunkCounts.push_back(uintArg(env, arr.Get(i), "chunkCounts[i]", 0xffffffffu));
    }
    // Memory safety only (TypeScript owns the rules): the input must fit where it is read from.
    if (spec.kind == CollectiveKind::AllGather) {
      if (in.bytes > out.bytes) throwInvalid(env, "the all-gather input is larger than its output");
    } else if (in.bytes != out.bytes) {
      throwInvalid(env, "output and input differ in byte length");
    }
    bool same = in.data == out.data && in.bytes == out.bytes;
    if (!same && in.data < out.data + out.bytes && out.data < in.data + in.bytes) throwInvalid(env, "output overlaps input");
    if (same && spec.kind != CollectiveKind::Broadcast) throwInvalid(env, "this collective needs an output apart from its input");
    spec.input = in.data;
    spec.output = out.data;
    double tagD = a.Get("tag").ToNumber().DoubleValue();
    if (!(tagD >= 0) || tagD > 9007199254740991.0) throwInvalid(env, "tag out of range");
    uint32_t timeoutMs = uintArg(env, a.Get("timeoutMs"), "timeoutMs", 0x7fffffff);
    std::shared_ptr<Operation> opPtr;
    try {
      opPtr = makeCollective(spec, transport_ ? transport_->options().maxSegmentBytes : 262144);
    } catch (const std::invalid_argument& e) {
      throwInvalid(env, e.what());
    }
    auto pending = std::make_shared<PendingOp>(env, std::vector<Napi::Value>{inputV, outputV});
    Napi::Promise promise = pending->promise();
    opPtr->key.tag = static_cast<uint64_t>(tagD);
    std::weak_ptr<Operation> weak = opPtr;
    opPtr->onSettled = [pending, weak](const OpError& e) { PendingOp::settle(pending, e, weak.lock()); };
    if (!transport_) {
      opPtr->markDone();
      PendingOp::settle(pending, {ErrorCode::Closed, "the engine is closed", ""}, opPtr);
      return promise;
    }
    transport_->submit(opPtr, static_cast<int>(timeoutMs));
    return promise;
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object r = Napi::Object::New(env);
    if (!transport_) return r;
    TransportStats s = transport_->stats();
    auto put = [&](const char* k, uint64_t v) { r.Set(k, Napi::Number::New(env, static_cast<double>(v))); };
    put("handshakesPending", s.handshakesPending);
    put("handshakesRefused", s.handshakesRefused);
    put("handshakesEvicted", s.handshakesEvicted);
    put("acceptExhausted", s.acceptExhausted);
    put("earlyBytes", s.earlyBytes);
    put("earlyRefused", s.earlyRefused);
    put("redials", s.redials);
    put("internalErrors", s.internalErrors);
    return r;
  }

  Napi::Value Abort(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!transport_) return env.Undefined();
    double tag = info[0].ToNumber().DoubleValue();
    std::string msg = info.Length() > 1 ? info[1].ToString().Utf8Value() : "aborted";
    // abortTag sends best-effort control frames with a short bound; run it off the JS thread, on the transport's
    // service thread (no thread is created per call).
    auto t = transport_;
    t->post([t, tag, msg] { t->abortTag(static_cast<uint64_t>(tag), msg); });
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto deferred = Napi::Promise::Deferred::New(env);
    if (!transport_) {
      deferred.Resolve(env.Undefined());
      return deferred.Promise();
    }
    auto t = std::move(transport_);
    transport_.reset();
    auto tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function(), "tccl-close", 0, 1);
    auto d = new Napi::Promise::Deferred(deferred);
    auto body = [t, tsfn, d]() mutable {
      t->close();
      tsfn.BlockingCall(d, [](Napi::Env env, Napi::Function, Napi::Promise::Deferred* dd) {
        dd->Resolve(env.Undefined());
        delete dd;
      });
      tsfn.Release();
    };
    try {
      std::thread(body).detach();
    } catch (const std::exception&) {
      // No thread to be had (the process is at its limit): close on this thread, bounded by the linger (~1 s).
      t->close();
      tsfn.Release();
      delete d;
      deferred.Resolve(env.Undefined());
    }
    return deferred.Promise();
  }

  void ensureOpen(Napi::Env env) {
    if (!transport_) {
      Napi::Error err = Napi::Error::New(env, "the engine is closed");
      err.Set("code", Napi::String::New(env, "CLOSED"));
      throw err;
    }
  }

  std::shared_ptr<Transport> transport_;
};

// ---- kernels exposed for tests and benchmarks ----

Napi::Value ReduceIntoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t dtype = uintArg(env, info[0], "dtype", 255), op = uintArg(env, info[1], "op", 255);
  if (!isValidDType(dtype) || !isValidReduceOp(op)) throwInvalid(env, "bad dtype or op code");
  View dst = viewOf(env, info[2], "dst"), src = viewOf(env, info[3], "src");
  size_t es = dtypeSize(static_cast<DType>(dtype));
  if (dst.bytes != src.bytes || dst.bytes % es) throwInvalid(env, "dst and src must have the same size, a multiple of the element size");
  reduceInto(static_cast<DType>(dtype), static_cast<ReduceOp>(op), dst.data, src.data, dst.bytes / es);
  return env.Undefined();
}

Napi::Value FinishAverageJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t dtype = uintArg(env, info[0], "dtype", 255);
  if (!isValidDType(dtype)) throwInvalid(env, "bad dtype code");
  View d = viewOf(env, info[1], "data");
  uint32_t divisor = uintArg(env, info[2], "divisor", 0xffffffffu);
  if (divisor == 0) throwInvalid(env, "divisor must be positive");
  size_t es = dtypeSize(static_cast<DType>(dtype));
  finishAverage(static_cast<DType>(dtype), d.data, d.bytes / es, divisor);
  return env.Undefined();
}

Napi::Value ContentHashSyncJs(const Napi::CallbackInfo& info) {
  View d = viewOf(info.Env(), info[0], "data");
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(contentHash(d.data, d.bytes)));
}

class HashWorker : public Napi::AsyncWorker {
 public:
  HashWorker(Napi::Env env, Napi::Object keep, View v)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), view_(v) {
    keep_ = Napi::Persistent(keep);
  }
  void Execute() override { result_ = contentHashParallel(view_.data, view_.bytes, 2); }
  void OnOK() override { deferred_.Resolve(Napi::BigInt::New(Env(), static_cast<uint64_t>(result_))); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
  Napi::Promise promise() { return deferred_.Promise(); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference keep_;
  View view_;
  uint64_t result_ = 0;
};

Napi::Value ContentHashJs(const Napi::CallbackInfo& info) {
  View d = viewOf(info.Env(), info[0], "data");
  auto* w = new HashWorker(info.Env(), info[0].As<Napi::Object>(), d);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

class CopyWorker : public Napi::AsyncWorker {
 public:
  CopyWorker(Napi::Env env, Napi::Object dst, Napi::Object src, View d, View s)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), d_(d), s_(s) {
    dstRef_ = Napi::Persistent(dst);
    srcRef_ = Napi::Persistent(src);
  }
  void Execute() override {
    if (s_.bytes) std::memmove(d_.data, s_.data, s_.bytes);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
  Napi::Promise promise() { return deferred_.Promise(); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference dstRef_, srcRef_;
  View d_, s_;
};

// Copies src into dst on a worker thread, so large state updates do not stall the event loop.
Napi::Value CopyAsyncJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View d = viewOf(env, info[0], "dst"), s = viewOf(env, info[1], "src");
  if (d.bytes != s.bytes) throwInvalid(env, "copyAsync: dst and src differ in byte length");
  auto* w = new CopyWorker(env, info[0].As<Napi::Object>(), info[1].As<Napi::Object>(), d, s);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Value EncodedSizeJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t codec = uintArg(env, info[0], "codec", 4);
  double count = info[1].ToNumber().DoubleValue();
  uint32_t block = uintArg(env, info[2], "blockSize", 1u << 24);
  return Napi::Number::New(env, static_cast<double>(encodedSize(static_cast<Codec>(codec), static_cast<size_t>(count), block)));
}

Napi::Value EncodeJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t codec = uintArg(env, info[0], "codec", 4);
  View src = viewOf(env, info[1], "src");
  uint32_t block = uintArg(env, info[2], "blockSize", 1u << 24);
  CodecParams p;
  p.blockSize = block;
  p.stochastic = info[3].ToBoolean().Value();
  p.seed = static_cast<uint64_t>(info[4].ToNumber().DoubleValue());
  View out = viewOf(env, info[5], "out");
  size_t n = src.bytes / 4;
  if (out.bytes < encodedSize(static_cast<Codec>(codec), n, block)) throwInvalid(env, "output too small for the encoding");
  bool ok = encode(static_cast<Codec>(codec), reinterpret_cast<const float*>(src.data), n, p, out.data);
  return Napi::Boolean::New(env, ok);
}

Napi::Value DecodeJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t codec = uintArg(env, info[0], "codec", 4);
  View src = viewOf(env, info[1], "src");
  size_t n = static_cast<size_t>(info[2].ToNumber().DoubleValue());
  uint32_t block = uintArg(env, info[3], "blockSize", 1u << 24);
  View out = viewOf(env, info[4], "out");
  if (out.bytes < n * 4 || src.bytes < encodedSize(static_cast<Codec>(codec), n, block)) throwInvalid(env, "buffer sizes do not match the count");
  decode(static_cast<Codec>(codec), src.data, n, block, reinterpret_cast<float*>(out.data));
  return env.Undefined();
}

Napi::Value BuildInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#if defined(__clang__)
  o.Set("compiler", "clang " __clang_version__);
#elif defined(__GNUC__)
  o.Set("compiler", "gcc " __VERSION__);
#elif defined(_MSC_VER)
  o.Set("compiler", "msvc " + std::to_string(_MSC_VER));
#else
  o.Set("compiler", "unknown");
#endif
#ifdef TCCL_WITH_CUDA
  o.Set("cuda", true);
#else
  o.Set("cuda", false);
#endif
  o.Set("napiVersion", NAPI_VERSION);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  net::initSockets();
  exports.Set("Engine", Engine::Init(env));
  exports.Set("reduceInto", Napi::Function::New(env, ReduceIntoJs));
  exports.Set("finishAverage", Napi::Function::New(env, FinishAverageJs));
  exports.Set("contentHash", Napi::Function::New(env, ContentHashJs));
  exports.Set("contentHashSync", Napi::Function::New(env, ContentHashSyncJs));
  exports.Set("copyAsync", Napi::Function::New(env, CopyAsyncJs));
  exports.Set("encodedSize", Napi::Function::New(env, EncodedSizeJs));
  exports.Set("encode", Napi::Function::New(env, EncodeJs));
  exports.Set("decode", Napi::Function::New(env, DecodeJs));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfoJs));
  tccl_addon::registerDevice(env, exports);  // native/addon/device.cpp: DeviceMemory, cudaInfo, NCCL
  return exports;
}

}  // namespace

NODE_API_MODULE(tccl, Init)
