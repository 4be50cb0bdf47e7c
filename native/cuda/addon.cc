// dalle_cuda.node: the N-API layer of the CUDA backend, a separate addon from dalle_native.node so that the main addon
// never depends on CUDA. src/core/cuda/index.ts loads it lazily; on a machine without a driver or GPU it still loads
// (cudart is linked statically and finds the driver at run time) and info() reports why there is no device.
// Device memory crosses as plain numbers (device addresses), like host memory in the main addon, and comes from a
// caching allocator (device_allocator.h) with the main addon's alloc / free / allocStats / trim / resetPeak, and
// memcpy (device to device). copyIn(address, typedArray) is the main addon's order, copyOut(typedArray, address) is
// not (src/core/backend/cuda.ts swaps it). Every kernel entry point checks its arguments, launches on the default
// stream and throws a JavaScript Error naming the op on failure.
#include <napi.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_ops.h"
#include "device_allocator.h"

namespace dalle {
namespace cuda {

// ---- device workspace (cuda_ops.h) ----

namespace {
std::mutex ws_mutex;
void* ws_ptr = nullptr;
size_t ws_bytes = 0;
}  // namespace

std::string workspace(size_t bytes, void** out) {
  std::lock_guard<std::mutex> lock(ws_mutex);
  if (bytes > ws_bytes) {
    if (ws_ptr) {
      cudaDeviceSynchronize();  // the old buffer may still be in use by queued kernels
      cudaFree(ws_ptr);
      ws_ptr = nullptr;
      ws_bytes = 0;
    }
    const cudaError_t e = cudaMalloc(&ws_ptr, bytes);
    if (e != cudaSuccess) {
      ws_ptr = nullptr;
      return std::string("workspace of ") + std::to_string(bytes) + " bytes: " + cudaGetErrorString(e);
    }
    ws_bytes = bytes;
  }
  *out = ws_ptr;
  return "";
}

std::string flag_slot(unsigned long long** out) {
  static unsigned long long* slot = nullptr;
  std::lock_guard<std::mutex> lock(ws_mutex);
  if (!slot) {
    const cudaError_t e = cudaMalloc((void**)&slot, sizeof(unsigned long long));
    if (e != cudaSuccess) {
      slot = nullptr;
      return std::string("flag slot: ") + cudaGetErrorString(e);
    }
  }
  *out = slot;
  return "";
}

// The NCCL collective backend's functions, the `nccl` property of the exports (nccl_napi.cc).
Napi::Object nccl_exports(Napi::Env env);

namespace {

// ---- arguments ----

[[noreturn]] void throw_error(Napi::Env env, const char* op, const std::string& msg) {
  throw Napi::Error::New(env, std::string("dalle cuda: ") + op + ": " + msg);
}

void check(Napi::Env env, const char* op, const std::string& err) {
  if (!err.empty()) throw Napi::Error::New(env, std::string("dalle cuda: ") + err + " (in " + op + ")");
}

void check_cuda(Napi::Env env, const char* op, cudaError_t e) {
  if (e != cudaSuccess) throw_error(env, op, cudaGetErrorString(e));
}

double num(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i >= info.Length() || !info[i].IsNumber()) throw_error(info.Env(), op, "argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

int64_t i64(const Napi::CallbackInfo& info, size_t i, const char* op) {
  const double v = num(info, i, op);
  if (v != std::floor(v) || std::fabs(v) > 9007199254740992.0) {
    throw_error(info.Env(), op, "argument " + std::to_string(i) + " must be an integer, got " + std::to_string(v));
  }
  return (int64_t)v;
}

bool flag(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i >= info.Length() || !info[i].IsBoolean()) throw_error(info.Env(), op, "argument " + std::to_string(i) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

std::string str(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i >= info.Length() || !info[i].IsString()) throw_error(info.Env(), op, "argument " + std::to_string(i) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

// A device address; null / undefined give nullptr.
void* ptr(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i < info.Length() && (info[i].IsNull() || info[i].IsUndefined())) return nullptr;
  const int64_t v = i64(info, i, op);
  if (v < 0) throw_error(info.Env(), op, "argument " + std::to_string(i) + " is not an address");
  return reinterpret_cast<void*>((uintptr_t)v);
}

template <class T>
T* dptr(const Napi::CallbackInfo& info, size_t i, const char* op) {
  return static_cast<T*>(ptr(info, i, op));
}

void* need(const Napi::CallbackInfo& info, size_t i, const char* op) {
  void* p = ptr(info, i, op);
  if (!p) throw_error(info.Env(), op, "argument " + std::to_string(i) + " is a null address");
  return p;
}

DType dtype(const Napi::CallbackInfo& info, size_t i, const char* op) {
  const std::string s = str(info, i, op);
  if (s == "f32") return kF32;
  if (s == "f16") return kF16;
  if (s == "bf16") return kBF16;
  throw_error(info.Env(), op, "unsupported dtype '" + s + "' (use f32, f16 or bf16)");
}

// An element type of cast: the float types or i32.
DType cast_dtype(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i < info.Length() && info[i].IsString() && info[i].As<Napi::String>().Utf8Value() == "i32") return kI32;
  const std::string s = str(info, i, op);
  if (s == "f32") return kF32;
  if (s == "f16") return kF16;
  if (s == "bf16") return kBF16;
  throw_error(info.Env(), op, "unsupported dtype '" + s + "' (use f32, f16, bf16 or i32)");
}

attn_plan::MaskSpec mask_spec(const Napi::CallbackInfo& info, size_t i, const char* op) {
  const std::string kind = str(info, i, op);
  attn_plan::MaskSpec s{};
  if (kind == "row") s.kind = attn_plan::kRow;
  else if (kind == "column") s.kind = attn_plan::kColumn;
  else if (kind == "conv") s.kind = attn_plan::kConv;
  else throw_error(info.Env(), op, "unknown mask kind '" + kind + "'; use row, column or conv");
  const int64_t tt = i64(info, i + 1, op), w = i64(info, i + 2, op), k = i64(info, i + 3, op);
  if (tt < 0 || tt > (1 << 24) || w < 1 || w > 4096 || k < 0 || k > 4096) {
    throw_error(info.Env(), op, "bad mask spec (textLen " + std::to_string(tt) + ", gridSide " + std::to_string(w) +
                                    ", convKernel " + std::to_string(k) + ")");
  }
  s.text_len = (int32_t)tt;
  s.grid = (int32_t)w;
  s.conv_kernel = (int32_t)k;
  const std::string err = attn_plan::check_spec(s);
  if (!err.empty()) throw_error(info.Env(), op, err);
  return s;
}

void non_negative(const Napi::CallbackInfo& info, const char* op, std::initializer_list<int64_t> sizes) {
  for (int64_t v : sizes) {
    if (v < 0) throw_error(info.Env(), op, "sizes must be >= 0");
  }
}

std::vector<int64_t> i64_array(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i >= info.Length() || !info[i].IsArray()) throw_error(info.Env(), op, "argument " + std::to_string(i) + " must be an array");
  Napi::Array a = info[i].As<Napi::Array>();
  std::vector<int64_t> v(a.Length());
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value e = a.Get(k);
    const double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d == std::floor(d)) || std::fabs(d) > 9007199254740992.0) {
      throw_error(info.Env(), op, "argument " + std::to_string(i) + " must be an array of integers");
    }
    v[k] = (int64_t)d;
  }
  return v;
}

