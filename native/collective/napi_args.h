// Argument checks of the N-API bindings of the collectives (native/collective/addon.cc, native/cuda/nccl_napi.cc):
// a bad argument throws a TypeError with `kind` "usage" whose message leads with the addon's name, so each addon
// defines `usage` (its name, then throwUsage) and these checks call it.
#pragma once

#include <napi.h>

#include <string>

#include "liveness.h"

namespace dalle_napi {

// Defined by each addon: throwUsage(env, "<addon>: " + what).
[[noreturn]] void usage(Napi::Env env, const std::string& what);

[[noreturn]] inline void throwUsage(Napi::Env env, const std::string& message) {
  Napi::Error err = Napi::TypeError::New(env, message);
  err.Value().Set("kind", Napi::String::New(env, "usage"));
  throw err;
}

// An integer in lo .. hi (both inclusive).
inline int intArg(Napi::Env env, Napi::Value v, const std::string& name, double lo, double hi) {
  if (!v.IsNumber()) usage(env, name + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || d != static_cast<double>(static_cast<long long>(d))) {
    usage(env, name + " must be an integer in " + std::to_string(static_cast<long long>(lo)) + " .. " +
                   std::to_string(static_cast<long long>(hi)));
  }
  return static_cast<int>(d);
}

inline std::string stringArg(Napi::Env env, Napi::Value v, const std::string& name) {
  if (!v.IsString()) usage(env, name + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// 'sum' | 'max' | 'min' as the caller's reduction type.
template <class Op>
Op reduceArg(Napi::Env env, Napi::Value v, Op sum, Op max, Op min) {
  std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "sum") return sum;
  if (s == "max") return max;
  if (s == "min") return min;
  usage(env, "the reduction must be 'sum', 'max' or 'min'");
}

// A typed array's bytes: `length` elements of `type` at `data`.
struct ArrayView {
  void* data = nullptr;
  size_t length = 0;
  napi_typedarray_type type = napi_uint8_array;
};

// `expected` words the accepted types for the error ("Float32Array or Float64Array").
inline ArrayView typedArrayArg(Napi::Env env, Napi::Value v, const char* expected) {
  if (!v.IsTypedArray()) usage(env, std::string("expected a ") + expected);
  ArrayView a;
  napi_value buffer;
  size_t offset;
  // An on-heap (small) typed array's bytes are moved off the heap here, so the pointer stays valid while referenced.
  NAPI_THROW_IF_FAILED(env, napi_get_typedarray_info(env, v, &a.type, &a.length, &a.data, &buffer, &offset), a);
  return a;
}

// A fault as an Error: "dalle: <message>" with `kind`, and `faultyRank` when the rank is known.
inline Napi::Error faultError(Napi::Env env, const dalle_collective::Fault& f) {
  Napi::Error err = Napi::Error::New(env, "dalle: " + f.message);
  err.Value().Set("kind", Napi::String::New(env, f.kind));
  if (f.rank >= 0) err.Value().Set("faultyRank", Napi::Number::New(env, f.rank));
  return err;
}

}  // namespace dalle_napi
