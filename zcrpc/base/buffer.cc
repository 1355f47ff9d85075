#include "zcrpc/base/buffer.h"

#include <bit>
#include <cassert>
#include <cstdlib>
#include <new>

#include "zcrpc/base/copy_stats.h"

namespace zcrpc {

void Buffer::set_size(size_t size) {
  assert(size <= capacity_);
  size_ = size;
}

BufferPool::BufferPool(Options options) : options_(options) {}

BufferPool::~BufferPool() {
  assert(outstanding() == 0 && "BufferPool destroyed with buffers still handed out");
  for (SizeClass& c : classes_) {
    std::lock_guard lock(c.mu);
    for (uint8_t* p : c.free) std::free(p);
    c.free.clear();
  }
}

namespace {

// The calling thread's cache for the default pool. Trivially destructible,
// so it is still usable while the thread exits (a buffer released by a
// later thread_local destructor then bypasses it: `closed`).
struct ThreadCache {
  uint8_t* items[BufferPool::kThreadCacheClasses][BufferPool::kThreadCacheDepth];
  uint8_t count[BufferPool::kThreadCacheClasses];
  bool registered;  // the flusher below exists for this thread
  bool closed;      // flushed: the thread is exiting
};
thread_local ThreadCache t_cache{};

}  // namespace

// Gives a thread's cached buffers back to the shared lists as it exits.
struct ThreadCacheFlusher {
  ~ThreadCacheFlusher() {
    t_cache.closed = true;
    for (size_t k = 0; k < BufferPool::kThreadCacheClasses; ++k) {
      while (t_cache.count[k] > 0) {
        uint8_t* data = t_cache.items[k][--t_cache.count[k]];
        BufferPool::Default().ReleaseShared(data, BufferPool::kPageSize << k, static_cast<int>(k));
      }
    }
  }
};

namespace {
thread_local ThreadCacheFlusher t_flusher;
}  // namespace

BufferPool& BufferPool::Default() {
  // Built on first use: other files' static initialisers may allocate.
  static BufferPool* pool = new BufferPool();
  return *pool;
}

int BufferPool::ClassFor(size_t capacity) {
  // capacity is a power-of-two number of pages for pooled classes.
  size_t pages = capacity / kPageSize;
  int k = std::countr_zero(pages);
  return (std::has_single_bit(pages) && k < static_cast<int>(kNumClasses)) ? k : -1;
}

Buffer BufferPool::Allocate(size_t size) {
  std::optional<Buffer> buffer = TryAllocate(size);
  if (!buffer) throw std::bad_alloc();
  return std::move(*buffer);
}

std::optional<Buffer> BufferPool::TryAllocate(size_t size) {
  if (size == 0) return Buffer();
  size_t pages = (size + kPageSize - 1) / kPageSize;
  size_t capacity;
  int k = -1;
  if (pages <= (size_t{1} << (kNumClasses - 1))) {
    capacity = std::bit_ceil(pages) * kPageSize;
    k = ClassFor(capacity);
  } else {
    capacity = pages * kPageSize;
  }
  uint8_t* data = nullptr;
  if (k >= 0 && static_cast<size_t>(k) < kThreadCacheClasses && this == &Default() && t_cache.count[k] > 0) {
    data = t_cache.items[k][--t_cache.count[k]];
  } else if (k >= 0) {
    data = TakeShared(k);
  }
  if (data == nullptr) {
    data = static_cast<uint8_t*>(std::aligned_alloc(kPageSize, capacity));
    if (data == nullptr) return std::nullopt;
  }
  outstanding_.fetch_add(1, std::memory_order_relaxed);
  return Buffer::Take(data, size, capacity, this);
}

uint8_t* BufferPool::TakeShared(int k) {
  SizeClass& c = classes_[k];
  std::lock_guard lock(c.mu);
  if (c.free.empty()) return nullptr;
  uint8_t* data = c.free.back();
  c.free.pop_back();
  return data;
}

void BufferPool::Release(uint8_t* data, size_t capacity) noexcept {
  outstanding_.fetch_sub(1, std::memory_order_relaxed);
  const int k = ClassFor(capacity);
  if (k >= 0 && static_cast<size_t>(k) < kThreadCacheClasses && this == &Default() && !t_cache.closed) {
    if (!t_cache.registered) {
      t_cache.registered = true;
      (void)&t_flusher;  // constructs it, so it flushes this thread's cache at exit
    }
    if (t_cache.count[k] < kThreadCacheDepth) {
      t_cache.items[k][t_cache.count[k]++] = data;
      return;
    }
  }
  ReleaseShared(data, capacity, k);
}

void BufferPool::ReleaseShared(uint8_t* data, size_t capacity, int k) noexcept {
  if (k >= 0) {
    SizeClass& c = classes_[k];
    std::lock_guard lock(c.mu);
    if ((c.free.size() + 1) * capacity <= options_.max_cached_bytes_per_class) {
      c.free.push_back(data);
      return;
    }
  }
  std::free(data);
}

size_t BufferPool::cached_bytes() const {
  size_t total = 0;
  for (size_t k = 0; k < kNumClasses; ++k) {
    std::lock_guard lock(classes_[k].mu);
    total += classes_[k].free.size() * (kPageSize << k);
  }
  return total;
}

Buffer CopyToBuffer(std::span<const uint8_t> bytes) {
  Buffer b = BufferPool::Default().Allocate(bytes.size());
  CountedCopy(b.data(), bytes.data(), bytes.size());
  return b;
}

namespace {

// The reference count behind Buffer::Share(): it stands in as the owner of
// every handle and returns the bytes to their real owner with the last one.
class ShareCount final : public BufferOwner {
 public:
  ShareCount(uint8_t* data, size_t capacity, BufferOwner* owner) : data_(data), capacity_(capacity), owner_(owner) {}
  void AddRef() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Release(uint8_t*, size_t) noexcept override {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      owner_->Release(data_, capacity_);
      delete this;
    }
  }
  bool IsShareCount() const override { return true; }

 private:
  std::atomic<uint32_t> refs_{1};
  uint8_t* const data_;
  const size_t capacity_;
  BufferOwner* const owner_;
};

}  // namespace

Buffer Buffer::Share() {
  if (owner_ == nullptr) return Buffer(data_, size_, capacity_, nullptr);
  if (!owner_->IsShareCount()) owner_ = new ShareCount(data_, capacity_, owner_);
  static_cast<ShareCount*>(owner_)->AddRef();
  return Buffer(data_, size_, capacity_, owner_);
}

}  // namespace zcrpc
