// The N-API entry point: memory (caching allocator), threads, CPU facts, and every kernel registered with DALLE_EXPORT.
// Each export runs behind a guard that turns C++ exceptions into JavaScript errors (code DALLE_NATIVE, with the op).
#include <napi.h>

#include <cstring>
#include <new>

#include <unistd.h>

#if defined(__linux__) || defined(__APPLE__)
#include <sys/resource.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "allocator.h"
#include "cpu_features.h"
#include "napi_util.h"
#include "threadpool.h"

namespace dalle {
namespace {

Napi::Error js_error(Napi::Env env, const std::string& message, const std::string& op) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, "DALLE_NATIVE"));
  err.Set("op", Napi::String::New(env, op));
  return err;
}

Napi::Value guarded(const Napi::CallbackInfo& info) {
  auto fn = reinterpret_cast<NativeFn>(info.Data());
  try {
    return fn(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const KernelError& e) {
    throw js_error(info.Env(), e.what(), e.op);
  } catch (const std::bad_alloc&) {
    throw js_error(info.Env(), "native: out of memory (the allocator could not get memory from the OS)", "alloc");
  } catch (const std::exception& e) {
    throw js_error(info.Env(), std::string("native: ") + e.what(), "unknown");
  }
}

// alloc(bytes) -> address. Uninitialized memory from the caching allocator.
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  int64_t bytes = arg_i64(info, 0, "alloc");
  DALLE_CHECK(bytes >= 0 && bytes < (int64_t(1) << 46), "alloc", "cannot allocate %lld bytes", (long long)bytes);
  // New blocks are touched page by page (allocator.cc), so a request beyond physical memory must fail here, as an
  // error, rather than let the OS kill the process half-way through touching it.
  static const double physical = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
  DALLE_CHECK(physical <= 0 || (double)bytes <= physical, "alloc",
              "out of memory: a tensor of %.1f GiB is larger than this machine's %.1f GiB of memory (use a smaller batch "
              "or model)", bytes / 1073741824.0, physical / 1073741824.0);
  void* p = cache_alloc((size_t)bytes);
  return Napi::Number::New(info.Env(), (double)reinterpret_cast<uintptr_t>(p));
}

// free(address, bytes): returns the block to the cache.
Napi::Value Free(const Napi::CallbackInfo& info) {
  void* p = arg_ptr(info, 0, "free");
  int64_t bytes = arg_i64(info, 1, "free");
  cache_free(p, (size_t)bytes);
  return info.Env().Undefined();
}

Napi::Value SizeClass(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)size_class((size_t)arg_i64(info, 0, "sizeClass")));
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  AllocStats s = alloc_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("bytesInUse", (double)s.bytes_in_use);
  o.Set("bytesCached", (double)s.bytes_cached);
  o.Set("peakBytesInUse", (double)s.peak_bytes_in_use);
  o.Set("allocs", (double)s.allocs);
  o.Set("cacheHits", (double)s.cache_hits);
  o.Set("osAllocs", (double)s.os_allocs);
  return o;
}

Napi::Value Trim(const Napi::CallbackInfo& info) {
  cache_trim();
  return info.Env().Undefined();
}

Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  reset_peak();
  return info.Env().Undefined();
}

// Minor page faults of this process so far (getrusage): the benchmark counts them per training step.
Napi::Value MinorFaults(const Napi::CallbackInfo& info) {
#if defined(__linux__) || defined(__APPLE__)
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return Napi::Number::New(info.Env(), (double)ru.ru_minflt);
#else
  return Napi::Number::New(info.Env(), -1);
#endif
}

// copyIn(address, typedArrayOrBuffer): host data into native memory.
Napi::Value CopyIn(const Napi::CallbackInfo& info) {
  void* dst = arg_ptr(info, 0, "copyIn");
  DALLE_CHECK(info.Length() > 1 && info[1].IsTypedArray(), "copyIn", "argument 1 must be a TypedArray");
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  size_t bytes = ta.ByteLength();
  const uint8_t* src = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  if (bytes) memcpy(dst, src, bytes);
  return info.Env().Undefined();
}

