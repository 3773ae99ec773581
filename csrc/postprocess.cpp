#include "postprocess.hpp"
