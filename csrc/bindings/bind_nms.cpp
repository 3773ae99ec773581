#include "bindings.hpp"

#include "nms.hpp"

void register_nms(py::module_& m) { (void)m; }
