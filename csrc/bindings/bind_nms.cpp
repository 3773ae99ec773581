#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "nms.hpp"

namespace {

template <typename T>
bool has_nan(const T* values, std::size_t count) {
  for (std::size_t k = 0; k < count; ++k) {
    if (std::isnan(values[k])) return true;
  }
  return false;
}

template <typename T>
py::array_t<std::int64_t> run_batched_nms(const carray<T>& boxes, const carray<double>& scores,
                                          const carray<std::int64_t>& idxs, double iou_threshold) {
  if (boxes.ndim() != 2 || boxes.shape(1) != 4) {
    throw std::invalid_argument("batched_nms: boxes must have shape [N, 4], got ndim " +
                                std::to_string(boxes.ndim()));
  }
  const auto n = static_cast<std::size_t>(boxes.shape(0));
  if (scores.ndim() != 1 || static_cast<std::size_t>(scores.shape(0)) != n) {
    throw std::invalid_argument("batched_nms: scores must have shape [N] with N = " + std::to_string(n) +
                                " (the number of boxes)");
  }
  if (idxs.ndim() != 1 || static_cast<std::size_t>(idxs.shape(0)) != n) {
    throw std::invalid_argument("batched_nms: idxs must have shape [N] with N = " + std::to_string(n) +
                                " (the number of boxes)");
  }
  if (std::isnan(iou_threshold)) throw std::invalid_argument("batched_nms: iou_threshold is NaN");
  if (has_nan(scores.data(), n)) throw std::invalid_argument("batched_nms: scores contain NaN");
  if (has_nan(boxes.data(), 4 * n)) throw std::invalid_argument("batched_nms: boxes contain NaN");

  std::vector<std::int64_t> keep(n);
  std::size_t kept = 0;
  {
    // Safe without the GIL: the kernel reads the three converted arrays, which this frame
    // owns, and writes only to `keep`.
    py::gil_scoped_release release;
    kept = samrt::batched_nms(n, boxes.data(), scores.data(), idxs.data(), iou_threshold, keep.data());
  }
  py::array_t<std::int64_t> out(static_cast<py::ssize_t>(kept));
  if (kept > 0) std::memcpy(out.mutable_data(), keep.data(), kept * sizeof(std::int64_t));
  return out;
}

}  // namespace

void register_nms(py::module_& m) {
  m.def(
      "batched_nms",
      [](const py::array& boxes, const carray<double>& scores, const carray<std::int64_t>& idxs,
         double iou_threshold) {
        // float32 boxes keep their precision (torchvision computes IoU in the box dtype);
        // anything else is computed in float64.
        if (boxes.dtype().is(py::dtype::of<float>())) {
          return run_batched_nms(carray<float>(boxes), scores, idxs, iou_threshold);
        }
        return run_batched_nms(carray<double>(boxes), scores, idxs, iou_threshold);
      },
      py::arg("boxes"), py::arg("scores"), py::arg("idxs"), py::arg("iou_threshold"),
      "Kept box indices, best first, as torchvision.ops.batched_nms on CPU (see samrt.masks).");
}