// A shape of rank <= 8 with no negative extent, and strides of the same rank.
void check_shape(const Napi::CallbackInfo& info, const char* op, const std::vector<int64_t>& shape,
                 std::initializer_list<const std::vector<int64_t>*> strides) {
  if (shape.size() > (size_t)kMaxRank) throw_error(info.Env(), op, "rank " + std::to_string(shape.size()) + " is over the limit of 8");
  for (int64_t d : shape) {
    if (d < 0) throw_error(info.Env(), op, "negative dimension in the shape");
  }
  for (const auto* st : strides) {
    if (st->size() != shape.size()) throw_error(info.Env(), op, "the strides' rank differs from the shape's");
  }
}

// ---- device and memory ----

// info() -> { runtimeVersion, driverVersion, deviceCount, devices: [...], error }: never throws.
Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  int rt = 0, drv = 0, n = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  const cudaError_t e = cudaGetDeviceCount(&n);
  o.Set("runtimeVersion", rt);
  o.Set("driverVersion", drv);
  Napi::Array devs = Napi::Array::New(env);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    o.Set("deviceCount", 0);
    o.Set("error", std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e));
  } else {
    o.Set("deviceCount", n);
    for (int i = 0; i < n; i++) {
      cudaDeviceProp p;
      if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
      Napi::Object d = Napi::Object::New(env);
      d.Set("index", i);
      d.Set("name", std::string(p.name));
      d.Set("computeCapability", std::to_string(p.major) + "." + std::to_string(p.minor));
      d.Set("memoryBytes", (double)p.totalGlobalMem);
      d.Set("multiprocessors", p.multiProcessorCount);
      devs.Set((uint32_t)devs.Length(), d);
    }
  }
  o.Set("devices", devs);
  return o;
}

Napi::Value SetDevice(const Napi::CallbackInfo& info) {
  const char* op = "setDevice";
  check_cuda(info.Env(), op, cudaSetDevice((int)i64(info, 0, op)));
  return info.Env().Undefined();
}

// The caching allocator of device memory (device_allocator.h) over the driver. A refusal is cudaErrorMemoryAllocation
// (cleared, so that the next launch check does not report it): the allocator trims and retries. Any other error (no
// device, no driver) is thrown as it is.
CachingAllocator& device_allocator() {
  static CachingAllocator* a = new CachingAllocator(
      [](size_t bytes) -> void* {
        void* p = nullptr;
        const cudaError_t e = cudaMalloc(&p, bytes);
        if (e == cudaSuccess) return p;
        cudaGetLastError();
        if (e == cudaErrorMemoryAllocation) return nullptr;
        throw std::runtime_error(std::string("cudaMalloc of ") + std::to_string(bytes) + " bytes: " +
                                 cudaGetErrorString(e));
      },
      [](void* p) { cudaFree(p); });  // never destroyed: blocks stay valid until the process exits
  return *a;
}

// alloc(bytes) -> device address (malloc is the same): uninitialized memory from the caching allocator.
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  const char* op = "alloc";
  const int64_t bytes = i64(info, 0, op);
  if (bytes < 0 || bytes >= (int64_t(1) << 46)) {
    throw_error(info.Env(), op, "cannot allocate " + std::to_string(bytes) + " bytes");
  }
  try {
    void* p = device_allocator().alloc((size_t)bytes);
    return Napi::Number::New(info.Env(), (double)(uintptr_t)p);
  } catch (const std::exception& e) {
    throw_error(info.Env(), op, e.what());
  }
}

// free(address, bytes?): back to the cache; bytes (the size given to alloc) is checked when given.
Napi::Value Free(const Napi::CallbackInfo& info) {
  const char* op = "free";
  void* p = ptr(info, 0, op);
  const int64_t bytes = info.Length() > 1 && !info[1].IsUndefined() ? i64(info, 1, op) : 0;
  if (bytes < 0) throw_error(info.Env(), op, "bytes must be >= 0");
  try {
    device_allocator().free(p, (size_t)bytes);
  } catch (const std::exception& e) {
    throw_error(info.Env(), op, e.what());
  }
  return info.Env().Undefined();
}

// allocStats() -> the main addon's AllocStats plus the driver's calls: { bytesInUse, bytesCached, peakBytesInUse,
// allocs, cacheHits, driverAllocs, driverFrees }.
Napi::Value AllocStatsJs(const Napi::CallbackInfo& info) {
  const DeviceAllocStats s = device_allocator().stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("bytesInUse", (double)s.bytes_in_use);
  o.Set("bytesCached", (double)s.bytes_cached);
  o.Set("peakBytesInUse", (double)s.peak_bytes_in_use);
  o.Set("allocs", (double)s.allocs);
  o.Set("cacheHits", (double)s.cache_hits);
  o.Set("driverAllocs", (double)s.driver_allocs);
  o.Set("driverFrees", (double)s.driver_frees);
  return o;
}

// trim(): every cached block back to the driver.
Napi::Value Trim(const Napi::CallbackInfo& info) {
  device_allocator().trim();
  return info.Env().Undefined();
}

Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  device_allocator().reset_peak();
  return info.Env().Undefined();
}

// sizeClass(bytes): the bytes a request of `bytes` takes in the device allocator (CachingAllocator::size_class, pure
// logic: no device needed), as the main addon's sizeClass for host memory. dalle config's GPU estimate counts in it.
Napi::Value SizeClass(const Napi::CallbackInfo& info) {
  const char* op = "sizeClass";
  const int64_t bytes = i64(info, 0, op);
  if (bytes < 0) throw_error(info.Env(), op, "bytes must be >= 0");
  return Napi::Number::New(info.Env(), (double)CachingAllocator::size_class((size_t)bytes));
}

// copyIn(deviceAddress, typedArray): host -> device, the whole view.
Napi::Value CopyIn(const Napi::CallbackInfo& info) {
  const char* op = "copyIn";
  void* dst = need(info, 0, op);
  if (info.Length() < 2 || !info[1].IsTypedArray()) throw_error(info.Env(), op, "argument 1 must be a typed array");
  Napi::TypedArray a = info[1].As<Napi::TypedArray>();
  const uint8_t* src = static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  check_cuda(info.Env(), op, cudaMemcpy(dst, src, a.ByteLength(), cudaMemcpyHostToDevice));
  return info.Env().Undefined();
}

