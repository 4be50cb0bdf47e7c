// NCCL loaded at run time, and the communicator of one data-parallel rank (nccl.h). See nccl.h for the stream order.
#include "nccl.h"

#include <dlfcn.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace dalle {
namespace cuda {
namespace nccl {

// ---- loading ----

namespace {

template <class F>
bool sym(void* lib, const char* name, F* out, std::string* err) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (!*out) *err = std::string("it has no symbol ") + name + " (not NCCL 2, or too old: NCCL >= 2.12 is needed)";
  return *out != nullptr;
}

Library loadLibrary() {
  Library out;
  static Api api;
  const char* env = std::getenv("DALLE_NCCL_LIB");
  out.path = env && *env ? env : "libnccl.so.2";
  void* lib = dlopen(out.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    out.reason = env && *env
        ? "DALLE_NCCL_LIB=" + out.path + " did not load (" + (why ? why : "dlopen failed") + ")"
        : std::string("libnccl.so.2 is not installed or not on the loader's path (") + (why ? why : "dlopen failed") +
              "): install NCCL (the libnccl2 package, or pip's nvidia-nccl-cu12 / torch, whose libnccl.so.2 "
              "DALLE_NCCL_LIB can name)";
    return out;
  }
  std::string err;
  bool ok = sym(lib, "ncclGetVersion", &api.getVersion, &err) && sym(lib, "ncclGetUniqueId", &api.getUniqueId, &err) &&
            sym(lib, "ncclCommInitRank", &api.commInitRank, &err) && sym(lib, "ncclAllReduce", &api.allReduce, &err) &&
            sym(lib, "ncclBroadcast", &api.broadcast, &err) && sym(lib, "ncclCommAbort", &api.commAbort, &err) &&
            sym(lib, "ncclCommDestroy", &api.commDestroy, &err) &&
            sym(lib, "ncclGetErrorString", &api.getErrorString, &err) &&
            sym(lib, "ncclCommGetAsyncError", &api.commGetAsyncError, &err);
  if (!ok) {
    out.reason = out.path + " is not usable: " + err;
    return out;
  }
  int code = 0;
  if (api.getVersion(&code) != kSuccess || code <= 0) {
    out.reason = out.path + ": ncclGetVersion failed";
    return out;
  }
  out.versionCode = code;
  out.version = versionString(code);
  if (code < 21200) {  // ncclCommGetAsyncError's ncclInProgress, ncclRemoteError: 2.12+
    out.reason = out.path + " is NCCL " + out.version + ": NCCL >= 2.12 is needed";
    return out;
  }
  out.api = &api;
  return out;
}

}  // namespace

const Library& library() {
  static const Library lib = loadLibrary();  // thread-safe initialisation
  return lib;
}

std::string versionString(int code) {
  int major, minor, patch;
  if (code >= 10000) {
    major = code / 10000, minor = (code / 100) % 100, patch = code % 100;
  } else {
    major = code / 1000, minor = (code / 100) % 10, patch = code % 100;
  }
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::string errorText(const Api& api, Result r) {
  static const char* names[] = {"ncclSuccess",     "ncclUnhandledCudaError", "ncclSystemError", "ncclInternalError",
                                "ncclInvalidArgument", "ncclInvalidUsage",   "ncclRemoteError", "ncclInProgress"};
  std::string name = r >= 0 && r < 8 ? names[r] : "ncclResult " + std::to_string(r);
  const char* text = api.getErrorString ? api.getErrorString(r) : nullptr;
  return name + (text && *text ? std::string(": ") + text : "");
}

// ---- the communicator ----

namespace {

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string cudaText(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

const char* opName(RedOp op) { return op == kSum ? "sum" : op == kMax ? "max" : "min"; }

/** Makes `device` current on this thread for its lifetime (the JavaScript thread's device is put back). */
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) cudaSetDevice(device);
  }
  ~DeviceScope() {
    int now = -1;
    if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = -1;
};

// While operations are pending the watchdog polls often (a completion reaches JavaScript within about this long);
// idle, it only checks NCCL's asynchronous error now and then.
constexpr auto kBusyPoll = std::chrono::microseconds(500);
constexpr auto kIdlePoll = std::chrono::milliseconds(500);

}  // namespace

std::shared_ptr<Communicator> Communicator::create(int rank, int worldSize, const UniqueId& id, int device, int timeoutMs) {
  const Library& lib = library();
  if (!lib.api) throw std::runtime_error(lib.reason);
  if (worldSize < 1 || rank < 0 || rank >= worldSize) throw std::invalid_argument("rank must be 0 .. worldSize - 1");
  if (timeoutMs < 1) throw std::invalid_argument("timeoutMs must be > 0");
  cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) throw std::runtime_error("cudaSetDevice(" + std::to_string(device) + "): " + cudaText(e));
  std::shared_ptr<Communicator> c(new Communicator(lib, rank, worldSize, device, timeoutMs));
  // The communication stream: non-blocking (no implicit order with the legacy default stream: the events say it) and
  // of the highest priority, so that its kernels start as soon as SMs free up while backward goes on.
  int least = 0, greatest = 0;
  cudaDeviceGetStreamPriorityRange(&least, &greatest);
  e = cudaStreamCreateWithPriority(&c->stream_, cudaStreamNonBlocking, greatest);
  if (e != cudaSuccess) throw std::runtime_error("cudaStreamCreateWithPriority: " + cudaText(e));
  Result r = lib.api->commInitRank(&c->comm_, worldSize, id, rank);
  if (r != kSuccess) {
    c->comm_ = nullptr;
    throw std::runtime_error("ncclCommInitRank (rank " + std::to_string(rank) + " of " + std::to_string(worldSize) +
                             ", cuda:" + std::to_string(device) + "): " + errorText(*lib.api, r));
  }
  Communicator* raw = c.get();
  c->watchdog_ = std::thread([raw] { raw->watch(); });
  return c;
}

