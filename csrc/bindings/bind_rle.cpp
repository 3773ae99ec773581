#include "bindings.hpp"

#include "rle.hpp"

void register_rle(py::module_& m) { (void)m; }