// copyOut(typedArray, deviceAddress): device -> host, the whole view (synchronizes).
Napi::Value CopyOut(const Napi::CallbackInfo& info) {
  const char* op = "copyOut";
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw_error(info.Env(), op, "argument 0 must be a typed array");
  Napi::TypedArray a = info[0].As<Napi::TypedArray>();
  void* src = need(info, 1, op);
  uint8_t* dst = static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  check_cuda(info.Env(), op, cudaMemcpy(dst, src, a.ByteLength(), cudaMemcpyDeviceToHost));
  return info.Env().Undefined();
}

// memcpy(dst, src, bytes): device -> same device, queued on the addon's (default) stream like every kernel, so it is
// ordered with them and does not block the host.
Napi::Value Memcpy(const Napi::CallbackInfo& info) {
  const char* op = "memcpy";
  const int64_t bytes = i64(info, 2, op);
  if (bytes < 0) throw_error(info.Env(), op, "bytes must be >= 0");
  void* dst = need(info, 0, op);
  const void* src = need(info, 1, op);
  if (bytes > 0) {
    check_cuda(info.Env(), op, cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, 0));
  }
  return info.Env().Undefined();
}

// memset(address, byte, bytes)
Napi::Value Memset(const Napi::CallbackInfo& info) {
  const char* op = "memset";
  check_cuda(info.Env(), op, cudaMemset(need(info, 0, op), (int)i64(info, 1, op), (size_t)i64(info, 2, op)));
  return info.Env().Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  check_cuda(info.Env(), "synchronize", cudaDeviceSynchronize());
  return info.Env().Undefined();
}

// ---- ops ----

// gemm(dtype, transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch, tf32)
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  const char* op = "gemm";
  const DType dt = dtype(info, 0, op);
  const int64_t M = i64(info, 3, op), N = i64(info, 4, op), K = i64(info, 5, op), batch = i64(info, 17, op);
  non_negative(info, op, {M, N, K, batch});
  check(info.Env(), op,
        gemm(dt, flag(info, 1, op), flag(info, 2, op), M, N, K, (float)num(info, 6, op), ptr(info, 7, op),
             i64(info, 8, op), i64(info, 9, op), ptr(info, 10, op), i64(info, 11, op), i64(info, 12, op),
             (float)num(info, 13, op), ptr(info, 14, op), i64(info, 15, op), i64(info, 16, op), batch,
             flag(info, 18, op)));
  return info.Env().Undefined();
}

// blockSparseAttentionForward(dtype, kind, textLen, gridSide, convKernel, q, k, v, o, lse, B, H, D, Dv, scale)
Napi::Value BlockSparseAttentionForward(const Napi::CallbackInfo& info) {
  const char* op = "blockSparseAttentionForward";
  const DType dt = dtype(info, 0, op);
  const attn_plan::MaskSpec s = mask_spec(info, 1, op);
  check(info.Env(), op,
        attention_forward(dt, s, need(info, 5, op), need(info, 6, op), need(info, 7, op), need(info, 8, op),
                          (float*)need(info, 9, op),
                          i64(info, 10, op), i64(info, 11, op), i64(info, 12, op), i64(info, 13, op),
                          (float)num(info, 14, op)));
  return info.Env().Undefined();
}

// blockSparseAttentionBackward(dtype, kind, textLen, gridSide, convKernel, q, k, v, o, dO, lse, dq, dk, dv, delta, B, H, D, Dv,
// scale): delta is (B, H, T) f32 scratch.
Napi::Value BlockSparseAttentionBackward(const Napi::CallbackInfo& info) {
  const char* op = "blockSparseAttentionBackward";
  const DType dt = dtype(info, 0, op);
  const attn_plan::MaskSpec s = mask_spec(info, 1, op);
  check(info.Env(), op,
        attention_backward(dt, s, need(info, 5, op), need(info, 6, op), need(info, 7, op), need(info, 8, op),
                           need(info, 9, op), (const float*)need(info, 10, op), need(info, 11, op), need(info, 12, op),
                           need(info, 13, op), (float*)need(info, 14, op), i64(info, 15, op), i64(info, 16, op),
                           i64(info, 17, op), i64(info, 18, op), (float)num(info, 19, op)));
  return info.Env().Undefined();
}

// attentionDecode(dtype, q, qStrides, k, kStrides, v, vStrides, out, lse, kind, textLen, gridSide, convKernel, B, H,
// position, D, Dv, scale): the KV-cache decode step (attention_decode_kernels.cuh): q (B, H, 1, D) and the caches
// k (B', H, Tc, D), v (B', H, Tc, Dv) by element strides [batch, head, time] (q's time stride unused), out (B, H, 1, Dv)
// contiguous, lse (B, H) f32; the query is sequence position `position` and sees the cached positions its mask row
// allows (all <= position, which the cache must hold).
Napi::Value AttentionDecode(const Napi::CallbackInfo& info) {
  const char* op = "attentionDecode";
  const DType dt = dtype(info, 0, op);
  int64_t strides[3][3];
  const size_t at[3] = {2, 4, 6};
  for (int n = 0; n < 3; n++) {
    const std::vector<int64_t> st = i64_array(info, at[n], op);
    if (st.size() != 3) throw_error(info.Env(), op, "argument " + std::to_string(at[n]) + " must hold 3 strides (batch, head, time)");
    for (int j = 0; j < 3; j++) strides[n][j] = st[j];
  }
  const attn_plan::MaskSpec s = mask_spec(info, 9, op);
  const int64_t B = i64(info, 13, op), H = i64(info, 14, op);
  non_negative(info, op, {B, H});
  check(info.Env(), op,
        attention_decode(dt, s, need(info, 1, op), strides[0], need(info, 3, op), strides[1], need(info, 5, op),
                         strides[2], need(info, 7, op), (float*)need(info, 8, op), B, H, i64(info, 15, op),
                         i64(info, 16, op), i64(info, 17, op), (float)num(info, 18, op)));
  return info.Env().Undefined();
}

// ---- the engine's dense attention (native/cpu/attention.cc, the same signatures and checks) ----

// Strides of one operand: [batch, head, time] in elements, the row stride at least the row width.
void dense_strides(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t width,
                   int64_t out[3]) {
  const std::vector<int64_t> s = i64_array(info, i, op);
  if (s.size() != 3) throw_error(info.Env(), op, std::string(name) + " needs 3 strides (batch, head, time), got " + std::to_string(s.size()));
  if (s[2] < width) {
    throw_error(info.Env(), op, std::string(name) + ": row stride " + std::to_string(s[2]) + " is below the row width " +
                                    std::to_string(width));
  }
  for (int j = 0; j < 3; j++) out[j] = s[j];
}

