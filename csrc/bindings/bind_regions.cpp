#include <cmath>
#include <stdexcept>
#include <initializer_list>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "regions.hpp"

namespace {

samrt::RegionMode parse_mode(const std::string& mode) {
  if (mode == "holes") return samrt::RegionMode::kHoles;
  if (mode == "islands") return samrt::RegionMode::kIslands;
  throw std::invalid_argument("remove_small_regions: mode must be 'holes' or 'islands', got '" + mode + "'");
}

void check_area_thresh(double area_thresh) {
  if (std::isnan(area_thresh) || area_thresh < 0) {
    throw std::invalid_argument("remove_small_regions: area_thresh must be >= 0, got " +
                                std::to_string(area_thresh));
  }
}

void check_image_size(py::ssize_t height, py::ssize_t width, const char* argument) {
  if (height <= 0 || width <= 0) {
    throw std::invalid_argument(std::string("remove_small_regions: ") + argument +
                                " must have non-zero height and width, got " + std::to_string(height) + "x" +
                                std::to_string(width));
  }
  if (static_cast<std::size_t>(height) * static_cast<std::size_t>(width) > samrt::kMaxRegionPixels) {
    throw std::invalid_argument(std::string("remove_small_regions: ") + argument + " has more than 2^31 - 1 pixels");
  }
}

py::array new_bool_array(std::initializer_list<py::ssize_t> shape) {
  return py::array(py::dtype("bool"), std::vector<py::ssize_t>(shape));
}

}  // namespace

void register_regions(py::module_& m) {
  m.def(
      "remove_small_regions",
      [](const carray<std::uint8_t>& mask, double area_thresh, const std::string& mode) -> py::tuple {
        if (mask.ndim() != 2) {
          throw std::invalid_argument("remove_small_regions: mask must be 2-D [H, W], got ndim " +
                                      std::to_string(mask.ndim()));
        }
        const py::ssize_t height = mask.shape(0), width = mask.shape(1);
        check_image_size(height, width, "mask");
        check_area_thresh(area_thresh);
        const samrt::RegionMode region_mode = parse_mode(mode);

        py::array out = new_bool_array({height, width});
        auto* out_bytes = static_cast<std::uint8_t*>(out.mutable_data());  // numpy bools are bytes 0/1
        bool changed = false;
        {
          // Safe without the GIL: `mask` and `out` are owned by this frame and nothing else
          // can reach `out` yet.
          py::gil_scoped_release release;
          changed = samrt::remove_small_regions(mask.data(), static_cast<std::size_t>(height),
                                                static_cast<std::size_t>(width), area_thresh, region_mode,
                                                out_bytes);
        }
        if (!changed) return py::make_tuple(py::none(), false);
        return py::make_tuple(out, true);
      },
      py::arg("mask"), py::arg("area_thresh"), py::arg("mode"),
      "(cleaned bool mask, True), or (None, False) when no region is small; see samrt.masks.");

  m.def(
      "remove_small_regions_batch",
      [](const carray<std::uint8_t>& masks, double area_thresh, const std::string& mode) -> py::tuple {
        if (masks.ndim() != 3) {
          throw std::invalid_argument("remove_small_regions_batch: masks must be 3-D [N, H, W], got ndim " +
                                      std::to_string(masks.ndim()));
        }
        const py::ssize_t n = masks.shape(0), height = masks.shape(1), width = masks.shape(2);
        if (n > 0) check_image_size(height, width, "masks");
        check_area_thresh(area_thresh);
        const samrt::RegionMode region_mode = parse_mode(mode);

        py::array out = new_bool_array({n, height, width});
        py::array changed = new_bool_array({n});
        auto* out_bytes = static_cast<std::uint8_t*>(out.mutable_data());
        auto* changed_bytes = static_cast<std::uint8_t*>(changed.mutable_data());
        if (n > 0) {
          // Safe without the GIL: the input and both outputs are owned by this frame and
          // nothing else can reach the outputs yet.
          py::gil_scoped_release release;
          samrt::remove_small_regions_batch(masks.data(), static_cast<std::size_t>(n),
                                            static_cast<std::size_t>(height), static_cast<std::size_t>(width),
                                            area_thresh, region_mode, out_bytes, changed_bytes);
        }
        return py::make_tuple(out, changed);
      },
      py::arg("masks"), py::arg("area_thresh"), py::arg("mode"),
      "(cleaned bool masks [N, H, W], changed bool [N]); see samrt.masks.");
}
