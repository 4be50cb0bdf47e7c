// N-API of the NCCL backend, the `nccl` object of dalle_cuda.node (one property, so that addon.cc's table of kernels,
// which test/cuda/backend-wiring.test.ts reads, stays the kernels only). src/core/distributed/nccl.ts uses it:
//
//   available()                       { ok, version?, versionCode?, library, reason } (never throws)
//   uniqueId()                        a 128-byte Buffer (ncclGetUniqueId), rank 0's
//   init(rank, worldSize, id, device, timeoutMs)   Promise<Comm> (ncclCommInitRank on a thread of its own)
//   Comm: allReduceBuffers(addresses, counts, op), allReduce(array, op), broadcast(bytes, root): Promises;
//         allReduceSync(array, op) blocks; close()
//   Rendezvous(options): join(), publish(key, bytes), wait(key), fault(what, cause, rendezvous), leave(): Promises;
//         faultSync(what, cause) blocks
//
// Errors carry `kind` (and `faultyRank` for a Rendezvous' faults; `what`, `cause`, `culprit`, `firstWhat`,
// `firstCause` for a Comm's operations: nccl.h's Outcome).
#include <napi.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "nccl.h"
#include "nccl_rendezvous.h"
#include "napi_args.h"

[[noreturn]] void dalle_napi::usage(Napi::Env env, const std::string& what) { throwUsage(env, "dalle nccl: " + what); }