// B, H, Tq, Tk, D, Dv, scale, causal from index i (the binding reads the mask).
DenseAttnGeometry dense_geometry(const Napi::CallbackInfo& info, size_t i, const char* op) {
  DenseAttnGeometry g{};
  g.B = i64(info, i, op), g.H = i64(info, i + 1, op), g.Tq = i64(info, i + 2, op), g.Tk = i64(info, i + 3, op);
  g.D = i64(info, i + 4, op), g.Dv = i64(info, i + 5, op);
  g.scale = (float)num(info, i + 6, op);
  g.causal = flag(info, i + 7, op);
  if (g.B < 0 || g.H < 0 || g.Tq < 0 || g.Tk < 0 || g.D < 1 || g.Dv < 1) {
    throw_error(info.Env(), op, "bad sizes B=" + std::to_string(g.B) + " H=" + std::to_string(g.H) + " Tq=" +
                                    std::to_string(g.Tq) + " Tk=" + std::to_string(g.Tk) + " D=" + std::to_string(g.D) +
                                    " Dv=" + std::to_string(g.Dv));
  }
  if (g.Tq >= (int64_t(1) << 31) || g.Tk >= (int64_t(1) << 31)) throw_error(info.Env(), op, "sequence too long");
  return g;
}

// attentionForward(q, qStrides, k, kStrides, v, vStrides, mask|null, out, lse, B, H, Tq, Tk, D, Dv, scale, causal)
Napi::Value DenseAttentionForward(const Napi::CallbackInfo& info) {
  const char* op = "attention";
  DenseAttnGeometry g = dense_geometry(info, 9, op);
  g.mask = dptr<const int32_t>(info, 6, op);
  dense_strides(info, 1, op, "q", g.D, g.qs);
  dense_strides(info, 3, op, "k", g.D, g.ks);
  dense_strides(info, 5, op, "v", g.Dv, g.vs);
  const float *q = dptr<const float>(info, 0, op), *k = dptr<const float>(info, 2, op), *v = dptr<const float>(info, 4, op);
  float *out = dptr<float>(info, 7, op), *lse = dptr<float>(info, 8, op);
  if (g.B * g.H * g.Tq == 0) return info.Env().Undefined();
  if (!q || !out || !lse || (g.Tk > 0 && (!k || !v))) throw_error(info.Env(), op, "null address");
  check(info.Env(), op, dense_attention_forward(g, q, k, v, out, lse));
  return info.Env().Undefined();
}

// attentionBackward(q, qStrides, k, kStrides, v, vStrides, mask|null, dO, dOStrides, lse, dq|null, dk|null, dv|null,
//                   B, H, Tq, Tk, D, Dv, scale, causal)
Napi::Value DenseAttentionBackward(const Napi::CallbackInfo& info) {
  const char* op = "attention backward";
  DenseAttnGeometry g = dense_geometry(info, 13, op);
  g.mask = dptr<const int32_t>(info, 6, op);
  dense_strides(info, 1, op, "q", g.D, g.qs);
  dense_strides(info, 3, op, "k", g.D, g.ks);
  dense_strides(info, 5, op, "v", g.Dv, g.vs);
  dense_strides(info, 8, op, "dOut", g.Dv, g.os);
  const float *q = dptr<const float>(info, 0, op), *k = dptr<const float>(info, 2, op), *v = dptr<const float>(info, 4, op);
  const float *dout = dptr<const float>(info, 7, op), *lse = dptr<const float>(info, 9, op);
  float *dq = dptr<float>(info, 10, op), *dk = dptr<float>(info, 11, op), *dv = dptr<float>(info, 12, op);
  if (g.Tq > 0 && g.Tk > 0 && g.B * g.H > 0 && (!q || !k || !v || !dout || !lse)) throw_error(info.Env(), op, "null address");
  check(info.Env(), op, dense_attention_backward(g, q, k, v, dout, lse, dq, dk, dv));
  return info.Env().Undefined();
}

// ---- the engine's vector kernels (native/cpu/blas1.cc) ----

// axpy(n, alpha, x, y): y += alpha * x
Napi::Value Axpy(const Napi::CallbackInfo& info) {
  const char* op = "axpy";
  const int64_t n = i64(info, 0, op);
  non_negative(info, op, {n});
  const float* x = dptr<const float>(info, 2, op);
  float* y = dptr<float>(info, 3, op);
  if (n > 0 && (!x || !y)) throw_error(info.Env(), op, "null address");
  check(info.Env(), op, axpy(n, (float)num(info, 1, op), x, y));
  return info.Env().Undefined();
}

// scale(n, alpha, x): x *= alpha
Napi::Value Scale(const Napi::CallbackInfo& info) {
  const char* op = "scale";
  const int64_t n = i64(info, 0, op);
  non_negative(info, op, {n});
  float* x = dptr<float>(info, 2, op);
  if (n > 0 && !x) throw_error(info.Env(), op, "null address");
  check(info.Env(), op, scale(n, (float)num(info, 1, op), x));
  return info.Env().Undefined();
}

// sumSquares(n, x) -> the float64 sum of x^2 as a host number: synchronizes (waits for the queued kernels and copies
// the partial sums back). A loop over many tensors should call sumSquaresBatch once instead.
Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  const char* op = "sumSquares";
  const int64_t n = i64(info, 0, op);
  non_negative(info, op, {n});
  const float* x = dptr<const float>(info, 1, op);
  if (n > 0 && !x) throw_error(info.Env(), op, "null address");
  double sum = 0;
  check(info.Env(), op, sum_squares({x}, {n}, &sum));
  return Napi::Number::New(info.Env(), sum);
}

// sumSquaresBatch(addresses, sizes) -> sum over t of sumSquares(sizes[t], addresses[t]), added in list order: one
// launch and one copy back for every tensor (gradient clipping's global norm). Synchronizes once.
Napi::Value SumSquaresBatch(const Napi::CallbackInfo& info) {
  const char* op = "sumSquaresBatch";
  const std::vector<int64_t> addresses = i64_array(info, 0, op), sizes = i64_array(info, 1, op);
  if (addresses.size() != sizes.size()) throw_error(info.Env(), op, "as many sizes as addresses are needed");
  std::vector<const float*> ptrs(addresses.size());
  for (size_t t = 0; t < addresses.size(); t++) {
    if (sizes[t] < 0) throw_error(info.Env(), op, "sizes must be >= 0");
    if (addresses[t] < 0 || (sizes[t] > 0 && addresses[t] == 0)) throw_error(info.Env(), op, "null or bad address");
    ptrs[t] = reinterpret_cast<const float*>((uintptr_t)addresses[t]);
  }
  std::vector<double> sums(ptrs.size());
  check(info.Env(), op, sum_squares(ptrs, sizes, sums.data()));
  double total = 0;
  for (double s : sums) total += s;
  return Napi::Number::New(info.Env(), total);
}

