// Fuzzes samrt's thread pool (csrc/thread_pool.hpp) with sequences of operations drawn
// from the fuzz bytes: parallel_for of 0..300 indices, nested parallel_for, a failing
// index whose exception must reach the caller, set_num_threads (also from inside a
// running job), private pools, and a second caller thread using the shared pool at the
// same time. Every index must run exactly once (at most once after a failure, and the
// failing one must have run); a lost wake-up shows up as a libFuzzer timeout.
#include <fuzzer/FuzzedDataProvider.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fuzz_check.hpp"
#include "thread_pool.hpp"

namespace {

struct Boom : std::runtime_error {
  Boom() : std::runtime_error("boom") {}
};

// Runs n indices on `pool` (null: the shared pool); fail_at < n makes that index throw.
void counted_run(samrt::ThreadPool* pool, std::size_t n, std::size_t fail_at, std::size_t nested,
                 bool resize_inside) {
  std::vector<std::atomic<int>> ran(n * (nested + 1));
  std::atomic<bool> resized{false};
  auto body = [&](std::size_t i) {
    ran[i * (nested + 1)].fetch_add(1);
    if (resize_inside && !resized.exchange(true)) samrt::set_num_threads(1 + i % 3);
    if (nested > 0) {
      samrt::parallel_for(nested, [&](std::size_t j) { ran[i * (nested + 1) + 1 + j].fetch_add(1); });
    }
    if (i == fail_at) throw Boom();
  };
  bool threw = false;
  try {
    if (pool != nullptr) {
      pool->parallel_for(n, body);
    } else {
      samrt::parallel_for(n, body);
    }
  } catch (const Boom&) {
    threw = true;
  }
  FUZZ_CHECK(threw == (fail_at < n));
  for (std::size_t i = 0; i < n; ++i) {
    const int count = ran[i * (nested + 1)].load();
    if (fail_at < n) {
      FUZZ_CHECK(count <= 1);
      if (i == fail_at) FUZZ_CHECK(count == 1);
    } else {
      FUZZ_CHECK(count == 1);
    }
    // A started index runs its nested loop completely (unless it is the failing one,
    // which also completes it: the throw comes after).
    for (std::size_t j = 0; j < nested; ++j) FUZZ_CHECK(ran[i * (nested + 1) + 1 + j].load() == count);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  FuzzedDataProvider data(bytes, size);
  for (int op = 0; op < 8 && data.remaining_bytes() > 0; ++op) {
    const std::size_t n = data.ConsumeIntegralInRange<std::size_t>(0, 300);
    const std::size_t fail_at = data.ConsumeBool() ? data.ConsumeIntegralInRange<std::size_t>(0, n) : n;
    const std::size_t nested = data.ConsumeBool() ? data.ConsumeIntegralInRange<std::size_t>(0, 8) : 0;
    switch (data.ConsumeIntegralInRange<int>(0, 4)) {
      case 0:
        counted_run(nullptr, n, fail_at, nested, false);
        break;
      case 1:
        counted_run(nullptr, n, fail_at, nested, /*resize_inside=*/n > 0);
        break;
      case 2: {
        samrt::ThreadPool pool(data.ConsumeIntegralInRange<std::size_t>(0, 4));
        counted_run(&pool, n, fail_at, nested, false);
        break;
      }
      case 3:
        samrt::set_num_threads(data.ConsumeIntegralInRange<std::size_t>(0, 4));
        FUZZ_CHECK(samrt::default_pool()->num_threads() >= 1);
        break;
      default: {
        // Two callers on the shared pool at once, one of them replacing it meanwhile.
        const bool resize = data.ConsumeBool();
        std::thread other([=] { counted_run(nullptr, n, fail_at, nested, resize); });
        counted_run(nullptr, n / 2 + 1, n, nested, false);
        other.join();
        break;
      }
    }
  }
  return 0;
}
