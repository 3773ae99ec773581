#include "nms.hpp"
