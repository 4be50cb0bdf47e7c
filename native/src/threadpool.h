// A persistent thread pool for the CPU kernels. Sized by setThreads (--threads / DALLE_THREADS).
// The interface is a plain function pointer plus context so that ISA-specific translation units never instantiate
// std templates shared with baseline code (see binding.gyp).
#pragma once
#include <cstdint>

namespace dalle {

typedef void (*RangeFn)(void* ctx, int64_t begin, int64_t end);
typedef void (*ThreadFn)(void* ctx, int thread_index, int thread_count);

int num_threads();
void set_num_threads(int n);

// Splits [0, n) into at most num_threads() contiguous chunks of at least `grain` items and runs fn on each in
// parallel; blocks until all are done. The split depends only on n, grain and the thread count.
// Called from inside a pool thread it runs serially (no nested parallelism).
void parallel_for_raw(int64_t n, int64_t grain, RangeFn fn, void* ctx);

// Runs fn(ctx, i, count) once on each of `count` = num_threads() threads (i = 0 is the caller).
void parallel_run_raw(ThreadFn fn, void* ctx);

// Convenience wrappers for baseline (non-ISA) code: f(begin, end) and f(thread_index, thread_count).
template <class F>
inline void parallel_for(int64_t n, int64_t grain, F&& f) {
  parallel_for_raw(
      n, grain, [](void* c, int64_t b, int64_t e) { (*static_cast<F*>(c))(b, e); }, &f);
}
template <class F>
inline void parallel_run(F&& f) {
  parallel_run_raw([](void* c, int i, int n) { (*static_cast<F*>(c))(i, n); }, &f);
}

}  // namespace dalle
