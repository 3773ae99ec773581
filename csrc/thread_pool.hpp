// One small thread pool shared by every kernel.
//
// The caller of parallel_for works on its own job too, so a job always finishes even
// when every worker is busy with another caller's job (many Python threads may call
// kernels at once with the GIL released) or when parallel_for is nested.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

namespace samrt {

class ThreadPool {
 public:
  // n_threads counts the calling thread: a pool of 1 runs everything inline.
  explicit ThreadPool(std::size_t n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Runs fn(i) for every i in [0, n), in any order and on any thread, and returns when
  // all calls have returned. The first exception thrown by fn is rethrown here (the
  // remaining indices are skipped).
  void parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn);

  std::size_t num_threads() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The process-wide pool. Its size comes from SAMRT_NUM_THREADS, else the number of
// hardware threads. The shared_ptr keeps a pool alive for a caller while
// set_num_threads replaces it.
std::shared_ptr<ThreadPool> default_pool();
void set_num_threads(std::size_t n_threads);

// Convenience: default_pool()->parallel_for(n, fn).
void parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn);

}  // namespace samrt
