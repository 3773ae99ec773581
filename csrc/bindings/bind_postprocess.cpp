#include "bindings.hpp"

#include "postprocess.hpp"

void register_postprocess(py::module_& m) { (void)m; }