namespace dalle {
namespace cuda {

namespace {

using nccl::Communicator;
using nccl::Fault;
using nccl::FaultError;
using nccl::Outcome;
using nccl::Rendezvous;

using dalle_napi::ArrayView;
using dalle_napi::faultError;
using dalle_napi::intArg;
using dalle_napi::stringArg;
using dalle_napi::typedArrayArg;
using dalle_napi::usage;

nccl::RedOp reduceArg(Napi::Env env, Napi::Value v) { return dalle_napi::reduceArg(env, v, nccl::kSum, nccl::kMax, nccl::kMin); }

Napi::Error outcomeError(Napi::Env env, const Outcome& o) {
  Napi::Error err = Napi::Error::New(env, "dalle: " + o.message());
  Napi::Object e = err.Value();
  e.Set("kind", Napi::String::New(env, o.kind));
  e.Set("what", Napi::String::New(env, o.what));
  e.Set("cause", Napi::String::New(env, o.cause));
  e.Set("culprit", Napi::Boolean::New(env, o.culprit));
  e.Set("firstWhat", Napi::String::New(env, o.firstWhat));
  e.Set("firstCause", Napi::String::New(env, o.firstCause));
  return err;
}

Napi::Object faultObject(Napi::Env env, const Fault& f) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("kind", f.kind);
  o.Set("message", f.message);
  if (f.rank >= 0) o.Set("faultyRank", f.rank);
  return o;
}

/**
 * Runs `work` on a thread of its own and settles the returned Promise with `toJs` of its result on the JavaScript
 * thread (a FaultError rejects with its fault; another exception with kind `otherKind`). `keepAlive`: whether the
 * pending call keeps the process alive (not for ncclCommInitRank, which may never return when a peer is gone: the
 * caller's timer decides).
 */
template <class R>
Napi::Value onThread(Napi::Env env, std::function<R()> work, std::function<Napi::Value(Napi::Env, R&)> toJs,
                     const std::string& otherKind, bool keepAlive = true) {
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  Napi::ThreadSafeFunction tsfn = Napi::ThreadSafeFunction::New(
      env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "dalle_nccl", 0, 1);
  if (!keepAlive) tsfn.Unref(env);
  std::thread([tsfn, work, toJs, deferred, otherKind]() mutable {
    struct Result {
      bool ok = false;
      R value{};
      Fault fault;
    };
    auto result = std::make_shared<Result>();
    try {
      result->value = work();
      result->ok = true;
    } catch (const FaultError& e) {
      result->fault = e.fault;
    } catch (const std::exception& e) {
      result->fault = {otherKind, e.what(), -1};
    }
    tsfn.NonBlockingCall([result, toJs, deferred](Napi::Env env, Napi::Function) {
      Napi::HandleScope scope(env);
      if (!result->ok) {
        deferred.Reject(faultError(env, result->fault).Value());
        return;
      }
      try {
        deferred.Resolve(toJs(env, result->value));
      } catch (const Napi::Error& e) {
        deferred.Reject(e.Value());
      }
    });
    tsfn.Release();
  }).detach();
  return deferred.Promise();
}

// ---- Comm ----

// Completions from the watchdog thread to the JavaScript thread; detached (alive = false) when the handle is
// finalized or the environment torn down, after which completions are dropped.
struct Sink {
  std::mutex mutex;
  bool alive = true;
  bool envGone = false;
  Napi::ThreadSafeFunction tsfn;
};

class CommHandle : public Napi::ObjectWrap<CommHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Comm",
                       {InstanceMethod("allReduceBuffers", &CommHandle::AllReduceBuffers),
                        InstanceMethod("allReduce", &CommHandle::AllReduce),
                        InstanceMethod("allReduceSync", &CommHandle::AllReduceSync),
                        InstanceMethod("broadcast", &CommHandle::Broadcast),
                        InstanceMethod("close", &CommHandle::Close)});
  }

  // new Comm(external): made by init() only.
  explicit CommHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CommHandle>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsExternal()) usage(env, "a Comm comes from nccl.init()");
    auto* made = info[0].As<Napi::External<std::shared_ptr<Communicator>>>().Data();
    comm_ = *made;
    sink_ = std::make_shared<Sink>();
    sink_->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                                "dalle_nccl_comm", 0, 1);
    sink_->tsfn.Unref(env);  // referenced only while an operation is pending
    cleanupArg_ = new std::shared_ptr<Sink>(sink_);
    napi_add_env_cleanup_hook(env, &CommHandle::EnvCleanup, cleanupArg_);
  }

  ~CommHandle() override {
    bool envGone;
    {
      std::lock_guard<std::mutex> lock(sink_->mutex);
      sink_->alive = false;
      envGone = sink_->envGone;
    }
    if (comm_) comm_->close();
    if (!envGone) {
      napi_remove_env_cleanup_hook(Env(), &CommHandle::EnvCleanup, cleanupArg_);
      delete cleanupArg_;
      sink_->tsfn.Release();
    }
  }

 private:
  struct Pending {
    Napi::Promise::Deferred deferred;
    Napi::Reference<Napi::Value> keep;  // the typed array the operation reads and writes
  };

  static void EnvCleanup(void* arg) {
    auto* sink = static_cast<std::shared_ptr<Sink>*>(arg);
    {
      std::lock_guard<std::mutex> lock((*sink)->mutex);
      (*sink)->alive = false;
      (*sink)->envGone = true;
    }
    delete sink;
  }

  /** A Promise and the `done` that settles it (from any thread); `keep` stays referenced until then. */
  std::pair<Napi::Value, nccl::Done> track(Napi::Env env, Napi::Value keep) {
    uint64_t id = nextId_++;
    Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
    Pending p{deferred, keep.IsEmpty() || keep.IsUndefined() ? Napi::Reference<Napi::Value>() : Napi::Persistent(keep)};
    pending_.emplace(id, std::move(p));
    if (pending_.size() == 1) {
      sink_->tsfn.Ref(env);  // a pending operation keeps the process alive
      Ref();                 // and this handle, which settles it
    }
    std::shared_ptr<Sink> sink = sink_;
    nccl::Done done = [sink, id, this](const Outcome& out) {
      std::lock_guard<std::mutex> lock(sink->mutex);
      if (!sink->alive) return;
      sink->tsfn.NonBlockingCall([this, id, out](Napi::Env env, Napi::Function) { Settle(env, id, out); });
    };
    return {deferred.Promise(), done};
  }

  void Settle(Napi::Env env, uint64_t id, const Outcome& out) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    Napi::HandleScope scope(env);
    if (out.ok) it->second.deferred.Resolve(env.Undefined());
    else it->second.deferred.Reject(outcomeError(env, out).Value());
    pending_.erase(it);
    if (pending_.empty()) {
      sink_->tsfn.Unref(env);
      Unref();
    }
  }

  Communicator& comm(Napi::Env env) {
    if (!comm_) usage(env, "the communicator is closed");
    return *comm_;
  }

  Napi::Value AllReduceBuffers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsArray() || !info[1].IsArray()) usage(env, "allReduceBuffers(addresses, counts, op) takes two arrays");
    Napi::Array addresses = info[0].As<Napi::Array>();
    Napi::Array counts = info[1].As<Napi::Array>();
    if (addresses.Length() != counts.Length()) usage(env, "allReduceBuffers: addresses and counts differ in length");
    if (addresses.Length() > (1u << 20)) usage(env, "allReduceBuffers: more than 2^20 buffers in one bucket");
    nccl::RedOp op = reduceArg(env, info[2]);
    std::vector<nccl::Span> spans(addresses.Length());
    for (uint32_t i = 0; i < addresses.Length(); i++) {
      Napi::Value a = addresses.Get(i), n = counts.Get(i);
      if (!a.IsNumber() || !n.IsNumber()) usage(env, "allReduceBuffers: addresses and counts must be numbers");
      double address = a.As<Napi::Number>().DoubleValue(), count = n.As<Napi::Number>().DoubleValue();
      auto integer = [](double v) { return v >= 0 && v <= 9007199254740991.0 && v == static_cast<double>(static_cast<uint64_t>(v)); };
      if (!integer(count)) usage(env, "allReduceBuffers: count " + std::to_string(i) + " is not a non-negative integer");
      if (!integer(address)) usage(env, "allReduceBuffers: address " + std::to_string(i) + " is not a device address");
      spans[i] = {static_cast<uint64_t>(address), static_cast<uint64_t>(count)};
    }
    Communicator& c = comm(env);
    auto [promise, done] = track(env, Napi::Value());
    c.allReduceBuffers(spans, op, done);
    return promise;
  }

  // (array, op): a Float32Array or Float64Array.
  std::pair<ArrayView, nccl::RedOp> hostArgs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ArrayView a = typedArrayArg(env, info[0], "Float32Array or Float64Array");
    if (a.type != napi_float32_array && a.type != napi_float64_array) usage(env, "allReduce takes a Float32Array or Float64Array");
    return {a, reduceArg(env, info[1])};
  }

  Napi::Value AllReduce(const Napi::CallbackInfo& info) {
    auto [a, op] = hostArgs(info);
    Communicator& c = comm(info.Env());
    auto [promise, done] = track(info.Env(), info[0]);
    c.allReduceHost(a.data, a.length, a.type == napi_float64_array ? nccl::HostType::F64 : nccl::HostType::F32, op, done);
    return promise;
  }

  // Blocks this thread until the operation has completed or failed (the watchdog's timeout bounds the wait).
  Napi::Value AllReduceSync(const Napi::CallbackInfo& info) {
    auto [a, op] = hostArgs(info);
    Communicator& c = comm(info.Env());
    struct Wait {
      std::mutex mutex;
      std::condition_variable cv;
      bool done = false;
      Outcome out;
    };
    auto wait = std::make_shared<Wait>();
    c.allReduceHost(a.data, a.length, a.type == napi_float64_array ? nccl::HostType::F64 : nccl::HostType::F32, op,
                    [wait](const Outcome& out) {
                      std::lock_guard<std::mutex> lock(wait->mutex);
                      wait->out = out;
                      wait->done = true;
                      wait->cv.notify_all();
                    });
    std::unique_lock<std::mutex> lock(wait->mutex);
    wait->cv.wait(lock, [&] { return wait->done; });
    if (!wait->out.ok) throw outcomeError(info.Env(), wait->out);
    return info.Env().Undefined();
  }

  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ArrayView a = typedArrayArg(env, info[0], "Uint8Array");
    if (a.type != napi_uint8_array) usage(env, "broadcast takes a Uint8Array");
    Communicator& c = comm(env);
    int root = intArg(env, info[1], "root", 0, c.worldSize() - 1);
    auto [promise, done] = track(env, info[0]);
    c.broadcastHost(a.data, a.length, root, done);
    return promise;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (comm_) comm_->close();  // pending operations are settled (kind closed) through the sink
    return info.Env().Undefined();
  }

  std::shared_ptr<Communicator> comm_;
  std::shared_ptr<Sink> sink_;
  std::shared_ptr<Sink>* cleanupArg_ = nullptr;
  std::map<uint64_t, Pending> pending_;  // JavaScript thread only
  uint64_t nextId_ = 1;
};