// copyOut(address, typedArray): native memory into host data (the typed array's length decides how much).
Napi::Value CopyOut(const Napi::CallbackInfo& info) {
  const void* src = arg_ptr(info, 0, "copyOut");
  DALLE_CHECK(info.Length() > 1 && info[1].IsTypedArray(), "copyOut", "argument 1 must be a TypedArray");
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  uint8_t* dst = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  if (ta.ByteLength()) memcpy(dst, src, ta.ByteLength());
  return info.Env().Undefined();
}

// memcpy(dst, src, bytes) between native blocks.
Napi::Value Memcpy(const Napi::CallbackInfo& info) {
  void* dst = arg_ptr(info, 0, "memcpy");
  const void* src = arg_ptr(info, 1, "memcpy");
  int64_t bytes = arg_i64(info, 2, "memcpy");
  DALLE_CHECK(bytes >= 0, "memcpy", "negative size %lld", (long long)bytes);
  if (bytes) memmove(dst, src, (size_t)bytes);
  return info.Env().Undefined();
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  set_num_threads((int)arg_i64(info, 0, "setThreads"));
  return Napi::Number::New(info.Env(), num_threads());
}

Napi::Value NumThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), num_threads()); }

Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  const CpuFeatures& f = cpu_features();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("avx2", f.avx2_fma);
  o.Set("avx512", f.avx512);
  o.Set("avx512bf16", f.avx512_bf16);
  o.Set("isa", isa_name(active_isa()));
  return o;
}

// setIsa("portable" | "avx2" | "avx512"): caps the kernels' ISA (tests compare every path against the reference).
Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  std::string s = arg_str(info, 0, "setIsa");
  DALLE_CHECK(s == "portable" || s == "avx2" || s == "avx512", "setIsa", "unknown ISA '%s'", s.c_str());
  set_isa_cap(s == "portable" ? Isa::Portable : s == "avx2" ? Isa::Avx2 : Isa::Avx512);
  return Napi::String::New(info.Env(), isa_name(active_isa()));
}

// A deliberate failing check, so tests can see how native errors reach JavaScript.
Napi::Value SelfTestError(const Napi::CallbackInfo& info) {
  int64_t dims[2] = {arg_i64(info, 0, "selfTestError"), 3};
  DALLE_CHECK(false, "selfTestError", "shape %s is not accepted", shape_str(dims, 2).c_str());
  return info.Env().Undefined();
}

// A failing check inside a parallel region, on the thread that runs the last chunk (a worker when there are several).
Napi::Value SelfTestParallelError(const Napi::CallbackInfo& info) {
  int64_t n = arg_i64(info, 0, "selfTestParallelError");
  parallel_for(n, 1, [&](int64_t b, int64_t e) {
    DALLE_CHECK(e < n, "selfTestParallelError", "chunk [%lld, %lld) failed on purpose", (long long)b, (long long)e);
  });
  return info.Env().Undefined();
}

DALLE_EXPORT("alloc", Alloc);
DALLE_EXPORT("free", Free);
DALLE_EXPORT("sizeClass", SizeClass);
DALLE_EXPORT("allocStats", Stats);
DALLE_EXPORT("trim", Trim);
DALLE_EXPORT("resetPeak", ResetPeak);
DALLE_EXPORT("minorFaults", MinorFaults);
DALLE_EXPORT("copyIn", CopyIn);
DALLE_EXPORT("copyOut", CopyOut);
DALLE_EXPORT("memcpy", Memcpy);
DALLE_EXPORT("setThreads", SetThreads);
DALLE_EXPORT("numThreads", NumThreads);
DALLE_EXPORT("cpuInfo", CpuInfo);
DALLE_EXPORT("setIsa", SetIsa);
DALLE_EXPORT("selfTestError", SelfTestError);
DALLE_EXPORT("selfTestParallelError", SelfTestParallelError);

}  // namespace
}  // namespace dalle

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  using namespace dalle;
#if defined(__GLIBC__)
  // glibc gives the top of its heap back to the OS whenever 128 KiB are free there, and the next step faults the pages
  // in again (13-20 us each here). Keeping up to 256 MiB cut the faults of a transformer training step from ~60 to
  // ~17 (bench/page-faults.ts); tensor memory itself comes from our caching allocator, not malloc.
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  for (const ExportEntry& e : export_registry()) {
    exports.Set(e.name, Napi::Function::New(env, guarded, e.name, reinterpret_cast<void*>(e.fn)));
  }
  return exports;
}

NODE_API_MODULE(dalle_native, InitAddon)
