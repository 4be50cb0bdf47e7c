// Persistent workers that wait on a generation counter. A parallel region costs a wake-up (workers spin briefly
// before sleeping, so back-to-back kernels do not pay a futex round trip each) and a join.
#include "threadpool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#define DALLE_PAUSE() _mm_pause()
#else
#define DALLE_PAUSE() ((void)0)
#endif

namespace dalle {
namespace {

// How long a waiting thread spins before it sleeps on a condition variable: long enough to catch the next kernel of a
// step (back-to-back regions are microseconds apart), short enough not to starve other work on a busy machine.
constexpr std::chrono::microseconds kSpin(50);

thread_local bool in_pool_thread = false;

class ThreadPool {
 public:
  ~ThreadPool() { resize(1); }

  int size() const { return size_; }

  void resize(int n) {
    if (n < 1) n = 1;
    if (n == size_ && (int)workers_.size() == n - 1) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
    size_ = n;
    // Each worker starts from the generation current now: reading it later, in the new thread, could miss a region
    // that the caller started in between, and the caller would wait for that worker forever.
    uint64_t start = generation_.load();
    for (int i = 1; i < n; i++) workers_.emplace_back([this, i, start] { worker_loop(i, start); });
  }

  void run(ThreadFn fn, void* ctx) {
    if (size_ == 1 || in_pool_thread) {
      fn(ctx, 0, 1);
      return;
    }
    std::lock_guard<std::mutex> region(region_mu_);  // one parallel region at a time
    fn_ = fn;
    ctx_ = ctx;
    error_ = nullptr;
    pending_.store(size_ - 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    in_pool_thread = true;
    run_guarded(0);
    in_pool_thread = false;
    // Always wait for every worker, even when the caller's part threw: they still use ctx, which lives on our stack.
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; spin++) {
      if ((spin & 63) != 0 || std::chrono::steady_clock::now() < spin_until) {
        DALLE_PAUSE();
      } else {
        std::unique_lock<std::mutex> lock(done_mu_);
        done_cv_.wait(lock, [this] { return pending_.load() == 0; });
      }
    }
    if (error_) std::rethrow_exception(error_);  // the first failure of any thread, on the calling thread
  }

 private:
  void worker_loop(int index, uint64_t seen) {
    in_pool_thread = true;
#if defined(__linux__)
    pthread_setname_np(pthread_self(), "dalle-pool");  // visible in top -H, perf and /proc/PID/task/*/comm
#endif
    for (;;) {
      // Spin a bounded time, not a count: PAUSE costs anywhere from 10 to 140 cycles across CPUs, and a long spin
      // steals the core from the caller when the machine is oversubscribed.
      const auto spin_until = std::chrono::steady_clock::now() + kSpin;
      for (int spin = 0; generation_.load(std::memory_order_acquire) == seen; spin++) {
        if ((spin & 63) == 0 && std::chrono::steady_clock::now() >= spin_until) break;
        DALLE_PAUSE();
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_.load() != seen; });
      }
      seen = generation_.load();
      if (stop_) return;
      run_guarded(index);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(done_mu_);
        done_cv_.notify_one();
      }
    }
  }

  // A C++ exception must not leave a pool thread (std::terminate would abort the process): keep the first one.
  void run_guarded(int index) {
    try {
      fn_(ctx_, index, size_);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
  }

  int size_ = 1;
  std::mutex error_mu_;
  std::exception_ptr error_;
  std::vector<std::thread> workers_;
  std::mutex mu_, done_mu_, region_mu_;
  std::condition_variable cv_, done_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
  ThreadFn fn_ = nullptr;
  void* ctx_ = nullptr;
};

int default_threads() {
  if (const char* env = std::getenv("DALLE_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? (int)hw : 1;
}

ThreadPool& pool() {
  static ThreadPool* p = [] {
    auto* tp = new ThreadPool();  // never destroyed: workers must outlive static destructors of other units
    tp->resize(default_threads());
    return tp;
  }();
  return *p;
}

struct ForCtx {
  int64_t n, chunk;
  RangeFn fn;
  void* ctx;
};

}  // namespace

int num_threads() { return pool().size(); }

void set_num_threads(int n) {
  if (n <= 0) n = default_threads();
  pool().resize(n);
}

void parallel_run_raw(ThreadFn fn, void* ctx) { pool().run(fn, ctx); }

void parallel_for_raw(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t threads = pool().size();
  int64_t max_chunks = (n + grain - 1) / grain;
  if (threads > max_chunks) threads = max_chunks;
  if (threads <= 1 || in_pool_thread) {
    fn(ctx, 0, n);
    return;
  }
  ForCtx fc{n, (n + threads - 1) / threads, fn, ctx};
  pool().run(
      [](void* c, int i, int) {
        auto* f = static_cast<ForCtx*>(c);
        int64_t b = i * f->chunk, e = b + f->chunk < f->n ? b + f->chunk : f->n;
        if (b < e) f->fn(f->ctx, b, e);
      },
      &fc);
}

}  // namespace dalle
