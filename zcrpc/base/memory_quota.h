// MemoryQuota: a budget of bytes that many connections draw on together,
// like gRPC's ResourceQuota. A tcp receiver reserves a frame's body from it
// when the header arrives, before allocating anything, and gives it back
// once the frame is complete (or the connection ends): so bodies that
// peers have announced but not yet sent (a header promising 60 MiB, then
// silence) can never hold more than the quota, however many connections
// do it. A body the quota cannot cover is read and discarded, and its call
// fails RESOURCE_EXHAUSTED naming the quota, as a body over the limits
// does; the connection keeps serving.
//
// Frames already delivered are not counted: the calls-in-flight and stream
// window limits bound what the runtime holds (docs/reliability.md).
//
// Shared: servers, channels and their connections hold it by shared_ptr,
// so a connection whose last bytes are read after its channel is gone
// still gives its reservation back to a live quota.
//
// Thread-safe; lock-free.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace zcrpc {

class MemoryQuota {
 public:
  // The process's quota, shared by every server and channel that names no
  // other: 1 GiB (16 bodies of the default 64 MiB limit arriving at once).
  // Never destroyed.
  static const std::shared_ptr<MemoryQuota>& Default();
  static constexpr uint64_t kDefaultBytes = uint64_t{1} << 30;

  explicit MemoryQuota(uint64_t limit_bytes) : limit_(limit_bytes) {}
  MemoryQuota(const MemoryQuota&) = delete;
  MemoryQuota& operator=(const MemoryQuota&) = delete;

  // Takes `bytes` if they fit under the limit with what is reserved.
  bool TryReserve(uint64_t bytes) {
    uint64_t reserved = reserved_.load(std::memory_order_relaxed);
    do {
      if (bytes > limit() || reserved > limit() - bytes) return false;
    } while (!reserved_.compare_exchange_weak(reserved, reserved + bytes, std::memory_order_relaxed));
    return true;
  }
  // Gives back what TryReserve took.
  void Release(uint64_t bytes) { reserved_.fetch_sub(bytes, std::memory_order_relaxed); }

  uint64_t reserved() const { return reserved_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_.load(std::memory_order_relaxed); }
  // Takes effect for later reservations; what is reserved stays.
  void set_limit(uint64_t bytes) { limit_.store(bytes, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> limit_;
  std::atomic<uint64_t> reserved_{0};
};

inline const std::shared_ptr<MemoryQuota>& MemoryQuota::Default() {
  static auto* quota = new std::shared_ptr<MemoryQuota>(std::make_shared<MemoryQuota>(kDefaultBytes));
  return *quota;
}

}  // namespace zcrpc
