// Shared by the binding translation units: each register_* adds one kernel family to
// samrt._core. Bindings convert and check arrays once, then release the GIL and call
// the kernels in csrc/, which know nothing of Python.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

// A C-contiguous array of T; other dtypes and layouts are converted (copied) once at the
// boundary, so kernels only ever see dense row-major buffers.
template <typename T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

void register_rle(py::module_& m);
void register_nms(py::module_& m);
void register_regions(py::module_& m);
void register_postprocess(py::module_& m);
