#include "group.h"

#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/transport/tcp/device.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include "gloo_store.h"

namespace dalle_collective {

namespace {

/** A failure already worded (the rendezvous' own checks): passed on as it is, not diagnosed again. */
struct FaultError : std::runtime_error {
  explicit FaultError(Fault f) : std::runtime_error(f.message), fault(std::move(f)) {}
  Fault fault;
};

/** What an operation issued after the group failed is refused with: the first failure, which names the cause. */
Fault afterFailure(const Fault& first) {
  Fault f = first;
  f.message = "the group is unusable after an earlier failure: " + first.message;
  return f;
}

const char* reduceName(ReduceOp op) { return op == ReduceOp::Sum ? "sum" : op == ReduceOp::Max ? "max" : "min"; }

using ReduceFn = void (*)(void*, const void*, const void*, size_t);

template <typename T>
ReduceFn reduceFn(ReduceOp op) {
  switch (op) {
    case ReduceOp::Max: return static_cast<ReduceFn>(&gloo::max<T>);
    case ReduceOp::Min: return static_cast<ReduceFn>(&gloo::min<T>);
    default: return static_cast<ReduceFn>(&gloo::sum<T>);
  }
}

}  // namespace

std::shared_ptr<Group> Group::create(const GroupConfig& c) {
  auto bad = [](const std::string& what) { throw std::invalid_argument(what); };
  if (c.worldSize < 1 || c.worldSize > static_cast<int>(kMaxWorldSize)) bad("worldSize must be 1 .. 65536");
  if (c.rank < 0 || c.rank >= c.worldSize) bad("rank must be 0 .. worldSize - 1");
  if (c.localRank < 0) bad("localRank must be >= 0");
  if (c.masterPort < 1 || c.masterPort > 65535) bad("masterPort must be 1 .. 65535");
  if (c.masterAddr.empty() || c.masterAddr.size() > 255) bad("masterAddr must be a host name or address");
  if (c.timeoutMs < 1) bad("timeoutMs must be > 0");
  if (c.heartbeatMs < 10 || c.heartbeatMs > 60000) bad("heartbeatMs must be 10 .. 60000");
  std::shared_ptr<Group> g(new Group(c));
  if (c.rank == 0) g->server_ = std::make_unique<StoreServer>(c.masterAddr, c.masterPort, c.worldSize);
  // The thread owns a reference: the group lives until it has left (close), whatever JavaScript does with its handle.
  std::thread([g] { g->run(); }).detach();
  return g;
}

// A store request waits up to the timeout, within 1 .. 5 s: long enough for a loaded machine, short enough that a
// stopped rank 0 is named soon after the operation that found it.
Group::Group(const GroupConfig& config)
    : config_(config), store_(config.masterAddr, config.masterPort, std::min(5000, std::max(1000, config.timeoutMs))) {}

Group::~Group() = default;

void Group::enqueue(Op op) {
  Outcome refused;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!closing_ && broken_.kind.empty()) {
      queue_.push_back(std::move(op));
      wake_.notify_one();
      return;
    }
    refused.ok = false;
    refused.fault = closing_ ? Fault{"closed", "the collective was closed", -1} : afterFailure(broken_);
  }
  op.done(refused);
}

void Group::close() {
  std::deque<Op> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closing_) return;
    closing_ = true;
    dropped.swap(queue_);
  }
  wake_.notify_one();
  Outcome out;
  out.ok = false;
  out.fault = Fault{"closed", "the collective was closed before this operation ran", -1};
  for (Op& op : dropped) op.done(out);
}

void Group::run() {
  for (;;) {
    Op op;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return !queue_.empty() || closing_; });
      if (queue_.empty()) break;  // closing, nothing left
      op = std::move(queue_.front());
      queue_.pop_front();
    }
    Outcome out = execute(op);
    op.done(out);
  }
  shutDown();
}

Outcome Group::execute(Op& op) {
  // Operations are numbered from 1 after the rendezvous, the same on every rank: "allReduce #12" is the 12th.
  uint64_t index = op.kind == Op::Kind::Connect ? 0 : ++opsRun_;
  Outcome out;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!broken_.kind.empty()) {
      out.ok = false;
      out.fault = afterFailure(broken_);
      return out;
    }
  }
  try {
    if (op.kind != Op::Kind::Connect && !context_) throw FaultError({"usage", "the group is not connected", -1});
    switch (op.kind) {
      case Op::Kind::Connect: connect(); break;
      case Op::Kind::AllReduce: allReduce(op.span.data, op.span.count, op.dtype, op.reduce); break;
      case Op::Kind::AllReduceBuffers: allReduceBuffers(op.buffers, op.reduce); break;
      case Op::Kind::Broadcast: broadcast(op.span.data, op.span.count, op.root); break;
      case Op::Kind::Barrier: barrier(); break;
    }
    return out;
  } catch (const FaultError& e) {
    out.fault = e.fault;
  } catch (const std::exception& e) {
    DiagnoseRequest req;
    req.selfRank = config_.rank;
    req.worldSize = config_.worldSize;
    req.silentAfterMs = 3 * config_.heartbeatMs;
    req.what = describe(op, index);
    req.cause = e.what();
    req.rendezvous = op.kind == Op::Kind::Connect;
    req.timeoutMs = config_.timeoutMs;
    req.pollMs = 2 * pollMs();
    out.fault = diagnose(store_, req);
  }
  reportFault(store_, out.fault);
  out.ok = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    broken_ = out.fault;
  }
  if (server_) awaitOthersFailing(store_, config_.timeoutMs, 3 * config_.heartbeatMs, pollMs());
  // Closing the pairs now makes every rank still waiting on this one fail at once instead of at its own timeout.
  context_.reset();
  device_.reset();
  return out;
}

