// Copy accounting. Every copy of payload bytes that the framework makes goes
// through CountedCopy(), so tests and benchmarks can report "framework bytes
// copied per call". Copies that protobuf makes while parsing its own fields,
// and the kernel's copy into user space on a plain recv(), are not framework
// copies and are not counted (docs/wire.md says where each copy happens).
//
// Counters are per thread (no shared cache line on the hot path) and summed
// on read. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zcrpc {

// Copies `n` bytes and adds them to the calling thread's counter.
void CountedCopy(void* dst, const void* src, size_t n);

struct CopyStats {
  // Bytes copied by the framework in this process since start (all threads,
  // including threads that have exited).
  static uint64_t TotalBytesCopied();
  // Bytes copied by the calling thread since it started.
  static uint64_t ThreadBytesCopied();
};

}  // namespace zcrpc
