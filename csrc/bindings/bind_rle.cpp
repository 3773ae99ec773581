#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "rle.hpp"

namespace {

using samrt::RleCounts;
using samrt::RleSize;

std::string dtype_name(const py::array& array) { return py::str(array.dtype()).cast<std::string>(); }

bool is_integer_kind(char kind) { return kind == 'i' || kind == 'u'; }

// Runs fn and puts the argument's name before any kernel error ("[3]: ..." becomes
// "rles[3]: ...").
template <class Fn>
void named(const std::string& name, Fn&& fn) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    throw std::invalid_argument(name + (what.rfind('[', 0) == 0 ? "" : ": ") + what);
  }
}

std::size_t checked_extent(std::int64_t value, const char* what) {
  if (value < 0) throw std::invalid_argument(std::string(what) + " must be >= 0, got " + std::to_string(value));
  return static_cast<std::size_t>(value);
}

// sizes: [n, 2] integer array of (h, w).
std::vector<RleSize> load_sizes(const py::array& sizes_in, std::size_t n, const std::string& name) {
  if (!is_integer_kind(sizes_in.dtype().kind())) {
    throw py::type_error(name + ": sizes must be integers, got dtype " + dtype_name(sizes_in));
  }
  const auto sizes = carray<std::int64_t>::ensure(sizes_in);
  if (sizes.ndim() != 2 || static_cast<std::size_t>(sizes.shape(0)) != n || sizes.shape(1) != 2) {
    throw std::invalid_argument(name + ": sizes must have shape [" + std::to_string(n) + ", 2]");
  }
  const auto view = sizes.unchecked<2>();
  std::vector<RleSize> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::string label = name + "[" + std::to_string(i) + "]";
    const auto i_signed = static_cast<py::ssize_t>(i);
    if (view(i_signed, 0) < 0 || view(i_signed, 1) < 0) {
      throw std::invalid_argument(label + ": size must be non-negative, got [" + std::to_string(view(i_signed, 0)) +
                                  ", " + std::to_string(view(i_signed, 1)) + "]");
    }
    out[i] = RleSize{static_cast<std::size_t>(view(i_signed, 0)), static_cast<std::size_t>(view(i_signed, 1))};
    named(label, [&] { samrt::rle_check_size(out[i].h, out[i].w); });
  }
  return out;
}

// Uncompressed counts: a 1-D sequence or array of integers in [0, 2^32).
RleCounts counts_from_integers(py::handle item, const std::string& label) {
  const py::array array = py::array::ensure(item);
  if (!array || array.ndim() != 1) {
    throw py::type_error(label + ": counts must be bytes or str (compressed) or a 1-D sequence of integers, got " +
                         py::str(py::type::handle_of(item)).cast<std::string>());
  }
  if (array.size() == 0) return {};
  const char kind = array.dtype().kind();
  if (!is_integer_kind(kind)) {
    throw py::type_error(label + ": counts must be integers, got dtype " + dtype_name(array));
  }
  RleCounts counts(static_cast<std::size_t>(array.size()));
  auto out_of_range = [&](std::size_t i, const std::string& value) {
    return std::invalid_argument(label + ": count " + std::to_string(i) + " is " + value + ", outside [0, 2^32)");
  };
  if (kind == 'u') {
    const auto values = carray<std::uint64_t>::ensure(array);
    const std::uint64_t* data = values.data();
    for (std::size_t i = 0; i < counts.size(); ++i) {
      if (data[i] > samrt::kRleMaxPixels) throw out_of_range(i, std::to_string(data[i]));
      counts[i] = static_cast<std::uint32_t>(data[i]);
    }
  } else {
    const auto values = carray<std::int64_t>::ensure(array);
    const std::int64_t* data = values.data();
    for (std::size_t i = 0; i < counts.size(); ++i) {
      if (data[i] < 0 || static_cast<std::uint64_t>(data[i]) > samrt::kRleMaxPixels) {
        throw out_of_range(i, std::to_string(data[i]));
      }
      counts[i] = static_cast<std::uint32_t>(data[i]);
    }
  }
  return counts;
}