// cast(dst, dstDtype, src, srcDtype, count): dtypes f32, f16, bf16, i32 (the CPU addon's cast).
Napi::Value Cast(const Napi::CallbackInfo& info) {
  const char* op = "cast";
  const int64_t n = i64(info, 4, op);
  non_negative(info, op, {n});
  check(info.Env(), op,
        cast(ptr(info, 0, op), cast_dtype(info, 1, op), ptr(info, 2, op), cast_dtype(info, 3, op), n));
  return info.Env().Undefined();
}

// geluForward(dtype, x, y, n)
Napi::Value GeluForward(const Napi::CallbackInfo& info) {
  const char* op = "geluForward";
  const int64_t n = i64(info, 3, op);
  non_negative(info, op, {n});
  check(info.Env(), op, gelu_forward(dtype(info, 0, op), ptr(info, 1, op), ptr(info, 2, op), n));
  return info.Env().Undefined();
}

// geluBackward(dtype, x, g, dx, n)
Napi::Value GeluBackward(const Napi::CallbackInfo& info) {
  const char* op = "geluBackward";
  const int64_t n = i64(info, 4, op);
  non_negative(info, op, {n});
  check(info.Env(), op, gelu_backward(dtype(info, 0, op), ptr(info, 1, op), ptr(info, 2, op), ptr(info, 3, op), n));
  return info.Env().Undefined();
}

// adamw(n, param, grad, m, v, lr, beta1, beta2, eps, weightDecay, gradScale, step): as the CPU addon's adamw.
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  const char* op = "adamw";
  const int64_t n = i64(info, 0, op), step = i64(info, 11, op);
  non_negative(info, op, {n});
  if (step < 1) throw_error(info.Env(), op, "step must be >= 1 (bias correction), got " + std::to_string(step));
  const double b1 = num(info, 6, op), b2 = num(info, 7, op);
  const float bc1 = (float)(1.0 / (1.0 - std::pow(b1, (double)step)));
  const float bc2 = (float)(1.0 / (1.0 - std::pow(b2, (double)step)));
  check(info.Env(), op,
        adamw(n, dptr<float>(info, 1, op), dptr<const float>(info, 2, op), dptr<float>(info, 3, op),
              dptr<float>(info, 4, op), (float)num(info, 5, op), (float)b1, (float)b2, (float)num(info, 8, op),
              (float)num(info, 9, op), (float)num(info, 10, op), bc1, bc2));
  return info.Env().Undefined();
}

// scaleFilter(dtype, n, x, y, alpha) -> count: y = alpha * x with non-finite products set to 0 (x == y allowed);
// returns how many were non-finite, as the CPU addon's scaleFilter(n, x, y, alpha). Synchronizes (the count decides
// whether the update is skipped).
Napi::Value ScaleFilter(const Napi::CallbackInfo& info) {
  const char* op = "scaleFilter";
  const DType dt = dtype(info, 0, op);
  const int64_t n = i64(info, 1, op);
  non_negative(info, op, {n});
  static unsigned long long* count_dev = nullptr;
  if (!count_dev) check_cuda(info.Env(), op, cudaMalloc((void**)&count_dev, sizeof(unsigned long long)));
  check_cuda(info.Env(), op, cudaMemset(count_dev, 0, sizeof(unsigned long long)));
  check(info.Env(), op, scale_filter(dt, ptr(info, 2, op), ptr(info, 3, op), n, (float)num(info, 4, op), count_dev));
  unsigned long long count = 0;
  check_cuda(info.Env(), op, cudaMemcpy(&count, count_dev, sizeof(count), cudaMemcpyDeviceToHost));
  return Napi::Number::New(info.Env(), (double)count);
}

// layerNormForward(dtype, x, gain, bias, y, mean, rstd, R, C, eps)
Napi::Value LayerNormForward(const Napi::CallbackInfo& info) {
  const char* op = "layerNormForward";
  const int64_t R = i64(info, 7, op), C = i64(info, 8, op);
  if (R < 0 || C < 1) throw_error(info.Env(), op, "bad shape");
  check(info.Env(), op,
        layer_norm_forward(dtype(info, 0, op), ptr(info, 1, op), dptr<const float>(info, 2, op),
                           dptr<const float>(info, 3, op), ptr(info, 4, op), dptr<float>(info, 5, op),
                           dptr<float>(info, 6, op), R, C, (float)num(info, 9, op)));
  return info.Env().Undefined();
}

// layerNormBackward(dtype, x, gain, mean, rstd, g, dx|null, dgain|null, dbias|null, R, C)
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  const char* op = "layerNormBackward";
  const int64_t R = i64(info, 9, op), C = i64(info, 10, op);
  if (R < 0 || C < 1) throw_error(info.Env(), op, "bad shape");
  check(info.Env(), op,
        layer_norm_backward(dtype(info, 0, op), ptr(info, 1, op), dptr<const float>(info, 2, op),
                            dptr<const float>(info, 3, op), dptr<const float>(info, 4, op), ptr(info, 5, op),
                            ptr(info, 6, op), dptr<float>(info, 7, op), dptr<float>(info, 8, op), R, C));
  return info.Env().Undefined();
}

double* ce_workspace(Napi::Env env, const char* op) {
  static double* ws = nullptr;
  if (!ws) check_cuda(env, op, cudaMalloc((void**)&ws, 4 * sizeof(double)));
  return ws;
}

// crossEntropyForward(logits, N, V, targets, weights|null, hasIgnore, ignoreIndex, mean, out, lse, nll): the CPU
// addon's signature; synchronizes to check the targets.
Napi::Value CrossEntropyForward(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropyForward";
  const int64_t N = i64(info, 1, op), V = i64(info, 2, op);
  non_negative(info, op, {N, V});
  check(info.Env(), op,
        cross_entropy_forward(dptr<const float>(info, 0, op), N, V, dptr<const int32_t>(info, 3, op),
                              dptr<const float>(info, 4, op), flag(info, 5, op), (int32_t)i64(info, 6, op),
                              flag(info, 7, op), (float*)need(info, 8, op), dptr<float>(info, 9, op),
                              dptr<float>(info, 10, op), ce_workspace(info.Env(), op)));
  return info.Env().Undefined();
}

// crossEntropyBackward(logits, N, V, targets, weights|null, hasIgnore, ignoreIndex, mean, lse, nll, g, dlogits|null,
// dweights|null)
Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropyBackward";
  const int64_t N = i64(info, 1, op), V = i64(info, 2, op);
  non_negative(info, op, {N, V});
  check(info.Env(), op,
        cross_entropy_backward(dptr<const float>(info, 0, op), N, V, dptr<const int32_t>(info, 3, op),
                               dptr<const float>(info, 4, op), flag(info, 5, op), (int32_t)i64(info, 6, op),
                               flag(info, 7, op), dptr<const float>(info, 8, op), dptr<const float>(info, 9, op),
                               (const float*)need(info, 10, op), dptr<float>(info, 11, op), dptr<float>(info, 12, op),
                               ce_workspace(info.Env(), op)));
  return info.Env().Undefined();
}

