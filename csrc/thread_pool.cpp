#include "thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace samrt {
namespace {

// One parallel_for call. Threads claim indices from `next` until none is left.
struct Job {
  std::size_t n = 0;
  const std::function<void(std::size_t)>* fn = nullptr;
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};

  std::mutex mutex;
  std::condition_variable finished_cv;
  std::size_t finished = 0;  // indices claimed and run (or skipped after a failure)
  std::exception_ptr error;

  // Claims and runs indices until the job is exhausted.
  void work() {
    std::size_t ran = 0;
    for (std::size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      ++ran;
      if (failed.load(std::memory_order_relaxed)) continue;
      try {
        (*fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
    if (ran == 0) return;
    std::lock_guard<std::mutex> lock(mutex);
    finished += ran;
    if (finished == n) finished_cv.notify_all();
  }
};

}  // namespace

struct ThreadPool::Impl {
  std::size_t n_threads;
  std::vector<std::thread> workers;
  std::mutex mutex;
  std::condition_variable work_cv;
  std::deque<std::shared_ptr<Job>> queue;
  bool stopping = false;

  void worker_loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex);
        work_cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping && queue.empty()) return;
        job = std::move(queue.front());
        queue.pop_front();
      }
      job->work();
    }
  }
};

ThreadPool::ThreadPool(std::size_t n_threads) : impl_(std::make_unique<Impl>()) {
  impl_->n_threads = std::max<std::size_t>(1, n_threads);
  for (std::size_t i = 1; i < impl_->n_threads; ++i) {
    impl_->workers.emplace_back([impl = impl_.get()] { impl->worker_loop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->work_cv.notify_all();
  for (auto& t : impl_->workers) t.join();
}

std::size_t ThreadPool::num_threads() const { return impl_->n_threads; }

void ThreadPool::parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn) {
  if (n == 0) return;
  auto job = std::make_shared<Job>();
  job->n = n;
  job->fn = &fn;
  const std::size_t helpers = std::min(impl_->workers.size(), n - 1);
  if (helpers > 0) {
    {
      std::lock_guard<std::mutex> lock(impl_->mutex);
      for (std::size_t i = 0; i < helpers; ++i) impl_->queue.push_back(job);
    }
    impl_->work_cv.notify_all();
  }
  job->work();
  std::unique_lock<std::mutex> lock(job->mutex);
  job->finished_cv.wait(lock, [&] { return job->finished == n; });
  if (job->error) std::rethrow_exception(job->error);
}

namespace {

std::size_t threads_from_environment() {
  if (const char* env = std::getenv("SAMRT_NUM_THREADS")) {
    try {
      const long value = std::stol(env);
      if (value > 0) return static_cast<std::size_t>(value);
    } catch (const std::exception&) {
      // An unparsable value falls through to the hardware default.
    }
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

std::mutex g_pool_mutex;
std::shared_ptr<ThreadPool> g_pool;

}  // namespace

std::shared_ptr<ThreadPool> default_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool) g_pool = std::make_shared<ThreadPool>(threads_from_environment());
  return g_pool;
}

void set_num_threads(std::size_t n_threads) {
  auto fresh = std::make_shared<ThreadPool>(n_threads);
  std::shared_ptr<ThreadPool> old;
  {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    old = std::move(g_pool);
    g_pool = std::move(fresh);
  }
  // `old` is joined here, outside the lock, once no caller still holds it.
}

void parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn) {
  default_pool()->parallel_for(n, fn);
}

}  // namespace samrt