std::string Group::describe(const Op& op, uint64_t index) const {
  std::string n = " #" + std::to_string(index);
  const char* type = op.dtype == DType::F32 ? "f32" : "f64";
  switch (op.kind) {
    case Op::Kind::Connect:
      return "the rendezvous of " + std::to_string(config_.worldSize) + " ranks at " + store_.endpoint();
    case Op::Kind::AllReduce:
      return "allReduce" + n + " (" + reduceName(op.reduce) + ", " + std::to_string(op.span.count) + " " + type + ")";
    case Op::Kind::AllReduceBuffers: {
      size_t total = 0;
      for (const HostSpan& b : op.buffers) total += b.count;
      return "allReduceBuffers" + n + " (" + reduceName(op.reduce) + ", " + std::to_string(op.buffers.size()) +
             " buffers, " + std::to_string(total) + " f32)";
    }
    case Op::Kind::Broadcast:
      return "broadcast" + n + " (" + std::to_string(op.span.count) + " bytes from rank " + std::to_string(op.root) + ")";
    case Op::Kind::Barrier:
      return "barrier" + n;
  }
  return "an operation" + n;
}

void Group::connect() {
  Deadline deadline = deadlineIn(config_.timeoutMs);
  try {
    store_.connect(deadline);
  } catch (const StoreUnreachable& e) {
    throw FaultError({"store-gone",
                      "no store answered at " + store_.endpoint() + " within " + seconds(config_.timeoutMs) + " (" +
                          e.what() + "): rank 0, which serves it, never started, or MASTER_ADDR/MASTER_PORT point " +
                          "elsewhere",
                      0});
  }
  try {
    store_.hello(config_.rank, config_.worldSize, static_cast<uint32_t>(getpid()), hostName());
  } catch (const StoreRefused& e) {
    throw FaultError({"usage", std::string("rank 0's store refused this rank: ") + e.what(), -1});
  }
  store_.startHeartbeat(config_.heartbeatMs);

  // Every rank has said Hello before Gloo starts: a missing rank is then named as such, not as a Gloo key.
  for (;;) {
    std::pair<int, int> joined = store_.joined();
    if (joined.first == config_.worldSize) break;
    if (joined.second > 0 || msLeft(deadline) <= 0) throw std::runtime_error(joined.second > 0 ? "a rank left" : "timed out");
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<long long>(pollMs(), msLeft(deadline))));
  }

  gloo::transport::tcp::attr attr;
  if (!config_.iface.empty()) attr.iface = config_.iface;
  else attr.hostname = store_.localAddress();
  device_ = gloo::transport::tcp::CreateDevice(attr);
  context_ = std::make_shared<gloo::rendezvous::Context>(config_.rank, config_.worldSize);
  context_->setTimeout(std::chrono::milliseconds(config_.timeoutMs));
  GlooStore store(store_, "gloo/", deadline, pollMs());
  context_->connectFullMesh(store, device_);
}

void Group::allReduce(void* data, size_t count, DType dtype, ReduceOp reduce) {
  if (count == 0) return;  // every rank has the same count: nothing to exchange
  gloo::AllreduceOptions opts(context_);
  if (dtype == DType::F32) {
    opts.setOutput(static_cast<float*>(data), count);
    opts.setReduceFunction(reduceFn<float>(reduce));
  } else {
    opts.setOutput(static_cast<double*>(data), count);
    opts.setReduceFunction(reduceFn<double>(reduce));
  }
  opts.setTag(nextTag());
  opts.setTimeout(std::chrono::milliseconds(config_.timeoutMs));
  gloo::allreduce(opts);
}

void Group::allReduceBuffers(const std::vector<HostSpan>& buffers, ReduceOp reduce) {
  // Packed into one bucket: one message per bucket, not one per (often tiny) gradient.
  size_t total = 0;
  for (const HostSpan& b : buffers) total += b.count;
  if (total == 0) return;
  bucket_.resize(total);
  size_t at = 0;
  for (const HostSpan& b : buffers) {
    if (b.count) std::memcpy(bucket_.data() + at, b.data, b.count * sizeof(float));
    at += b.count;
  }
  allReduce(bucket_.data(), total, DType::F32, reduce);
  at = 0;
  for (const HostSpan& b : buffers) {
    if (b.count) std::memcpy(b.data, bucket_.data() + at, b.count * sizeof(float));
    at += b.count;
  }
  // A bucket far bigger than the next ones would otherwise stay allocated for the whole run.
  if (bucket_.capacity() > (64u << 20)) std::vector<float>().swap(bucket_);
}

void Group::broadcast(void* data, size_t bytes, int root) {
  if (bytes == 0) return;
  gloo::BroadcastOptions opts(context_);
  opts.setOutput(static_cast<uint8_t*>(data), bytes);
  opts.setRoot(root);
  opts.setTag(nextTag());
  opts.setTimeout(std::chrono::milliseconds(config_.timeoutMs));
  gloo::broadcast(opts);
}

void Group::barrier() {
  gloo::BarrierOptions opts(context_);
  opts.setTag(nextTag());
  opts.setTimeout(std::chrono::milliseconds(config_.timeoutMs));
  gloo::barrier(opts);
}

void Group::shutDown() {
  context_.reset();
  device_.reset();
  bool healthy;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    healthy = broken_.kind.empty();
  }
  if (server_ && healthy) {
    // Rank 0 serves the store: it stays up (bounded) until the others have left, so a rank finishing its last
    // operation a moment later does not find the store gone and report rank 0 as dead.
    awaitOthersLeaving(store_, config_.timeoutMs, pollMs());
  }
  store_.goodbye();
  if (server_) server_->stop();
}

}  // namespace dalle_collective