struct ConvDims {
  int64_t B, C, Co, H, W, k, T, HW;
};

ConvDims conv_dims(const Napi::CallbackInfo& info, size_t i, const char* op) {
  ConvDims d{i64(info, i, op), i64(info, i + 1, op), i64(info, i + 2, op), i64(info, i + 3, op), i64(info, i + 4, op),
             i64(info, i + 5, op), 0, 0};
  if (d.B < 0 || d.C < 1 || d.Co < 1 || d.H < 1 || d.W < 1 || d.k < 1 || d.k % 2 == 0) {
    throw_error(info.Env(), op, "bad shape: need B >= 0, Cin, Cout, H, W >= 1 and an odd kernel");
  }
  d.T = d.C * d.k * d.k;
  d.HW = d.H * d.W;
  return d;
}

// conv2dForward(x, w, bias|null, y, B, Cin, Cout, H, W, k): im2col + one batched GEMM (w broadcast over images).
Napi::Value Conv2dForward(const Napi::CallbackInfo& info) {
  const char* op = "conv2dForward";
  const float* x = dptr<const float>(info, 0, op);
  const float* w = dptr<const float>(info, 1, op);
  const float* bias = dptr<const float>(info, 2, op);
  float* y = dptr<float>(info, 3, op);
  const ConvDims d = conv_dims(info, 4, op);
  if (d.B == 0) return info.Env().Undefined();
  void* col = nullptr;
  check(info.Env(), op, workspace((size_t)(d.B * d.T * d.HW) * sizeof(float), &col));
  check(info.Env(), op, im2col(x, (float*)col, d.B, d.C, d.H, d.W, d.k));
  // y[b] (Co, HW) = w (Co, T) @ col[b] (T, HW)
  check(info.Env(), op,
        gemm(kF32, false, false, d.Co, d.HW, d.T, 1.0f, w, d.T, 0, col, d.HW, d.T * d.HW, 0.0f, y, d.HW, d.Co * d.HW,
             d.B, false));
  if (bias) check(info.Env(), op, add_channel_bias(y, bias, d.B, d.Co, d.HW));
  return info.Env().Undefined();
}

// conv2dBackward(x, w, dy, dx|null, dw|null, db|null, B, Cin, Cout, H, W, k)
Napi::Value Conv2dBackward(const Napi::CallbackInfo& info) {
  const char* op = "conv2dBackward";
  const float* x = dptr<const float>(info, 0, op);
  const float* w = dptr<const float>(info, 1, op);
  const float* dy = dptr<const float>(info, 2, op);
  float* dx = dptr<float>(info, 3, op);
  float* dw = dptr<float>(info, 4, op);
  float* db = dptr<float>(info, 5, op);
  const ConvDims d = conv_dims(info, 6, op);
  if (d.B == 0) {
    if (dw) check_cuda(info.Env(), op, cudaMemset(dw, 0, d.Co * d.T * sizeof(float)));
    if (db) check_cuda(info.Env(), op, cudaMemset(db, 0, d.Co * sizeof(float)));
    return info.Env().Undefined();
  }
  void* col = nullptr;
  check(info.Env(), op, workspace((size_t)(d.B * d.T * d.HW) * sizeof(float), &col));
  if (db) check(info.Env(), op, channel_bias_grad(dy, db, d.B, d.Co, d.HW));
  if (dw) {
    // dw (Co, T) = sum_b dy[b] (Co, HW) @ col[b]^T, images in order (beta 1 after the first).
    check(info.Env(), op, im2col(x, (float*)col, d.B, d.C, d.H, d.W, d.k));
    for (int64_t b = 0; b < d.B; b++) {
      check(info.Env(), op,
            gemm(kF32, false, true, d.Co, d.T, d.HW, 1.0f, dy + b * d.Co * d.HW, d.HW, 0, (float*)col + b * d.T * d.HW,
                 d.HW, 0, b == 0 ? 0.0f : 1.0f, dw, d.T, 0, 1, false));
    }
  }
  if (dx) {
    // dcol[b] (T, HW) = w^T (T, Co) @ dy[b] (Co, HW), then the adjoint of im2col (the workspace is reused: stream order).
    check(info.Env(), op,
          gemm(kF32, true, false, d.T, d.HW, d.Co, 1.0f, w, d.T, 0, dy, d.HW, d.Co * d.HW, 0.0f, col, d.HW, d.T * d.HW,
               d.B, false));
    check(info.Env(), op, col2im((const float*)col, dx, d.B, d.C, d.H, d.W, d.k));
  }
  return info.Env().Undefined();
}

// ---- the ops with the CPU addon's names and signatures (device addresses for host ones) ----

unsigned long long* flag_dev(Napi::Env env, const char* op) {
  unsigned long long* f = nullptr;
  check(env, op, flag_slot(&f));
  return f;
}

// fill(dst, count, value, kind): kind "f32" | "i32" | "u16" (value = the raw 16-bit pattern)
Napi::Value Fill(const Napi::CallbackInfo& info) {
  const char* op = "fill";
  void* dst = ptr(info, 0, op);
  const int64_t n = i64(info, 1, op);
  const double value = num(info, 2, op);
  const std::string kind = str(info, 3, op);
  non_negative(info, op, {n});
  uint32_t bits = 0;
  int item = 4;
  if (kind == "f32") {
    const float v = (float)value;
    std::memcpy(&bits, &v, 4);
  } else if (kind == "i32") {
    const int32_t v = (int32_t)value;
    std::memcpy(&bits, &v, 4);
  } else if (kind == "u16") {
    bits = (uint16_t)value;
    item = 2;
  } else {
    throw_error(info.Env(), op, "unknown fill kind '" + kind + "' (f32, i32 or u16)");
  }
  if (n > 0 && !dst) throw_error(info.Env(), op, "null address");
  check(info.Env(), op, fill(dst, n, bits, item));
  return info.Env().Undefined();
}

// stridedCopy(dst, src, itemBytes, shape, dstStrides, srcStrides)
Napi::Value StridedCopy(const Napi::CallbackInfo& info) {
  const char* op = "stridedCopy";
  void* dst = ptr(info, 0, op);
  const void* src = ptr(info, 1, op);
  const int64_t item = i64(info, 2, op);
  const std::vector<int64_t> shape = i64_array(info, 3, op), ds = i64_array(info, 4, op), ss = i64_array(info, 5, op);
  check_shape(info, op, shape, {&ds, &ss});
  if (item != 1 && item != 2 && item != 4 && item != 8) throw_error(info.Env(), op, "item size must be 1, 2, 4 or 8 bytes");
  check(info.Env(), op, strided_copy(dst, src, item, shape, ds, ss));
  return info.Env().Undefined();
}