// Each item is compressed counts (bytes, bytearray or str) or uncompressed counts
// (integers); every result is checked to sum to its size.
std::vector<RleCounts> load_rles(const py::list& items, const std::vector<RleSize>& sizes, const std::string& name) {
  const std::size_t n = items.size();
  if (sizes.size() != n) {
    throw std::invalid_argument(name + ": got " + std::to_string(n) + " RLEs but " + std::to_string(sizes.size()) +
                                " sizes");
  }
  std::vector<RleCounts> rles(n);
  // Compressed counts are read in place: bytes are immutable and a str keeps its UTF-8
  // form, and `held` keeps both alive. bytearrays can change, so they are copied.
  std::vector<std::string_view> compressed(n);
  std::vector<py::object> held(n);
  std::vector<std::string> copies;
  copies.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const py::handle item = items[i];
    if (PyBytes_Check(item.ptr())) {
      held[i] = py::reinterpret_borrow<py::object>(item);
      compressed[i] =
          std::string_view(PyBytes_AS_STRING(item.ptr()), static_cast<std::size_t>(PyBytes_GET_SIZE(item.ptr())));
    } else if (PyUnicode_Check(item.ptr())) {
      Py_ssize_t size = 0;
      const char* utf8 = PyUnicode_AsUTF8AndSize(item.ptr(), &size);
      if (utf8 == nullptr) throw py::error_already_set();
      held[i] = py::reinterpret_borrow<py::object>(item);
      compressed[i] = std::string_view(utf8, static_cast<std::size_t>(size));
    } else if (PyByteArray_Check(item.ptr())) {
      copies.emplace_back(py::reinterpret_borrow<py::bytearray>(item));
      compressed[i] = std::string_view(copies.back());
    } else {
      rles[i] = counts_from_integers(item, name + "[" + std::to_string(i) + "]");
    }
  }
  named(name, [&] {
    py::gil_scoped_release release;  // reads only C++ copies and immutable buffers that `held` keeps alive
    samrt::rle_decompress_batch(compressed.data(), sizes.data(), n, rles.data());
  });
  return rles;
}

std::vector<RleSize> same_sizes(std::size_t n, std::size_t h, std::size_t w) {
  return std::vector<RleSize>(n, RleSize{h, w});
}

py::list bytes_list(const std::vector<std::string>& strings) {
  py::list out(strings.size());
  for (std::size_t i = 0; i < strings.size(); ++i) out[i] = py::bytes(strings[i]);
  return out;
}

py::list encode(py::array masks) {
  const py::dtype dtype = masks.dtype();
  if (!((dtype.kind() == 'b' || dtype.kind() == 'u') && dtype.itemsize() == 1)) {
    throw py::type_error("masks must have dtype bool or uint8, got " + dtype_name(masks));
  }
  if (masks.ndim() != 3) {
    throw std::invalid_argument("masks must be [N, H, W], got " + std::to_string(masks.ndim()) + " dimension(s)");
  }
  if (dtype.kind() == 'b') masks = masks.attr("view")(py::dtype::of<std::uint8_t>());
  const auto n = static_cast<std::size_t>(masks.shape(0));
  const auto h = static_cast<std::size_t>(masks.shape(1));
  const auto w = static_cast<std::size_t>(masks.shape(2));
  named("masks", [&] { samrt::rle_check_size(h, w); });

  // Fortran-ordered masks (pycocotools' layout) are already in run order: read as is.
  const auto stride = [&](py::ssize_t axis) { return masks.strides(axis); };
  const auto pixels = static_cast<py::ssize_t>(h * w);
  const bool column_major = !(masks.flags() & py::array::c_style) && (h <= 1 || stride(1) == 1) &&
                            (w <= 1 || stride(2) == static_cast<py::ssize_t>(h)) && (n <= 1 || stride(0) == pixels);
  const py::array dense = column_major ? masks : py::array(carray<std::uint8_t>::ensure(masks));
  const auto* data = static_cast<const std::uint8_t*>(dense.data());

  std::vector<std::string> strings(n);
  {
    py::gil_scoped_release release;  // `dense` keeps the buffer alive; the kernel only reads it
    samrt::rle_encode_compressed_batch(data, n, h, w, column_major, strings.data());
  }
  return bytes_list(strings);
}

py::array_t<bool> decode(const py::list& rles, std::int64_t h_in, std::int64_t w_in) {
  const std::size_t h = checked_extent(h_in, "h"), w = checked_extent(w_in, "w");
  named("rles", [&] { samrt::rle_check_size(h, w); });
  const std::vector<RleCounts> counts = load_rles(rles, same_sizes(rles.size(), h, w), "rles");
  py::array_t<bool> out({counts.size(), h, w});
  auto* data = reinterpret_cast<std::uint8_t*>(out.mutable_data());
  {
    py::gil_scoped_release release;  // `out` is ours, allocated above; counts are C++ copies
    samrt::rle_decode_batch(counts.data(), counts.size(), h, w, data);
  }
  return out;
}

py::array_t<std::int64_t> area(const py::list& rles, const py::array& sizes) {
  const std::vector<RleCounts> counts = load_rles(rles, load_sizes(sizes, rles.size(), "rles"), "rles");
  std::vector<std::uint64_t> areas(counts.size());
  {
    py::gil_scoped_release release;  // only C++ buffers are touched
    samrt::rle_area_batch(counts.data(), counts.size(), areas.data());
  }
  py::array_t<std::int64_t> out(static_cast<py::ssize_t>(areas.size()));
  std::int64_t* data = out.mutable_data();
  for (std::size_t i = 0; i < areas.size(); ++i) data[i] = static_cast<std::int64_t>(areas[i]);  // <= 2^32
  return out;
}

