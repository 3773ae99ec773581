#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "postprocess.hpp"

namespace {

using Size2 = std::pair<long, long>;

int to_int(long value, const char* name) {
  if (value < 0 || value > 0x7FFFFFFFL) {
    throw std::invalid_argument(std::string(name) + " out of range: " + std::to_string(value));
  }
  return static_cast<int>(value);
}

// low_res must be M x src_h x src_w; sizes are (height, width).
samrt::UpsampleGeometry geometry_of(const carray<float>& low_res, const Size2& input_size, const Size2& original_size,
                                    long padded_size) {
  if (low_res.ndim() != 3) {
    throw std::invalid_argument("low_res must have 3 dimensions (masks, height, width), got " +
                                std::to_string(low_res.ndim()));
  }
  samrt::UpsampleGeometry g;
  g.src_h = to_int(static_cast<long>(low_res.shape(1)), "low_res height");
  g.src_w = to_int(static_cast<long>(low_res.shape(2)), "low_res width");
  g.padded_size = to_int(padded_size, "padded_size");
  g.input_h = to_int(input_size.first, "input height");
  g.input_w = to_int(input_size.second, "input width");
  g.out_h = to_int(original_size.first, "original height");
  g.out_w = to_int(original_size.second, "original width");
  samrt::check_geometry(g);
  return g;
}

void check_finite(double value, const char* name) {
  if (!std::isfinite(value)) throw std::invalid_argument(std::string(name) + " must be finite, got " + std::to_string(value));
}

py::array_t<float> upsample_logits(const carray<float>& low_res, const Size2& input_size, const Size2& original_size,
                                   long padded_size) {
  const samrt::UpsampleGeometry g = geometry_of(low_res, input_size, original_size, padded_size);
  const auto n_masks = static_cast<std::size_t>(low_res.shape(0));
  py::array_t<float> out({static_cast<py::ssize_t>(n_masks), static_cast<py::ssize_t>(g.out_h),
                          static_cast<py::ssize_t>(g.out_w)});
  const float* src = low_res.data();
  float* dst = out.mutable_data();
  // Safe without the GIL: the kernel reads and writes only these two buffers, which the
  // arrays held by this frame keep alive, and touches no Python object.
  py::gil_scoped_release release;
  samrt::upsample_logits(src, n_masks, g, dst);
  return out;
}

py::array_t<bool> upsample_masks(const carray<float>& low_res, const Size2& input_size, const Size2& original_size,
                                 long padded_size, double threshold) {
  const samrt::UpsampleGeometry g = geometry_of(low_res, input_size, original_size, padded_size);
  check_finite(threshold, "threshold");
  const auto n_masks = static_cast<std::size_t>(low_res.shape(0));
  py::array_t<bool> out({static_cast<py::ssize_t>(n_masks), static_cast<py::ssize_t>(g.out_h),
                         static_cast<py::ssize_t>(g.out_w)});
  const float* src = low_res.data();
  // numpy bools are single bytes holding 0 or 1, which is what the kernel writes.
  auto* dst = reinterpret_cast<std::uint8_t*>(out.mutable_data());
  // Safe without the GIL: the kernel reads and writes only these two buffers, which the
  // arrays held by this frame keep alive, and touches no Python object.
  py::gil_scoped_release release;
  samrt::upsample_masks(src, n_masks, g, static_cast<float>(threshold), dst);
  return out;
}

py::tuple mask_stats(const carray<float>& low_res, const Size2& input_size, const Size2& original_size,
                     long padded_size, double threshold, double stability_offset, const Size2& crop_origin,
                     const Size2& image_size, std::optional<double> rle_min_stability) {
  const samrt::UpsampleGeometry g = geometry_of(low_res, input_size, original_size, padded_size);
  check_finite(threshold, "threshold");
  check_finite(stability_offset, "stability_offset");
  samrt::MaskStatsOptions options;
  // Thresholds are formed in double and rounded once, as torch rounds a Python scalar
  // compared with a float32 tensor.
  options.threshold = static_cast<float>(threshold);
  options.intersection_threshold = static_cast<float>(threshold + stability_offset);
  options.union_threshold = static_cast<float>(threshold - stability_offset);
  options.crop_x0 = to_int(crop_origin.first, "crop x0");
  options.crop_y0 = to_int(crop_origin.second, "crop y0");
  options.image_h = to_int(image_size.first, "image height");
  options.image_w = to_int(image_size.second, "image width");
  if (rle_min_stability) {
    if (std::isnan(*rle_min_stability)) throw std::invalid_argument("rle_min_stability must not be NaN");
    options.filter_rle = true;
    options.rle_min_stability = static_cast<float>(*rle_min_stability);
  }

  const auto n_masks = static_cast<std::size_t>(low_res.shape(0));
  const auto m = static_cast<py::ssize_t>(n_masks);
  py::array_t<std::int64_t> areas(m);
  py::array_t<std::int64_t> boxes({m, static_cast<py::ssize_t>(4)});
  py::array_t<float> stability(m);
  std::vector<std::vector<std::uint32_t>> counts(n_masks);
  std::vector<std::uint8_t> has_rle(n_masks);
  {
    const float* src = low_res.data();
    std::int64_t* areas_out = areas.mutable_data();
    std::int64_t* boxes_out = boxes.mutable_data();
    float* stability_out = stability.mutable_data();
    // Safe without the GIL: the kernel touches only these buffers (arrays held by this
    // frame and C++ vectors), never a Python object.
    py::gil_scoped_release release;
    samrt::mask_stats(src, n_masks, g, options, areas_out, boxes_out, stability_out, counts.data(), has_rle.data());
  }
  py::list rles(m);
  for (std::size_t i = 0; i < n_masks; ++i) {
    if (has_rle[i] == 0) {
      rles[i] = py::none();
      continue;
    }
    py::array_t<std::uint32_t> array(static_cast<py::ssize_t>(counts[i].size()));
    std::copy(counts[i].begin(), counts[i].end(), array.mutable_data());
    rles[i] = std::move(array);
    std::vector<std::uint32_t>().swap(counts[i]);
  }
  return py::make_tuple(areas, boxes, stability, rles);
}

}  // namespace

void register_postprocess(py::module_& m) {
  m.def("upsample_logits", &upsample_logits, py::arg("low_res"), py::arg("input_size"), py::arg("original_size"),
        py::arg("padded_size"),
        "SAM's postprocess_masks: M x h x w float32 logits -> M x H x W float32 upsampled logits.");
  m.def("upsample_masks", &upsample_masks, py::arg("low_res"), py::arg("input_size"), py::arg("original_size"),
        py::arg("padded_size"), py::arg("threshold"),
        "postprocess_masks(low_res) > threshold as an M x H x W bool array, without float intermediates.");
  m.def("mask_stats", &mask_stats, py::arg("low_res"), py::arg("input_size"), py::arg("original_size"),
        py::arg("padded_size"), py::arg("threshold"), py::arg("stability_offset"), py::arg("crop_origin"),
        py::arg("image_size"), py::arg("rle_min_stability") = py::none(),
        "Areas, XYXY boxes, stability scores and uncompressed COCO RLE counts (None where filtered) of the "
        "thresholded upsampled masks, in one pass.");
}
