// ReceiveStage: the page pair a tcp connection reads headers and inline
// parts into (stream_layout.h). Inline parts are handed to the runtime as
// slices of it, so it lives, reference-counted, until the connection's
// reader and every slice are done with it.
//
// ReceiveStagePool: the stages of one connection's reader. A stage whose
// last reference goes (a slice released on any thread, or the reader
// moving on) returns to its pool, memory and all, and the reader takes it
// again at its next frame boundary: a blocking caller that holds its reply
// while the reader reads the next one would otherwise cost a heap
// allocation and a BufferPool allocation (a lock) per call. Once the reader
// is gone (the connection closed and destroyed), stages that come back are
// deleted instead.
//
// Threads: Unref()/Release() from any thread; Take() and Close() only from
// the thread that owns the connection's reading (one at a time, handed over
// with acquire/release by internal::ReadOwnership).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "zcrpc/base/buffer.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/transport/tcp/stream_layout.h"

namespace zcrpc::transport::tcp {

class ReceiveStagePool;

class ReceiveStage final : public BufferOwner {
 public:
  // The header slot ends where the second page, and the window, begins.
  static constexpr size_t kHeaderOffset = BufferPool::kPageSize - kWireHeaderSize;
  static constexpr size_t kWindowOffset = BufferPool::kPageSize;
  static constexpr size_t kBytes = kWindowOffset + kInlineWindow;

  uint8_t* data() { return memory_.data(); }

  // A Buffer over [offset, offset + len) that keeps the stage alive.
  Buffer Slice(size_t offset, size_t len) {
    refs_.fetch_add(1, std::memory_order_relaxed);
    return Buffer::Take(memory_.data() + offset, len, len, this);
  }

  // True when no slice is alive, so the caller may reuse the bytes.
  bool unshared() const { return refs_.load(std::memory_order_acquire) == 1; }

  // Drops the caller's reference; the last one sends the stage back to its
  // pool (or deletes it, once the pool is closed).
  inline void Unref();

  void Release(uint8_t*, size_t) noexcept override { Unref(); }

 private:
  friend class ReceiveStagePool;
  explicit ReceiveStage(ReceiveStagePool* pool) : pool_(pool), memory_(BufferPool::Default().Allocate(kBytes)) {}
  inline ~ReceiveStage();

  std::atomic<int> refs_{1};
  ReceiveStagePool* const pool_;  // holds one of the pool's references
  ReceiveStage* next_ = nullptr;  // in the pool's lists
  Buffer memory_;
};

class ReceiveStagePool {
 public:
  // At most this many idle stages are kept (12 KiB each). A blocking caller
  // needs two (the one being read, the one its reply sits in); a busy
  // connection's replies share stages (8 KiB of small frames per read), so
  // a handful covers many calls in flight, and a burst beyond it is freed
  // rather than kept for the connection's lifetime.
  static constexpr size_t kMaxIdle = 8;

  // A pool with one reference, the reader's (given back by Close()).
  static ReceiveStagePool* New() { return new ReceiveStagePool(); }

  // A stage with one reference, the caller's: an idle one if there is any.
  // The reading thread only.
  ReceiveStage* Take() {
    if (idle_ == nullptr) TakeReturned();
    if (ReceiveStage* stage = idle_) {
      idle_ = stage->next_;
      --idle_count_;
      stage->next_ = nullptr;
      stage->refs_.store(1, std::memory_order_relaxed);
      return stage;
    }
    refs_.fetch_add(1, std::memory_order_relaxed);
    made_.fetch_add(1, std::memory_order_relaxed);
    return new ReceiveStage(this);
  }

  // Stages made so far (for stats and tests). Any thread.
  uint64_t made() const { return made_.load(std::memory_order_relaxed); }

  // The reader is going: idle stages are deleted now, stages still out when
  // they come back. Drops the reader's reference. The reading thread only,
  // once.
  void Close() {
    ReceiveStage* returned = returned_.exchange(Closed(), std::memory_order_acquire);
    DeleteList(returned);
    DeleteList(idle_);
    idle_ = nullptr;
    Unref();
  }

 private:
  friend class ReceiveStage;
  ReceiveStagePool() = default;

  static ReceiveStage* Closed() { return reinterpret_cast<ReceiveStage*>(uintptr_t{1}); }

  // A stage's last reference went. Any thread; lock-free (a push on a
  // Treiber stack: only the reader pops, and it takes the whole stack with
  // one exchange, so there is no ABA).
  void Return(ReceiveStage* stage) {
    ReceiveStage* head = returned_.load(std::memory_order_relaxed);
    do {
      if (head == Closed()) {
        delete stage;  // may delete this pool: touch nothing after
        return;
      }
      stage->next_ = head;
      // Release: the reader that takes the stage sees every use of its bytes
      // before the last reference went.
    } while (!returned_.compare_exchange_weak(head, stage, std::memory_order_release, std::memory_order_relaxed));
  }

  void TakeReturned() {
    ReceiveStage* returned = returned_.exchange(nullptr, std::memory_order_acquire);
    while (returned != nullptr) {
      ReceiveStage* next = returned->next_;
      if (idle_count_ < kMaxIdle) {
        returned->next_ = idle_;
        idle_ = returned;
        ++idle_count_;
      } else {
        delete returned;  // the pool keeps the reader's reference: never the last
      }
      returned = next;
    }
  }

  static void DeleteList(ReceiveStage* stage) {
    while (stage != nullptr) {
      ReceiveStage* next = stage->next_;
      delete stage;
      stage = next;
    }
  }

  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Stages whose last reference went, pushed by any thread; Closed() once
  // the reader is gone.
  std::atomic<ReceiveStage*> returned_{nullptr};
  // The reader's and one per stage in existence.
  std::atomic<int> refs_{1};
  std::atomic<uint64_t> made_{0};
  // The reader's own: idle stages ready to be taken.
  ReceiveStage* idle_ = nullptr;
  size_t idle_count_ = 0;
};

inline void ReceiveStage::Unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) pool_->Return(this);
}

inline ReceiveStage::~ReceiveStage() { pool_->Unref(); }

}  // namespace zcrpc::transport::tcp