py::array_t<double> to_bbox(const py::list& rles, const py::array& sizes) {
  const std::vector<RleSize> rle_sizes = load_sizes(sizes, rles.size(), "rles");
  const std::vector<RleCounts> counts = load_rles(rles, rle_sizes, "rles");
  py::array_t<double> out({counts.size(), std::size_t{4}});
  double* data = out.mutable_data();
  named("rles", [&] {
    py::gil_scoped_release release;  // `out` is ours, allocated above; counts are C++ copies
    samrt::rle_bbox_batch(counts.data(), rle_sizes.data(), counts.size(), data);
  });
  return out;
}

py::array_t<double> iou(const py::list& dt, const py::list& gt, std::int64_t h_in, std::int64_t w_in,
                        const py::array& iscrowd_in) {
  const std::size_t h = checked_extent(h_in, "h"), w = checked_extent(w_in, "w");
  named("dt", [&] { samrt::rle_check_size(h, w); });
  const std::vector<RleCounts> dt_counts = load_rles(dt, same_sizes(dt.size(), h, w), "dt");
  const std::vector<RleCounts> gt_counts = load_rles(gt, same_sizes(gt.size(), h, w), "gt");
  const char kind = iscrowd_in.dtype().kind();
  if (kind != 'b' && !is_integer_kind(kind)) {
    throw py::type_error("iscrowd must be bool or integer, got dtype " + dtype_name(iscrowd_in));
  }
  const auto iscrowd = carray<std::int64_t>::ensure(iscrowd_in);
  if (iscrowd.ndim() != 1 || static_cast<std::size_t>(iscrowd.shape(0)) != gt_counts.size()) {
    throw std::invalid_argument("iscrowd must be 1-D with one flag per gt (" + std::to_string(gt_counts.size()) +
                                ")");
  }
  std::vector<std::uint8_t> crowd(gt_counts.size());
  for (std::size_t g = 0; g < crowd.size(); ++g) crowd[g] = iscrowd.data()[g] != 0 ? 1 : 0;

  py::array_t<double> out({dt_counts.size(), gt_counts.size()});
  double* data = out.mutable_data();
  {
    py::gil_scoped_release release;  // `out` is ours, allocated above; the rest are C++ copies
    samrt::rle_iou_matrix(dt_counts.data(), dt_counts.size(), gt_counts.data(), gt_counts.size(), h, w,
                          crowd.data(), data);
  }
  return out;
}

py::list compress(const py::list& rles, const py::array& sizes) {
  const std::vector<RleCounts> counts = load_rles(rles, load_sizes(sizes, rles.size(), "rles"), "rles");
  std::vector<std::string> strings(counts.size());
  {
    py::gil_scoped_release release;  // only C++ buffers are touched
    samrt::rle_compress_batch(counts.data(), counts.size(), strings.data());
  }
  return bytes_list(strings);
}

py::list decompress(const py::list& rles, const py::array& sizes) {
  const std::vector<RleCounts> counts = load_rles(rles, load_sizes(sizes, rles.size(), "rles"), "rles");
  py::list out(counts.size());
  for (std::size_t i = 0; i < counts.size(); ++i) out[i] = py::cast(counts[i]);
  return out;
}

}  // namespace

void register_rle(py::module_& m) {
  m.def("rle_encode", &encode, py::arg("masks"),
        "COCO compressed counts (bytes) of each mask of masks, a [N, H, W] bool or uint8 array "
        "(nonzero = foreground, any strides).");
  m.def("rle_decode", &decode, py::arg("rles"), py::arg("h"), py::arg("w"),
        "Masks [N, h, w] bool from N counts (compressed bytes/str or integer sequences), all of size h x w.");
  m.def("rle_area", &area, py::arg("rles"), py::arg("sizes"),
        "Foreground pixels (int64 [N]) of N counts with sizes [N, 2] (h, w).");
  m.def("rle_to_bbox", &to_bbox, py::arg("rles"), py::arg("sizes"),
        "Foreground boxes XYWH (float64 [N, 4], zeros when empty) of N counts with sizes [N, 2].");
  m.def("rle_iou", &iou, py::arg("dt"), py::arg("gt"), py::arg("h"), py::arg("w"), py::arg("iscrowd"),
        "IoU matrix float64 [D, G] of counts all of size h x w; iscrowd [G]: divide by the dt area instead.");
  m.def("rle_compress", &compress, py::arg("rles"), py::arg("sizes"),
        "COCO compressed counts (bytes) of N counts with sizes [N, 2].");
  m.def("rle_decompress", &decompress, py::arg("rles"), py::arg("sizes"),
        "Counts (list of int) of N counts with sizes [N, 2].");
}
