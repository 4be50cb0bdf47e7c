// N-API binding of the Gloo group (group.h): `new Group(options)`, then Promise-returning operations that run on the
// group's communication thread in issue order, and allReduceSync, which blocks the calling thread until its turn has
// run. Arrays in flight are kept alive by references until their operation completes; errors carry `kind` and
// `faultyRank` (src/core/distributed/gloo.ts turns them into CollectiveError).
#include <napi.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>

#include <gloo/config.h>

#include "group.h"
#include "napi_args.h"

[[noreturn]] void dalle_napi::usage(Napi::Env env, const std::string& what) { throwUsage(env, "dalle_collective: " + what); }

namespace dalle_collective {
namespace {

using dalle_napi::ArrayView;
using dalle_napi::faultError;
using dalle_napi::intArg;
using dalle_napi::typedArrayArg;
using dalle_napi::usage;

// Completions from the communication thread to the JavaScript thread. Detached (alive = false) when the group's
// handle is finalized or the environment is torn down, after which completions are dropped instead of posted.
struct Sink {
  std::mutex mutex;
  bool alive = true;
  bool envGone = false;
  Napi::ThreadSafeFunction tsfn;
};

ReduceOp reduceArg(Napi::Env env, Napi::Value v) { return dalle_napi::reduceArg(env, v, ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min); }

class CollectiveGroup : public Napi::ObjectWrap<CollectiveGroup> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Group",
                       {InstanceMethod("connect", &CollectiveGroup::Connect),
                        InstanceMethod("allReduce", &CollectiveGroup::AllReduce),
                        InstanceMethod("allReduceSync", &CollectiveGroup::AllReduceSync),
                        InstanceMethod("allReduceBuffers", &CollectiveGroup::AllReduceBuffers),
                        InstanceMethod("broadcast", &CollectiveGroup::Broadcast),
                        InstanceMethod("barrier", &CollectiveGroup::Barrier),
                        InstanceMethod("close", &CollectiveGroup::Close)});
  }

  // options: { rank, worldSize, localRank, masterAddr, masterPort, timeoutMs, heartbeatMs?, iface? }
  explicit CollectiveGroup(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CollectiveGroup>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) usage(env, "new Group(options) needs an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    GroupConfig c;
    c.worldSize = intArg(env, o.Get("worldSize"), "worldSize", 1, kMaxWorldSize);
    c.rank = intArg(env, o.Get("rank"), "rank", 0, c.worldSize - 1);
    c.localRank = intArg(env, o.Get("localRank"), "localRank", 0, kMaxWorldSize);
    c.masterAddr = dalle_napi::stringArg(env, o.Get("masterAddr"), "masterAddr");
    c.masterPort = intArg(env, o.Get("masterPort"), "masterPort", 1, 65535);
    c.timeoutMs = intArg(env, o.Get("timeoutMs"), "timeoutMs", 1, 24 * 3600 * 1000);
    if (!o.Get("heartbeatMs").IsUndefined()) c.heartbeatMs = intArg(env, o.Get("heartbeatMs"), "heartbeatMs", 10, 60000);
    if (o.Get("iface").IsString()) c.iface = o.Get("iface").As<Napi::String>().Utf8Value();
    try {
      group_ = Group::create(c);
    } catch (const std::invalid_argument& e) {
      usage(env, e.what());
    } catch (const std::exception& e) {
      Napi::Error err = Napi::Error::New(env, std::string("dalle: ") + e.what());
      err.Value().Set("kind", Napi::String::New(env, "listen"));
      throw err;
    }
    sink_ = std::make_shared<Sink>();
    sink_->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                                "dalle_collective", 0, 1);
    sink_->tsfn.Unref(env);  // referenced only while an operation is pending (see track)
    cleanupArg_ = new std::shared_ptr<Sink>(sink_);
    napi_add_env_cleanup_hook(env, &CollectiveGroup::EnvCleanup, cleanupArg_);
  }

  ~CollectiveGroup() override {
    if (group_) group_->close();
    bool envGone;
    {
      std::lock_guard<std::mutex> lock(sink_->mutex);
      sink_->alive = false;
      envGone = sink_->envGone;
    }
    if (!envGone) {
      napi_remove_env_cleanup_hook(Env(), &CollectiveGroup::EnvCleanup, cleanupArg_);
      delete cleanupArg_;
      sink_->tsfn.Release();
    }
  }

 private:
  struct Pending {
    Napi::Promise::Deferred deferred;
    Napi::Reference<Napi::Value> keep;  // the array(s) the operation reads and writes
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

  // Queues `op` and returns its Promise; `keep` stays referenced until it settles.
  Napi::Value Submit(Napi::Env env, Op op, Napi::Value keep) {
    uint64_t id = nextId_++;
    Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
    Napi::Promise promise = deferred.Promise();
    Pending p{deferred, keep.IsEmpty() || keep.IsUndefined() ? Napi::Reference<Napi::Value>() : Napi::Persistent(keep)};
    pending_.emplace(id, std::move(p));
    if (pending_.size() == 1) {
      sink_->tsfn.Ref(env);  // a pending operation keeps the process alive
      Ref();                 // and this handle, which settles it
    }
    std::shared_ptr<Sink> sink = sink_;
    op.done = [sink, id, this](const Outcome& out) {
      std::lock_guard<std::mutex> lock(sink->mutex);
      if (!sink->alive) return;
      sink->tsfn.NonBlockingCall([this, id, out](Napi::Env env, Napi::Function) { Settle(env, id, out); });
    };
    group_->enqueue(std::move(op));
    return promise;
  }

  void Settle(Napi::Env env, uint64_t id, const Outcome& out) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    Napi::HandleScope scope(env);
    if (out.ok) it->second.deferred.Resolve(env.Undefined());
    else it->second.deferred.Reject(faultError(env, out.fault).Value());
    pending_.erase(it);
    if (pending_.empty()) {
      sink_->tsfn.Unref(env);
      Unref();
    }
  }

  Napi::Value Connect(const Napi::CallbackInfo& info) {
    Op op;
    op.kind = Op::Kind::Connect;
    return Submit(info.Env(), std::move(op), Napi::Value());
  }

  Op allReduceOp(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ArrayView a = typedArrayArg(env, info[0], "Float32Array or Float64Array");
    if (a.type != napi_float32_array && a.type != napi_float64_array) usage(env, "allReduce takes a Float32Array or Float64Array");
    Op op;
    op.kind = Op::Kind::AllReduce;
    op.dtype = a.type == napi_float32_array ? DType::F32 : DType::F64;
    op.span = {a.data, a.length};
    op.reduce = reduceArg(env, info[1]);
    return op;
  }

  Napi::Value AllReduce(const Napi::CallbackInfo& info) { return Submit(info.Env(), allReduceOp(info), info[0]); }

  // Blocks this thread until the operation (and every one queued before it) has run.
  Napi::Value AllReduceSync(const Napi::CallbackInfo& info) {
    Op op = allReduceOp(info);
    struct Wait {
      std::mutex mutex;
      std::condition_variable cv;
      bool done = false;
      Outcome out;
    };
    auto wait = std::make_shared<Wait>();
    op.done = [wait](const Outcome& out) {
      std::lock_guard<std::mutex> lock(wait->mutex);
      wait->out = out;
      wait->done = true;
      wait->cv.notify_all();
    };
    group_->enqueue(std::move(op));
    std::unique_lock<std::mutex> lock(wait->mutex);
    wait->cv.wait(lock, [&] { return wait->done; });
    if (!wait->out.ok) throw faultError(info.Env(), wait->out.fault);
    return info.Env().Undefined();
  }

  // (addresses: number[], counts: number[], op): f32 runs in the caller's (host) memory, e.g. tensor storages.
  Napi::Value AllReduceBuffers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsArray() || !info[1].IsArray()) usage(env, "allReduceBuffers(addresses, counts, op) takes two arrays");
    Napi::Array addresses = info[0].As<Napi::Array>();
    Napi::Array counts = info[1].As<Napi::Array>();
    if (addresses.Length() != counts.Length()) usage(env, "allReduceBuffers: addresses and counts differ in length");
    if (addresses.Length() > (1u << 20)) usage(env, "allReduceBuffers: more than 2^20 buffers in one bucket");
    Op op;
    op.kind = Op::Kind::AllReduceBuffers;
    op.reduce = reduceArg(env, info[2]);
    double total = 0;
    for (uint32_t i = 0; i < addresses.Length(); i++) {
      Napi::Value a = addresses.Get(i), n = counts.Get(i);
      if (!a.IsNumber() || !n.IsNumber()) usage(env, "allReduceBuffers: addresses and counts must be numbers");
      double address = a.As<Napi::Number>().DoubleValue(), count = n.As<Napi::Number>().DoubleValue();
      if (!(count >= 0 && count <= 9007199254740991.0) || count != static_cast<double>(static_cast<uint64_t>(count))) {
        usage(env, "allReduceBuffers: count " + std::to_string(i) + " is not a non-negative integer");
      }
      if (count > 0 && (!(address > 0 && address <= 9007199254740991.0) || address != static_cast<double>(static_cast<uint64_t>(address)))) {
        usage(env, "allReduceBuffers: address " + std::to_string(i) + " is not a valid address");
      }
      total += count;
      op.buffers.push_back({reinterpret_cast<void*>(static_cast<uintptr_t>(address)), static_cast<size_t>(count)});
    }
    if (total > 4294967296.0) usage(env, "allReduceBuffers: more than 2^32 values in one bucket");
    return Submit(env, std::move(op), Napi::Value());
  }

  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ArrayView a = typedArrayArg(env, info[0], "Uint8Array");
    if (a.type != napi_uint8_array) usage(env, "broadcast takes a Uint8Array");
    Op op;
    op.kind = Op::Kind::Broadcast;
    op.span = {a.data, a.length};
    op.root = intArg(env, info[1], "root", 0, group_->config().worldSize - 1);
    return Submit(env, std::move(op), info[0]);
  }

  Napi::Value Barrier(const Napi::CallbackInfo& info) {
    Op op;
    op.kind = Op::Kind::Barrier;
    return Submit(info.Env(), std::move(op), Napi::Value());
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    group_->close();
    return info.Env().Undefined();
  }

  std::shared_ptr<Group> group_;
  std::shared_ptr<Sink> sink_;
  std::shared_ptr<Sink>* cleanupArg_ = nullptr;
  std::map<uint64_t, Pending> pending_;  // JavaScript thread only
  uint64_t nextId_ = 1;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Group", CollectiveGroup::Define(env));
  Napi::Object info = Napi::Object::New(env);
  info.Set("library", "gloo");
  info.Set("transport", "tcp");
  info.Set("glooVersion", std::to_string(GLOO_VERSION_MAJOR) + "." + std::to_string(GLOO_VERSION_MINOR) + "." +
                              std::to_string(GLOO_VERSION_PATCH));
  exports.Set("info", info);
  return exports;
}

}  // namespace
}  // namespace dalle_collective

static Napi::Object InitCollective(Napi::Env env, Napi::Object exports) { return dalle_collective::Init(env, exports); }

NODE_API_MODULE(dalle_collective, InitCollective)