int op_code(const Napi::CallbackInfo& info, size_t i, const char* op, int count) {
  const int64_t c = i64(info, i, op);
  if (c < 0 || c >= count) throw_error(info.Env(), op, "unknown op code " + std::to_string(c));
  return (int)c;
}

// ewUnary(code, out, x, shape, xStrides, alpha, beta)
Napi::Value EwUnary(const Napi::CallbackInfo& info) {
  const char* op = "ewUnary";
  const int code = op_code(info, 0, op, kUnaryCodes);
  const std::vector<int64_t> shape = i64_array(info, 3, op), xs = i64_array(info, 4, op);
  check_shape(info, op, shape, {&xs});
  check(info.Env(), op,
        ew_unary(code, dptr<float>(info, 1, op), dptr<const float>(info, 2, op), shape, xs, (float)num(info, 5, op),
                 (float)num(info, 6, op)));
  return info.Env().Undefined();
}

// ewUnaryFlat(code, n, out, x, alpha, beta)
Napi::Value EwUnaryFlat(const Napi::CallbackInfo& info) {
  const char* op = "ewUnaryFlat";
  const int code = op_code(info, 0, op, kUnaryCodes);
  const int64_t n = i64(info, 1, op);
  non_negative(info, op, {n});
  check(info.Env(), op,
        ew_unary_flat(code, n, dptr<float>(info, 2, op), dptr<const float>(info, 3, op), (float)num(info, 4, op),
                      (float)num(info, 5, op)));
  return info.Env().Undefined();
}

// ewBinary(code, out, a, aStrides, b, bStrides, shape)
Napi::Value EwBinary(const Napi::CallbackInfo& info) {
  const char* op = "ewBinary";
  const int code = op_code(info, 0, op, kBinaryCodes);
  const std::vector<int64_t> as = i64_array(info, 3, op), bs = i64_array(info, 5, op), shape = i64_array(info, 6, op);
  check_shape(info, op, shape, {&as, &bs});
  check(info.Env(), op,
        ew_binary(code, dptr<float>(info, 1, op), dptr<const float>(info, 2, op), as, dptr<const float>(info, 4, op),
                  bs, shape));
  return info.Env().Undefined();
}

// ewBinaryFlat(code, n, out, a, b)
Napi::Value EwBinaryFlat(const Napi::CallbackInfo& info) {
  const char* op = "ewBinaryFlat";
  const int code = op_code(info, 0, op, kBinaryCodes);
  const int64_t n = i64(info, 1, op);
  non_negative(info, op, {n});
  check(info.Env(), op,
        ew_binary_flat(code, n, dptr<float>(info, 2, op), dptr<const float>(info, 3, op),
                       dptr<const float>(info, 4, op)));
  return info.Env().Undefined();
}

// softmaxForward(x, y, R, C, log)
Napi::Value SoftmaxForward(const Napi::CallbackInfo& info) {
  const char* op = "softmaxForward";
  const int64_t R = i64(info, 2, op), C = i64(info, 3, op);
  non_negative(info, op, {R, C});
  check(info.Env(), op,
        softmax_forward(dptr<const float>(info, 0, op), dptr<float>(info, 1, op), R, C, flag(info, 4, op)));
  return info.Env().Undefined();
}

// softmaxBackward(y, g, dx, R, C, log)
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  const char* op = "softmaxBackward";
  const int64_t R = i64(info, 3, op), C = i64(info, 4, op);
  non_negative(info, op, {R, C});
  check(info.Env(), op,
        softmax_backward(dptr<const float>(info, 0, op), dptr<const float>(info, 1, op), dptr<float>(info, 2, op), R, C,
                         flag(info, 5, op)));
  return info.Env().Undefined();
}

// reduce(code, x, outer, R, inner, out, idx|null, scale)
Napi::Value Reduce(const Napi::CallbackInfo& info) {
  const char* op = "reduce";
  const int code = op_code(info, 0, op, 2);
  const int64_t outer = i64(info, 2, op), R = i64(info, 3, op), inner = i64(info, 4, op);
  non_negative(info, op, {outer, R, inner});
  if (R > 2147483647) throw_error(info.Env(), op, "reduced extent does not fit the int32 index");
  if (code == kReduceMax && R == 0 && outer * inner > 0) throw_error(info.Env(), op, "max over an empty dimension");
  check(info.Env(), op,
        reduce(code, dptr<const float>(info, 1, op), outer, R, inner, dptr<float>(info, 5, op),
               dptr<int32_t>(info, 6, op), num(info, 7, op)));
  return info.Env().Undefined();
}

// reduceMaxBackward(dx, g, idx, outer, R, inner): synchronizes (checks the indices).
Napi::Value ReduceMaxBackward(const Napi::CallbackInfo& info) {
  const char* op = "reduceMaxBackward";
  const int64_t outer = i64(info, 3, op), R = i64(info, 4, op), inner = i64(info, 5, op);
  non_negative(info, op, {outer, R, inner});
  check(info.Env(), op,
        reduce_max_backward(dptr<float>(info, 0, op), dptr<const float>(info, 1, op), dptr<const int32_t>(info, 2, op),
                            outer, R, inner, flag_dev(info.Env(), op)));
  return info.Env().Undefined();
}

// embeddingForward(table, V, C, idx, idxShape, out): synchronizes (checks the indices first).
Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  const char* op = "embeddingForward";
  const int64_t V = i64(info, 1, op), C = i64(info, 2, op);
  non_negative(info, op, {V, C});
  const std::vector<int64_t> shape = i64_array(info, 4, op);
  check_shape(info, op, shape, {});
  check(info.Env(), op,
        embedding_forward(dptr<const float>(info, 0, op), V, C, dptr<const int32_t>(info, 3, op), shape,
                          dptr<float>(info, 5, op), flag_dev(info.Env(), op)));
  return info.Env().Undefined();
}

// embeddingBackward(g, idx, N, V, C, dtable): dtable is overwritten; synchronizes (checks the indices first).
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  const char* op = "embeddingBackward";
  const int64_t N = i64(info, 2, op), V = i64(info, 3, op), C = i64(info, 4, op);
  non_negative(info, op, {N, V, C});
  check(info.Env(), op,
        embedding_backward(dptr<const float>(info, 0, op), dptr<const int32_t>(info, 1, op), N, V, C,
                           dptr<float>(info, 5, op), flag_dev(info.Env(), op)));
  return info.Env().Undefined();
}

struct PoolDims {
  int64_t B, C, H, W;
};

