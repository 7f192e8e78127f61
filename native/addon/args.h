// Argument guards shared by the addon's files: the native side's second check after lib/ validated everything
// (a TypeError with code INVALID_ARGUMENT), and zero-copy views of TypedArray memory.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

namespace tccl_addon {

[[noreturn]] inline void throwInvalid(Napi::Env env, const std::string& msg) {
  Napi::TypeError err = Napi::TypeError::New(env, msg);
  err.Set("code", Napi::String::New(env, "INVALID_ARGUMENT"));
  throw err;
}

// The bytes of a TypedArray (its own memory: no copy).
struct View {
  uint8_t* data = nullptr;
  size_t bytes = 0;
};

inline View viewOf(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray()) throwInvalid(env, std::string("Expected \"") + what + "\" to be a TypedArray");
  auto ta = v.As<Napi::TypedArray>();
  return View{static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), ta.ByteLength()};
}

}  // namespace tccl_addon
