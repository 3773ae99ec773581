#include "bindings.hpp"
#include "heap.hpp"
#include "thread_pool.hpp"

#include <stdexcept>

PYBIND11_MODULE(_core, m) {
  m.doc() = "samrt's C++ kernels: RLE, NMS, small-region cleanup, logits post-processing";
  m.attr("__version__") = SAMRT_VERSION;

  m.def(
      "set_num_threads",
      [](long n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
        samrt::set_num_threads(static_cast<std::size_t>(n));
      },
      py::arg("n"), "Resize the thread pool shared by all kernels (default: SAMRT_NUM_THREADS or all cores).");
  m.def(
      "get_num_threads", [] { return samrt::default_pool()->num_threads(); },
      "Number of threads the kernels use, the calling thread included.");

  m.def(
      "release_free_heap_memory",
      [] {
        // Nothing Python-owned is touched: trimming may take a while on a large heap.
        py::gil_scoped_release release;
        return samrt::release_free_heap_memory();
      },
      "Give memory freed by any thread back to the OS (glibc malloc_trim); False where "
      "unsupported or nothing was returned.");

  register_rle(m);
  register_nms(m);
  register_regions(m);
  register_postprocess(m);
}
