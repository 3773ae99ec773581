#include "regions.hpp"
