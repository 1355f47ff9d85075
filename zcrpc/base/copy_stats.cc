#include "zcrpc/base/copy_stats.h"

#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

namespace zcrpc {
namespace {

// Each thread owns one counter cell; cells are registered so a reader can sum
// them, and a thread's bytes are folded into `retired` when it exits.
struct Registry {
  std::mutex mu;
  std::vector<std::atomic<uint64_t>*> cells;
  std::atomic<uint64_t> retired{0};
};

Registry& GetRegistry() {
  static Registry* registry = new Registry();  // never destroyed: threads may exit late
  return *registry;
}

struct ThreadCell {
  std::atomic<uint64_t> bytes{0};
  ThreadCell() {
    Registry& r = GetRegistry();
    std::lock_guard lock(r.mu);
    r.cells.push_back(&bytes);
  }
  ~ThreadCell() {
    Registry& r = GetRegistry();
    std::lock_guard lock(r.mu);
    r.retired.fetch_add(bytes.load(std::memory_order_relaxed), std::memory_order_relaxed);
    std::erase(r.cells, &bytes);
  }
};

ThreadCell& Cell() {
  thread_local ThreadCell cell;
  return cell;
}

}  // namespace

void CountedCopy(void* dst, const void* src, size_t n) {
  if (n == 0) return;
  std::memcpy(dst, src, n);
  std::atomic<uint64_t>& bytes = Cell().bytes;
  // Only this thread writes its cell: a relaxed load+store is enough.
  bytes.store(bytes.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

uint64_t CopyStats::TotalBytesCopied() {
  Registry& r = GetRegistry();
  std::lock_guard lock(r.mu);
  uint64_t total = r.retired.load(std::memory_order_relaxed);
  for (auto* cell : r.cells) total += cell->load(std::memory_order_relaxed);
  return total;
}

uint64_t CopyStats::ThreadBytesCopied() { return Cell().bytes.load(std::memory_order_relaxed); }

}  // namespace zcrpc
