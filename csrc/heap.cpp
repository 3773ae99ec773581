#include "heap.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace samrt {

bool release_free_heap_memory() {
#if defined(__GLIBC__)
  // Pad 0: keep nothing spare at the top of the main heap.
  return malloc_trim(0) != 0;
#else
  return false;
#endif
}

}  // namespace samrt
