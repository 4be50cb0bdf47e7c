// Helpers for the N-API layer: argument parsing with clear errors, and the export registry that lets each kernel file
// register its JavaScript entry points without editing a central list.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "error.h"

namespace dalle {

using NativeFn = Napi::Value (*)(const Napi::CallbackInfo&);

struct ExportRegistrar {
  ExportRegistrar(const char* name, NativeFn fn);
};
struct ExportEntry {
  const char* name;
  NativeFn fn;
};
std::vector<ExportEntry>& export_registry();

// Arguments. Tensor data crosses as a plain number: the address of the first element (storage pointer + byte offset),
// so a kernel call costs no typed-array unwrapping. JavaScript owns the lifetime (see src/core/tensor/storage.ts).
void* arg_ptr(const Napi::CallbackInfo& info, size_t i, const char* op);
int64_t arg_i64(const Napi::CallbackInfo& info, size_t i, const char* op);
double arg_f64(const Napi::CallbackInfo& info, size_t i, const char* op);
bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* op);
std::vector<int64_t> arg_i64_array(const Napi::CallbackInfo& info, size_t i, const char* op);
std::string arg_str(const Napi::CallbackInfo& info, size_t i, const char* op);

template <class T>
inline T* arg_data(const Napi::CallbackInfo& info, size_t i, const char* op) {
  return static_cast<T*>(arg_ptr(info, i, op));
}

}  // namespace dalle

// Registers fn under `name` on the addon's exports. Use at namespace scope in a baseline .cc file.
#define DALLE_EXPORT(name, fn) static ::dalle::ExportRegistrar dalle_export_##fn((name), (fn))
