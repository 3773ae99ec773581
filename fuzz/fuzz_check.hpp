// Shared helpers for the libFuzzer targets in fuzz/.
#pragma once

#include <cstdio>
#include <cstdlib>

// A broken invariant is a finding: print where, then abort so libFuzzer saves the input.
#define FUZZ_CHECK(condition)                                                              \
  do {                                                                                     \
    if (!(condition)) {                                                                    \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)
