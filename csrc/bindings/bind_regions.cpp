#include "bindings.hpp"

#include "regions.hpp"

void register_regions(py::module_& m) { (void)m; }