// ---- Rendezvous ----

class RendezvousHandle : public Napi::ObjectWrap<RendezvousHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Rendezvous",
                       {InstanceMethod("join", &RendezvousHandle::Join),
                        InstanceMethod("publish", &RendezvousHandle::Publish),
                        InstanceMethod("wait", &RendezvousHandle::Wait),
                        InstanceMethod("fault", &RendezvousHandle::FaultOf),
                        InstanceMethod("faultSync", &RendezvousHandle::FaultSync),
                        InstanceMethod("leave", &RendezvousHandle::Leave)});
  }

  // options: { rank, worldSize, masterAddr, masterPort, timeoutMs, heartbeatMs }
  explicit RendezvousHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RendezvousHandle>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) usage(env, "new Rendezvous(options) needs an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    nccl::RendezvousConfig c;
    c.worldSize = intArg(env, o.Get("worldSize"), "worldSize", 1, 65536);
    c.rank = intArg(env, o.Get("rank"), "rank", 0, c.worldSize - 1);
    c.masterAddr = stringArg(env, o.Get("masterAddr"), "masterAddr");
    c.masterPort = intArg(env, o.Get("masterPort"), "masterPort", 1, 65535);
    c.timeoutMs = intArg(env, o.Get("timeoutMs"), "timeoutMs", 1, 24 * 3600 * 1000);
    c.heartbeatMs = intArg(env, o.Get("heartbeatMs"), "heartbeatMs", 10, 60000);
    try {
      rdv_ = std::make_shared<Rendezvous>(c);
    } catch (const std::invalid_argument& e) {
      usage(env, e.what());
    } catch (const std::exception& e) {
      Napi::Error err = Napi::Error::New(env, std::string("dalle: ") + e.what());
      err.Value().Set("kind", Napi::String::New(env, "listen"));
      throw err;
    }
  }

  ~RendezvousHandle() override {
    // Leaving may wait (rank 0 serves the others until they leave): never on the JavaScript thread.
    if (rdv_) std::thread([r = std::move(rdv_)] { r->leave(); }).detach();
  }

 private:
  using Bytes = std::vector<char>;

  Napi::Value Join(const Napi::CallbackInfo& info) {
    std::shared_ptr<Rendezvous> r = rdv_;
    return onThread<bool>(info.Env(), [r] { r->join(); return true; },
                          [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); }, "store-gone");
  }

  Napi::Value Publish(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string key = stringArg(env, info[0], "key");
    ArrayView a = typedArrayArg(env, info[1], "Uint8Array");
    if (a.type != napi_uint8_array) usage(env, "publish takes a Uint8Array");
    Bytes value(static_cast<char*>(a.data), static_cast<char*>(a.data) + a.length);
    std::shared_ptr<Rendezvous> r = rdv_;
    return onThread<bool>(env, [r, key, value] { r->publish(key, value); return true; },
                          [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); }, "store-gone");
  }

  Napi::Value Wait(const Napi::CallbackInfo& info) {
    std::string key = stringArg(info.Env(), info[0], "key");
    std::shared_ptr<Rendezvous> r = rdv_;
    return onThread<Bytes>(info.Env(), [r, key] { return r->await(key); },
                           [](Napi::Env env, Bytes& v) -> Napi::Value { return Napi::Buffer<char>::Copy(env, v.data(), v.size()); },
                           "store-gone");
  }

  // (what, cause, rendezvous): Promise<{ kind, message, faultyRank? }>
  Napi::Value FaultOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string what = stringArg(env, info[0], "what"), cause = stringArg(env, info[1], "cause");
    bool rendezvous = info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
    std::shared_ptr<Rendezvous> r = rdv_;
    return onThread<Fault>(env, [r, what, cause, rendezvous] { return r->fault(what, cause, rendezvous); },
                           [](Napi::Env env, Fault& f) -> Napi::Value { return faultObject(env, f); }, "store-gone");
  }

  // The same, blocking (after an allReduceSync failed): up to a few heartbeats.
  Napi::Value FaultSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string what = stringArg(env, info[0], "what"), cause = stringArg(env, info[1], "cause");
    return faultObject(env, rdv_->fault(what, cause, false));
  }

  Napi::Value Leave(const Napi::CallbackInfo& info) {
    std::shared_ptr<Rendezvous> r = rdv_;
    return onThread<bool>(info.Env(), [r] { r->leave(); return true; },
                          [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); }, "store-gone");
  }

  std::shared_ptr<Rendezvous> rdv_;
};

