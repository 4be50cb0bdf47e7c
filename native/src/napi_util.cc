#include "napi_util.h"

namespace dalle {

std::vector<ExportEntry>& export_registry() {
  static std::vector<ExportEntry> entries;  // function-local: safe whatever the static-init order of kernel files
  return entries;
}

ExportRegistrar::ExportRegistrar(const char* name, NativeFn fn) { export_registry().push_back({name, fn}); }

static void need(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what) {
  if (i >= info.Length()) fail(op, __FILE__, __LINE__, "argument %zu (%s) is missing", i, what);
}

void* arg_ptr(const Napi::CallbackInfo& info, size_t i, const char* op) {
  need(info, i, op, "pointer");
  if (info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  if (!info[i].IsNumber()) fail(op, __FILE__, __LINE__, "argument %zu must be a data address (number)", i);
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v < 0 || v > 9007199254740991.0) fail(op, __FILE__, __LINE__, "argument %zu is not a valid address", i);
  return reinterpret_cast<void*>(static_cast<uintptr_t>(v));
}

int64_t arg_i64(const Napi::CallbackInfo& info, size_t i, const char* op) {
  need(info, i, op, "integer");
  if (!info[i].IsNumber()) fail(op, __FILE__, __LINE__, "argument %zu must be an integer", i);
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v != (double)(int64_t)v) fail(op, __FILE__, __LINE__, "argument %zu must be an integer, got %g", i, v);
  return (int64_t)v;
}

double arg_f64(const Napi::CallbackInfo& info, size_t i, const char* op) {
  need(info, i, op, "number");
  if (!info[i].IsNumber()) fail(op, __FILE__, __LINE__, "argument %zu must be a number", i);
  return info[i].As<Napi::Number>().DoubleValue();
}

bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* op) {
  need(info, i, op, "boolean");
  if (!info[i].IsBoolean()) fail(op, __FILE__, __LINE__, "argument %zu must be a boolean", i);
  return info[i].As<Napi::Boolean>().Value();
}

std::vector<int64_t> arg_i64_array(const Napi::CallbackInfo& info, size_t i, const char* op) {
  need(info, i, op, "integer array");
  if (!info[i].IsArray()) fail(op, __FILE__, __LINE__, "argument %zu must be an array of integers", i);
  Napi::Array a = info[i].As<Napi::Array>();
  std::vector<int64_t> out(a.Length());
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value v = a.Get(k);
    if (!v.IsNumber()) fail(op, __FILE__, __LINE__, "argument %zu[%u] must be an integer", i, k);
    out[k] = (int64_t)v.As<Napi::Number>().DoubleValue();
  }
  return out;
}

std::string arg_str(const Napi::CallbackInfo& info, size_t i, const char* op) {
  need(info, i, op, "string");
  if (!info[i].IsString()) fail(op, __FILE__, __LINE__, "argument %zu must be a string", i);
  return info[i].As<Napi::String>().Utf8Value();
}

}  // namespace dalle
