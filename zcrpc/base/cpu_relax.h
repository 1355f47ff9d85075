// CpuRelax(): the hint a spinning thread gives the core while it waits for
// another thread's store (x86 `pause`, aarch64 `yield`), so a spin loop
// neither starves the sibling hyper-thread nor floods the memory pipeline.
// Costs a few to ~100 cycles depending on the core; call it once per look.
//
// Any thread. No state.
#pragma once

namespace zcrpc {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#else
  asm volatile("" ::: "memory");  // no hint on this architecture: at least a compiler barrier
#endif
}

}  // namespace zcrpc