Communicator::Communicator(const Library& lib, int rank, int worldSize, int device, int timeoutMs)
    : api_(*lib.api), rank_(rank), worldSize_(worldSize), device_(device), tracker_(timeoutMs) {}

Communicator::~Communicator() { close(); }

std::string Communicator::describe(const char* name, uint64_t n, const std::string& detail) const {
  return std::string(name) + " #" + std::to_string(n) + " (" + detail + ")";
}

cudaEvent_t Communicator::event(std::string* err) {
  if (!freeEvents_.empty()) {
    cudaEvent_t e = freeEvents_.back();
    freeEvents_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  cudaError_t r = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
  if (r != cudaSuccess) *err = "cudaEventCreate: " + cudaText(r);
  return e;
}

void* Communicator::bucket(size_t bytes, std::string* err) {
  if (bytes <= bucketBytes_) return bucket_;
  // Grown by half again at least, so that buckets of slowly growing sizes do not reallocate every time. The old one
  // may still be read by queued work (stream order): it is retired, not freed.
  size_t want = std::max(bytes, bucketBytes_ + bucketBytes_ / 2);
  void* p = nullptr;
  cudaError_t r = cudaMalloc(&p, want);
  if (r != cudaSuccess && want > bytes) r = cudaMalloc(&p, want = bytes);
  if (r != cudaSuccess) {
    cudaGetLastError();
    *err = "a communication bucket of " + std::to_string(bytes) + " bytes: " + cudaText(r);
    return nullptr;
  }
  if (bucket_) retiredBuckets_.push_back(bucket_);
  bucket_ = p;
  bucketBytes_ = want;
  return bucket_;
}

void* Communicator::pinned(size_t bytes, std::string* err) {
  size_t best = freePinned_.size();
  for (size_t i = 0; i < freePinned_.size(); i++) {
    if (freePinned_[i].second >= bytes && (best == freePinned_.size() || freePinned_[i].second < freePinned_[best].second)) best = i;
  }
  if (best < freePinned_.size()) {
    void* p = freePinned_[best].first;
    freePinned_.erase(freePinned_.begin() + best);
    return p;
  }
  size_t want = 4096;
  while (want < bytes) want *= 2;
  void* p = nullptr;
  cudaError_t r = cudaHostAlloc(&p, want, cudaHostAllocDefault);
  if (r != cudaSuccess) {
    cudaGetLastError();
    *err = "pinned staging of " + std::to_string(want) + " bytes: " + cudaText(r);
    return nullptr;
  }
  pinnedSizes_[p] = want;
  return p;
}

bool Communicator::begin(const std::string& what, bool computeOrdered, Begun* out, Done& done) {
  Outcome refused;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!tracker_.broken()) {
      std::string err;
      Record rec;
      rec.done = done;
      if (computeOrdered) rec.ready = event(&err);
      if (err.empty()) rec.finished = event(&err);
      if (err.empty()) {
        out->id = ++nextId_;
        out->ready = rec.ready;
        out->finished = rec.finished;
        tracker_.add(out->id, what, nowMs());
        records_.emplace(out->id, std::move(rec));
        issuing_++;
        return true;
      }
      if (rec.ready) freeEvents_.push_back(rec.ready);
      refused.kind = "cuda";
      refused.cause = err;
    } else {
      refused.kind = tracker_.failure().kind;
      refused.cause = tracker_.refusal();
      refused.culprit = false;
      refused.firstWhat = tracker_.failure().what;
      refused.firstCause = tracker_.failure().cause;
    }
  }
  refused.ok = false;
  refused.what = what;
  done(refused);
  return false;
}

