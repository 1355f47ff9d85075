// Buffer: a handle to bytes owned by a BufferOwner (a pool, a shared-memory
// slab, a registered RDMA region). Handing a Buffer over moves ownership;
// the bytes are never copied. Share() makes a second handle to the same
// bytes (reference counted). When the last handle is destroyed the bytes
// go back to their owner through BufferOwner::Release().
//
// BufferPool: page-aligned (4096) buffers in power-of-two size classes,
// recycled through per-class free lists. Thread-safe.
//
// A Buffer is not thread-safe itself; it may be moved between threads.
#pragma once

#include <array>
#include <atomic>
#include <mutex>
#include <optional>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace zcrpc {

// Whoever hands out a Buffer's memory gets it back through Release(). The
// owner must outlive every Buffer it handed out.
class BufferOwner {
 public:
  // Called exactly once per handed-out buffer, from any thread.
  virtual void Release(uint8_t* data, size_t capacity) noexcept = 0;
  // True only for the reference count behind Buffer::Share().
  virtual bool IsShareCount() const { return false; }

 protected:
  ~BufferOwner() = default;
};

class Buffer {
 public:
  Buffer() = default;
  // Takes ownership of `capacity` bytes at `data`, of which the first `size`
  // are valid. `owner` gets them back when the buffer dies.
  static Buffer Take(uint8_t* data, size_t size, size_t capacity, BufferOwner* owner) {
    return Buffer(data, size, capacity, owner);
  }

  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
      owner_ = std::exchange(other.owner_, nullptr);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  bool empty() const { return size_ == 0; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

  // Shrinks or grows the valid region within the capacity.
  void set_size(size_t size);

  // Who gets the bytes back; nullptr for an empty buffer. For a shared
  // buffer, the share count (not the memory's owner).
  BufferOwner* owner() const { return owner_; }

  // Another handle to the same bytes, for keeping a buffer while also
  // sending it: a received attachment forwarded and kept, one block sent to
  // many peers. The bytes go back to their owner when the last handle dies.
  // Cost: the first Share() of a buffer allocates one small count block
  // (48 bytes); after that each handle costs one atomic increment and one
  // decrement. Every handle sees the same bytes, so treat shared bytes as
  // read-only. tcp sends a shared buffer as it is; a transport that must
  // own a buffer's memory to send it without a copy (shm hands its slab
  // blocks to the peer) copies a shared one instead, counted
  // (copy_stats.h). Either handle may be used on any thread; the two are
  // not thread-safe individually. An empty buffer shares as empty.
  Buffer Share();
  // Whether other handles to these bytes may exist (Share() was called).
  bool shared() const { return owner_ != nullptr && owner_->IsShareCount(); }

  // Gives up the bytes without returning them to their owner, for a
  // transport that lends them to its peer and gets them back another way
  // (shm's return ring). Returns the data pointer; the buffer is empty after.
  uint8_t* Detach() {
    uint8_t* data = std::exchange(data_, nullptr);
    size_ = capacity_ = 0;
    owner_ = nullptr;
    return data;
  }

  // Returns the bytes to their owner now.
  void reset() {
    if (owner_ != nullptr) owner_->Release(data_, capacity_);
    data_ = nullptr;
    size_ = capacity_ = 0;
    owner_ = nullptr;
  }

 private:
  Buffer(uint8_t* data, size_t size, size_t capacity, BufferOwner* owner)
      : data_(data), size_(size), capacity_(capacity), owner_(owner) {}

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
  BufferOwner* owner_ = nullptr;
};

class BufferPool final : public BufferOwner {
 public:
  static constexpr size_t kPageSize = 4096;
  // Classes are 4 KiB << k for k in [0, kNumClasses): 4 KiB .. 8 MiB. Larger
  // buffers are allocated on demand and freed on release. The classes reach
  // past 1 MiB because a 1 MiB payload plus its protobuf framing needs the
  // 2 MiB class; unpooled, each such call paid ~250 page faults per side.
  static constexpr size_t kNumClasses = 12;

  struct Options {
    // Free buffers kept per size class; beyond this, released memory is freed.
    size_t max_cached_bytes_per_class = 8u << 20;
  };

  BufferPool() : BufferPool(Options{}) {}
  explicit BufferPool(Options options);
  // Every buffer must have been released (asserted).
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // The process-wide pool. Never destroyed, so buffers may outlive main().
  // It also keeps a few small buffers (kThreadCacheDepth per class up to
  // 16 KiB) per thread, so that a call's buffers take no lock in steady
  // state; a thread's cache goes back to the shared lists when it exits.
  static BufferPool& Default();
  static constexpr size_t kThreadCacheClasses = 3;  // 4, 8 and 16 KiB
  static constexpr size_t kThreadCacheDepth = 4;

  // A page-aligned buffer with size() == size. A zero-size request returns an
  // empty Buffer without memory. Throws std::bad_alloc if the system is out
  // of memory.
  Buffer Allocate(size_t size);
  // As Allocate, but nullopt if the system is out of memory: for sizes a
  // peer chose, which must fail one call, not the process.
  std::optional<Buffer> TryAllocate(size_t size);

  // Buffers handed out and not yet released.
  size_t outstanding() const { return outstanding_.load(std::memory_order_relaxed); }
  // Bytes held in the shared free lists (not in threads' caches).
  size_t cached_bytes() const;

  void Release(uint8_t* data, size_t capacity) noexcept override;

 private:
  struct SizeClass {
    mutable std::mutex mu;
    std::vector<uint8_t*> free ABSL_GUARDED_BY(mu);
  };
  static int ClassFor(size_t capacity);
  friend struct ThreadCacheFlusher;
  // The shared free lists, under each class's lock.
  uint8_t* TakeShared(int k);
  void ReleaseShared(uint8_t* data, size_t capacity, int k) noexcept;

  const Options options_;
  std::array<SizeClass, kNumClasses> classes_;
  std::atomic<size_t> outstanding_{0};
};

// A page-aligned copy of `bytes` from the default pool; the copy is counted
// (copy_stats.h). Meant for small things and tests, never the data path.
Buffer CopyToBuffer(std::span<const uint8_t> bytes);

}  // namespace zcrpc