// ---- the module functions ----

struct NcclConstructors {
  Napi::FunctionReference comm;
};

Napi::Value Available(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nccl::Library& lib = nccl::library();
  Napi::Object o = Napi::Object::New(env);
  std::string reason = lib.api ? "" : lib.reason;
  int devices = 0;
  cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess) {
    cudaGetLastError();
    devices = 0;
    reason += std::string(reason.empty() ? "" : "; and ") + "no usable GPU (" + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) + ")";
  } else if (devices == 0) {
    reason += std::string(reason.empty() ? "" : "; and ") + "no GPU";
  }
  o.Set("ok", reason.empty());
  o.Set("library", lib.path);
  if (lib.api) {
    o.Set("version", lib.version);
    o.Set("versionCode", lib.versionCode);
  }
  o.Set("deviceCount", devices);
  o.Set("reason", reason);
  return o;
}

Napi::Value UniqueIdJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nccl::Library& lib = nccl::library();
  if (!lib.api) {
    Napi::Error err = Napi::Error::New(env, "dalle: NCCL is not available: " + lib.reason);
    err.Value().Set("kind", Napi::String::New(env, "unavailable"));
    throw err;
  }
  nccl::UniqueId id;
  nccl::Result r = lib.api->getUniqueId(&id);
  if (r != nccl::kSuccess) {
    Napi::Error err = Napi::Error::New(env, "dalle: ncclGetUniqueId: " + nccl::errorText(*lib.api, r));
    err.Value().Set("kind", Napi::String::New(env, "nccl"));
    throw err;
  }
  return Napi::Buffer<char>::Copy(env, id.internal, nccl::kUniqueIdBytes);
}

