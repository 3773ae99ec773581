// Giving freed heap memory back to the operating system.
//
// glibc's malloc keeps what a process frees: blocks below its adaptive mmap threshold
// stay in the heap of the thread that allocated them, and every thread (ONNX Runtime's
// and the kernel pool's) has its own heap. A service alternating images, prompts and
// automatic generations then grows by hundreds of MB that nothing uses. Trimming after
// the heavy steps keeps its resident size at what is live.
#pragma once

namespace samrt {

// Returns the free memory of every malloc heap to the OS (glibc's malloc_trim). False
// where the C library has no such call (the memory stays with the allocator) or nothing
// was returned. Thread-safe; takes each heap's lock in turn.
bool release_free_heap_memory();

}  // namespace samrt
