// ReceiveStage: the page pair a tcp connection reads headers and inline
// parts into (stream_layout.h). Inline parts are handed to the runtime as
// slices of it, so it lives, reference-counted, until the connection and
// every slice are done with it; then its memory goes back to the pool.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "zcrpc/base/buffer.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/transport/tcp/stream_layout.h"

namespace zcrpc::transport::tcp {

class ReceiveStage final : public BufferOwner {
 public:
  // The header slot ends where the second page, and the window, begins.
  static constexpr size_t kHeaderOffset = BufferPool::kPageSize - kWireHeaderSize;
  static constexpr size_t kWindowOffset = BufferPool::kPageSize;
  static constexpr size_t kBytes = kWindowOffset + kInlineWindow;

  // A new stage with one reference: the caller's.
  static ReceiveStage* New() { return new ReceiveStage(); }

  uint8_t* data() { return memory_.data(); }

  // A Buffer over [offset, offset + len) that keeps the stage alive.
  Buffer Slice(size_t offset, size_t len) {
    refs_.fetch_add(1, std::memory_order_relaxed);
    return Buffer::Take(memory_.data() + offset, len, len, this);
  }

  // True when no slice is alive, so the caller may reuse the bytes.
  bool unshared() const { return refs_.load(std::memory_order_acquire) == 1; }

  // Drops the caller's reference.
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  void Release(uint8_t*, size_t) noexcept override { Unref(); }

 private:
  ReceiveStage() : memory_(BufferPool::Default().Allocate(kBytes)) {}
  ~ReceiveStage() = default;

  std::atomic<int> refs_{1};
  Buffer memory_;
};

}  // namespace zcrpc::transport::tcp