PoolDims pool_dims(const Napi::CallbackInfo& info, size_t i, const char* op, bool even) {
  const PoolDims d{i64(info, i, op), i64(info, i + 1, op), i64(info, i + 2, op), i64(info, i + 3, op)};
  if (d.B <= 0 || d.C <= 0 || d.H <= 0 || d.W <= 0) throw_error(info.Env(), op, "dimensions must be positive");
  if (even && (d.H % 2 || d.W % 2)) throw_error(info.Env(), op, "H and W must be even for a 2x2 pool");
  return d;
}

// maxpool2x2Forward(x, y, argmax, B, C, H, W)
Napi::Value MaxpoolForward(const Napi::CallbackInfo& info) {
  const char* op = "maxpool2x2Forward";
  const PoolDims d = pool_dims(info, 3, op, true);
  check(info.Env(), op,
        maxpool2x2_forward((const float*)need(info, 0, op), (float*)need(info, 1, op), (int32_t*)need(info, 2, op), d.B,
                           d.C, d.H, d.W));
  return info.Env().Undefined();
}

// maxpool2x2Backward(dy, argmax, dx, B, C, H, W): H, W of x; dx overwritten.
Napi::Value MaxpoolBackward(const Napi::CallbackInfo& info) {
  const char* op = "maxpool2x2Backward";
  const PoolDims d = pool_dims(info, 3, op, true);
  check(info.Env(), op,
        maxpool2x2_backward((const float*)need(info, 0, op), (const int32_t*)need(info, 1, op), (float*)need(info, 2, op),
                            d.B, d.C, d.H, d.W));
  return info.Env().Undefined();
}

// upsample2xForward(x, y, B, C, H, W)
Napi::Value UpsampleForward(const Napi::CallbackInfo& info) {
  const char* op = "upsample2xForward";
  const PoolDims d = pool_dims(info, 2, op, false);
  check(info.Env(), op,
        upsample2x_forward((const float*)need(info, 0, op), (float*)need(info, 1, op), d.B, d.C, d.H, d.W));
  return info.Env().Undefined();
}

// upsample2xBackward(dy, dx, B, C, H, W): H, W of x.
Napi::Value UpsampleBackward(const Napi::CallbackInfo& info) {
  const char* op = "upsample2xBackward";
  const PoolDims d = pool_dims(info, 2, op, false);
  check(info.Env(), op,
        upsample2x_backward((const float*)need(info, 0, op), (float*)need(info, 1, op), d.B, d.C, d.H, d.W));
  return info.Env().Undefined();
}

// philoxFill(dst, n, key0, key1, offsetLo, offsetHi, kind, a, b): kind "uniform" | "normal" | "gumbel"
Napi::Value PhiloxFill(const Napi::CallbackInfo& info) {
  const char* op = "philoxFill";
  const int64_t n = i64(info, 1, op);
  non_negative(info, op, {n});
  const uint32_t k0 = (uint32_t)i64(info, 2, op), k1 = (uint32_t)i64(info, 3, op);
  const uint64_t offset = (uint64_t)(uint32_t)i64(info, 4, op) | ((uint64_t)(uint32_t)i64(info, 5, op) << 32);
  const std::string kind = str(info, 6, op);
  const int k = kind == "uniform" ? kPhiloxUniform : kind == "normal" ? kPhiloxNormal : kind == "gumbel" ? kPhiloxGumbel : -1;
  if (k < 0) throw_error(info.Env(), op, "unknown distribution '" + kind + "' (uniform, normal, gumbel)");
  float* dst = dptr<float>(info, 0, op);
  if (n > 0 && !dst) throw_error(info.Env(), op, "null address");
  check(info.Env(), op, philox_fill(dst, n, k0, k1, offset, k, num(info, 7, op), num(info, 8, op)));
  return info.Env().Undefined();
}

Napi::Value CublasLtStatus(const Napi::CallbackInfo& info) {
  const std::string e = cublaslt_load();
  return e.empty() ? Napi::Value(info.Env().Null()) : Napi::Value(Napi::String::New(info.Env(), e));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  const std::pair<const char*, Napi::Value (*)(const Napi::CallbackInfo&)> fns[] = {
      {"info", Info},
      {"setDevice", SetDevice},
      {"alloc", Alloc},
      {"malloc", Alloc},
      {"free", Free},
      {"allocStats", AllocStatsJs},
      {"trim", Trim},
      {"resetPeak", ResetPeak},
      {"sizeClass", SizeClass},
      {"copyIn", CopyIn},
      {"copyOut", CopyOut},
      {"memcpy", Memcpy},
      {"memset", Memset},
      {"synchronize", Synchronize},
      {"cublasLtStatus", CublasLtStatus},
      {"gemm", Gemm},
      {"blockSparseAttentionForward", BlockSparseAttentionForward},
      {"blockSparseAttentionBackward", BlockSparseAttentionBackward},
      {"attentionDecode", AttentionDecode},
      {"attentionForward", DenseAttentionForward},
      {"attentionBackward", DenseAttentionBackward},
      {"axpy", Axpy},
      {"scale", Scale},
      {"sumSquares", SumSquares},
      {"sumSquaresBatch", SumSquaresBatch},
      {"cast", Cast},
      {"geluForward", GeluForward},
      {"geluBackward", GeluBackward},
      {"adamw", AdamW},
      {"scaleFilter", ScaleFilter},
      {"layerNormForward", LayerNormForward},
      {"layerNormBackward", LayerNormBackward},
      {"crossEntropyForward", CrossEntropyForward},
      {"crossEntropyBackward", CrossEntropyBackward},
      {"conv2dForward", Conv2dForward},
      {"conv2dBackward", Conv2dBackward},
      {"fill", Fill},
      {"stridedCopy", StridedCopy},
      {"ewUnary", EwUnary},
      {"ewUnaryFlat", EwUnaryFlat},
      {"ewBinary", EwBinary},
      {"ewBinaryFlat", EwBinaryFlat},
      {"softmaxForward", SoftmaxForward},
      {"softmaxBackward", SoftmaxBackward},
      {"reduce", Reduce},
      {"reduceMaxBackward", ReduceMaxBackward},
      {"embeddingForward", EmbeddingForward},
      {"embeddingBackward", EmbeddingBackward},
      {"maxpool2x2Forward", MaxpoolForward},
      {"maxpool2x2Backward", MaxpoolBackward},
      {"upsample2xForward", UpsampleForward},
      {"upsample2xBackward", UpsampleBackward},
      {"philoxFill", PhiloxFill},
  };
  for (const auto& f : fns) exports.Set(f.first, Napi::Function::New(env, f.second, f.first));
  exports.Set("nccl", nccl_exports(env));
  return exports;
}

}  // namespace
}  // namespace cuda
}  // namespace dalle

static Napi::Object InitDalleCuda(Napi::Env env, Napi::Object exports) { return dalle::cuda::Init(env, exports); }

NODE_API_MODULE(dalle_cuda, InitDalleCuda)