// (rank, worldSize, id, device, timeoutMs) -> Promise<Comm>
Napi::Value InitJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* ctors = static_cast<NcclConstructors*>(info.Data());
  int worldSize = intArg(env, info[1], "worldSize", 1, 65536);
  int rank = intArg(env, info[0], "rank", 0, worldSize - 1);
  ArrayView a = typedArrayArg(env, info[2], "Uint8Array of 128 bytes (the unique id)");
  if (a.type != napi_uint8_array || a.length != nccl::kUniqueIdBytes) usage(env, "the unique id must be a Uint8Array of 128 bytes");
  int device = intArg(env, info[3], "device", 0, 1023);
  int timeoutMs = intArg(env, info[4], "timeoutMs", 1, 24 * 3600 * 1000);
  nccl::UniqueId id;
  std::memcpy(id.internal, a.data, nccl::kUniqueIdBytes);
  using Made = std::shared_ptr<Communicator>;
  return onThread<Made>(
      env, [=] { return Communicator::create(rank, worldSize, id, device, timeoutMs); },
      [ctors](Napi::Env env, Made& made) -> Napi::Value {
        // The External lives only for the constructor call, which copies the shared_ptr.
        Napi::External<Made> ext = Napi::External<Made>::New(env, &made);
        return ctors->comm.New({ext});
      },
      "nccl", false);
}

void DeleteConstructors(void* arg) { delete static_cast<NcclConstructors*>(arg); }

}  // namespace

Napi::Object nccl_exports(Napi::Env env) {
  auto* ctors = new NcclConstructors();
  ctors->comm = Napi::Persistent(CommHandle::Define(env));
  napi_add_env_cleanup_hook(env, &DeleteConstructors, ctors);
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", Napi::Function::New(env, Available, "available"));
  o.Set("uniqueId", Napi::Function::New(env, UniqueIdJs, "uniqueId"));
  o.Set("init", Napi::Function::New(env, InitJs, "init", ctors));
  o.Set("Rendezvous", RendezvousHandle::Define(env));
  return o;
}

}  // namespace cuda
}  // namespace dalle