void Communicator::finish(const Begun& b, const std::string& kind, const std::string& err) {
  std::map<uint64_t, Record> failed;
  WatchdogStep step;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    issuing_--;
    auto it = records_.find(b.id);  // gone when the watchdog failed it meanwhile
    if (it != records_.end() && err.empty()) it->second.issued = true;
    if (!err.empty()) {
      step = tracker_.failAll(kind, b.id, err);
      failed = takeRecords(step);
    }
  }
  wake_.notify_all();
  if (step.abort) abortComm();
  settle(step, failed);
}

std::map<uint64_t, Communicator::Record> Communicator::takeRecords(const WatchdogStep& step) {
  std::map<uint64_t, Record> out;
  auto take = [&](uint64_t id) {
    auto it = records_.find(id);
    if (it == records_.end()) return;
    out.emplace(id, std::move(it->second));
    records_.erase(it);
  };
  for (uint64_t id : step.completed) take(id);
  for (const OpFailure& f : step.failed) take(f.id);
  return out;
}

void Communicator::allReduceBuffers(const std::vector<Span>& spans, RedOp op, Done done) {
  PackPlan plan = planPack(spans, uint64_t(1) << 32);
  std::string detail = std::string(opName(op)) + ", " + std::to_string(spans.size()) + " buffers, " +
                       std::to_string(plan.total) + " f32";
  if (!plan.error.empty()) {
    Outcome o;
    o.ok = false;
    o.kind = "usage";
    o.what = "allReduceBuffers (" + detail + ")";
    o.cause = plan.error;
    done(o);
    return;
  }
  if (plan.total == 0) {  // every rank has the same list: nothing to exchange
    done(Outcome());
    return;
  }
  DeviceScope scope(device_);
  Begun b;
  std::string what;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    what = describe("allReduceBuffers", nextId_ + 1, detail);
  }
  if (!begin(what, true, &b, done)) return;
  std::string err, kind = "cuda";
  char* base = nullptr;
  if (!plan.inPlace) {
    std::lock_guard<std::mutex> lock(mutex_);
    base = static_cast<char*>(bucket(plan.total * sizeof(float), &err));
  }
  auto cudaStep = [&](cudaError_t e, const char* call) {
    if (e != cudaSuccess && err.empty()) err = std::string(call) + ": " + cudaText(e);
    return err.empty();
  };
  // The gradients are written by work queued on the compute stream so far: the communication stream waits for it.
  if (err.empty() && cudaStep(cudaEventRecord(b.ready, cudaStreamLegacy), "cudaEventRecord") &&
      cudaStep(cudaStreamWaitEvent(stream_, b.ready, 0), "cudaStreamWaitEvent")) {
    for (size_t k = 0; k < plan.entries.size() && !plan.inPlace && err.empty(); k++) {
      const PackEntry& e = plan.entries[k];
      cudaStep(cudaMemcpyAsync(base + 4 * e.offset, reinterpret_cast<void*>(spans[e.index].address), 4 * e.count,
                               cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync (pack)");
    }
    void* data = plan.inPlace ? reinterpret_cast<void*>(spans[plan.entries[0].index].address) : base;
    if (err.empty()) {
      Result r = api_.allReduce(data, data, plan.total, kFloat32, op, comm_, stream_);
      if (r != kSuccess) kind = "nccl", err = "ncclAllReduce: " + errorText(api_, r);
    }
    for (size_t k = 0; k < plan.entries.size() && !plan.inPlace && err.empty(); k++) {
      const PackEntry& e = plan.entries[k];
      cudaStep(cudaMemcpyAsync(reinterpret_cast<void*>(spans[e.index].address), base + 4 * e.offset, 4 * e.count,
                               cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync (unpack)");
    }
    // Later kernels on the compute stream (they read the reduced gradients, or reuse their memory) wait for the end.
    if (err.empty() && cudaStep(cudaEventRecord(b.finished, stream_), "cudaEventRecord")) {
      cudaStep(cudaStreamWaitEvent(cudaStreamLegacy, b.finished, 0), "cudaStreamWaitEvent");
    }
  }
  finish(b, kind, err);
}

void Communicator::hostOperation(const std::string& what, void* data, size_t bytes, size_t count, DataType type, RedOp op,
                                 int root, Done& done) {
  DeviceScope scope(device_);
  Begun b;
  if (!begin(what, false, &b, done)) return;
  std::string err, kind = "cuda";
  void* staging = nullptr;
  void* dev = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    staging = pinned(bytes, &err);
    if (err.empty()) dev = bucket(bytes, &err);
    auto it = records_.find(b.id);
    if (it != records_.end()) {
      it->second.pinned = staging;  // the watchdog copies the result from here into `data`
      it->second.hostOut = data;
      it->second.hostBytes = bytes;
    }
  }
  auto cudaStep = [&](cudaError_t e, const char* call) {
    if (e != cudaSuccess && err.empty()) err = std::string(call) + ": " + cudaText(e);
    return err.empty();
  };
  if (err.empty()) {
    std::memcpy(staging, data, bytes);
    if (cudaStep(cudaMemcpyAsync(dev, staging, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (in)")) {
      Result r = root < 0 ? api_.allReduce(dev, dev, count, type, op, comm_, stream_)
                          : api_.broadcast(dev, dev, count, type, root, comm_, stream_);
      if (r != kSuccess) kind = "nccl", err = std::string(root < 0 ? "ncclAllReduce: " : "ncclBroadcast: ") + errorText(api_, r);
    }
    if (err.empty() && cudaStep(cudaMemcpyAsync(staging, dev, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (out)")) {
      cudaStep(cudaEventRecord(b.finished, stream_), "cudaEventRecord");
    }
  }
  finish(b, kind, err);
}

void Communicator::allReduceHost(void* data, size_t count, HostType type, RedOp op, Done done) {
  if (count == 0) {
    done(Outcome());
    return;
  }
  size_t item = type == HostType::F64 ? 8 : type == HostType::F32 ? 4 : 1;
  DataType dt = type == HostType::F64 ? kFloat64 : type == HostType::F32 ? kFloat32 : kUint8;
  std::string what;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    what = describe("allReduce", nextId_ + 1, std::string(opName(op)) + ", " + std::to_string(count) +
                                                  (type == HostType::F64 ? " f64" : type == HostType::F32 ? " f32" : " u8"));
  }
  hostOperation(what, data, count * item, count, dt, op, -1, done);
}

void Communicator::broadcastHost(void* data, size_t bytes, int root, Done done) {
  if (root < 0 || root >= worldSize_) {
    Outcome o;
    o.ok = false;
    o.kind = "usage";
    o.what = "broadcast";
    o.cause = "root " + std::to_string(root) + " is not a rank of 0 .. " + std::to_string(worldSize_ - 1);
    done(o);
    return;
  }
  if (bytes == 0) {
    done(Outcome());
    return;
  }
  std::string what;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    what = describe("broadcast", nextId_ + 1, std::to_string(bytes) + " bytes from rank " + std::to_string(root));
  }
  hostOperation(what, data, bytes, bytes, kUint8, kSum, root, done);
}

void Communicator::release(Record& r) {
  // mutex_ held. After a failure the events and staging may still be in use by aborted work: they are not reused
  // (every later operation is refused) and close() frees them once the stream is idle.
  if (r.ready) freeEvents_.push_back(r.ready);
  if (r.finished) freeEvents_.push_back(r.finished);
  if (r.pinned) freePinned_.emplace_back(r.pinned, pinnedSizes_[r.pinned]);
  r.ready = r.finished = nullptr;
  r.pinned = nullptr;
}

void Communicator::settle(const WatchdogStep& step, std::map<uint64_t, Record>& records) {
  for (uint64_t id : step.completed) {
    auto it = records.find(id);
    if (it != records.end() && it->second.hostOut) std::memcpy(it->second.hostOut, it->second.pinned, it->second.hostBytes);
  }
  OpFailure first;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : records) release(entry.second);
    first = tracker_.failure();
  }
  for (uint64_t id : step.completed) {
    auto it = records.find(id);
    if (it != records.end()) it->second.done(Outcome());
  }
  for (const OpFailure& f : step.failed) {
    Outcome o;
    o.ok = false;
    o.kind = f.kind;
    o.what = f.what;
    o.cause = f.cause;
    o.culprit = f.what == first.what || f.kind == "closed";
    o.firstWhat = first.what;
    o.firstCause = first.cause;
    auto it = records.find(f.id);
    if (it != records.end()) it->second.done(o);
  }
}

void Communicator::abortComm() {
  if (abortStarted_.exchange(true)) return;
  // An operation may be inside an NCCL call on the JavaScript thread (connecting to a peer that died): give it a
  // moment to return, then abort regardless (ncclCommAbort is what makes such a call give up).
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (issuing_.load() > 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::lock_guard<std::mutex> use(commUse_);
  if (comm_) api_.commAbort(comm_);
  aborted_ = true;
}

void Communicator::watch() {
  cudaSetDevice(device_);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    if (records_.empty()) wake_.wait_for(lock, kIdlePoll);
    else wake_.wait_for(lock, kBusyPoll);
    if (stopping_ || tracker_.broken()) {
      if (stopping_) break;
      continue;
    }
    lock.unlock();
    std::string asyncError;
    {
      std::lock_guard<std::mutex> use(commUse_);
      Result async = kSuccess;
      if (!aborted_ && comm_ && api_.commGetAsyncError(comm_, &async) == kSuccess && async != kSuccess && async != kInProgress) {
        asyncError = errorText(api_, async);
      }
    }
    lock.lock();
    auto probe = [this](uint64_t id, std::string* detail) {
      auto it = records_.find(id);
      if (it == records_.end() || !it->second.issued) return Probe::Pending;
      cudaError_t e = cudaEventQuery(it->second.finished);
      if (e == cudaSuccess) return Probe::Done;
      if (e == cudaErrorNotReady) return Probe::Pending;
      *detail = cudaText(e);
      return Probe::Failed;
    };
    WatchdogStep step = tracker_.poll(nowMs(), probe, asyncError);
    if (step.completed.empty() && step.failed.empty() && !step.abort) continue;
    std::map<uint64_t, Record> settled = takeRecords(step);
    lock.unlock();
    if (step.abort) abortComm();
    settle(step, settled);
    lock.lock();
  }
}

void Communicator::close() {
  std::map<uint64_t, Record> failed;
  WatchdogStep step;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = true;
    step = tracker_.failAll("closed", 0, "the collective was closed before this operation completed");
    failed = takeRecords(step);
    stopping_ = true;
  }
  wake_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  DeviceScope scope(device_);
  if (step.abort) {
    abortComm();
  } else if (comm_ && !aborted_) {
    std::lock_guard<std::mutex> use(commUse_);
    api_.commDestroy(comm_);
  }
  comm_ = nullptr;
  settle(step, failed);
  // Memory that queued work may still touch is freed only once the stream is idle: bounded, since an aborted
  // communicator's kernels end; if they do not, it is left to the process's exit rather than freed under them.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  cudaError_t q = stream_ ? cudaStreamQuery(stream_) : cudaSuccess;
  while (q == cudaErrorNotReady && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    q = cudaStreamQuery(stream_);
  }
  if (q != cudaSuccess) return;
  std::lock_guard<std::mutex> lock(mutex_);
  for (cudaEvent_t e : freeEvents_) cudaEventDestroy(e);
  freeEvents_.clear();
  for (auto& p : pinnedSizes_) cudaFreeHost(p.first);
  pinnedSizes_.clear();
  freePinned_.clear();
  for (void* p : retiredBuckets_) cudaFree(p);
  retiredBuckets_.clear();
  if (bucket_) cudaFree(bucket_);
  bucket_ = nullptr;
  bucketBytes_ = 0;
  if (stream_) cudaStreamDestroy(stream_);
  stream_ = nullptr;
}

}  // namespace nccl
}  // namespace cuda
}  // namespace dalle
