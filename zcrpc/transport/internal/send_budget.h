// SendBudget: the soft byte budget of one connection's send queue and its
// stall clock, as transport.h asks of every transport (Send, writable,
// WaitWritable, OnWritable, send_stall_timeout).
//
// The transport calls Queued() when Send() adds a frame and Drained() when
// bytes leave the queue (written to the socket, taken by the peer). It
// calls the handler's OnWritable() when Drained() says one is owed, and
// closes the connection when Stalled() says the queue made no progress
// for too long.
//
// Thread-safe. The hot path (Queued, Drained with nobody waiting or
// watching, writable while under the budget) is atomics only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/base/status.h"
#include "zcrpc/transport/internal/close_once.h"
#include "zcrpc/transport/internal/delivery_scope.h"

namespace zcrpc::transport::internal {

// What a queued frame holds in memory, for the budget: its header and each
// part rounded up to whole pages (a frame waiting in a queue keeps its parts
// in page-aligned buffers). Counting wire bytes instead would let a queue
// of small messages hold a page each for a few bytes counted: 4096 frames of
// 68 bytes would count 0.5 MiB and hold 16 MiB.
inline uint64_t QueuedMemory(const Frame& frame) {
  constexpr uint64_t kPage = 4096;
  auto pages = [](uint64_t bytes) { return (bytes + kPage - 1) / kPage * kPage; };
  uint64_t total = kWireHeaderSize + pages(frame.metadata.size()) + pages(frame.message.size());
  for (const Buffer& attachment : frame.attachments) total += pages(attachment.size());
  return total;
}

class SendBudget {
 public:
  SendBudget(uint64_t budget_bytes, std::chrono::nanoseconds stall_timeout, Clock* clock = &Clock::Real())
      : budget_(budget_bytes == 0 ? 1 : budget_bytes), stall_nanos_(stall_timeout.count()), clock_(clock) {}
  SendBudget(const SendBudget&) = delete;
  SendBudget& operator=(const SendBudget&) = delete;

  // `bytes` joined the queue.
  void Queued(uint64_t bytes) {
    // The queue is empty: its stall clock starts now. Set before the count
    // makes the queue non-empty, so a stall check in between never pairs a
    // non-empty queue with a clock from long ago (it reads the count first,
    // with acquire, then the clock).
    if (queued_.load(std::memory_order_acquire) == 0) {
      last_progress_nanos_.store(clock_->NowNanos(), std::memory_order_relaxed);
    }
    queued_.fetch_add(bytes, std::memory_order_acq_rel);
  }

  // `bytes` left the queue. Returns true when the queue just fell under
  // the budget and someone saw it full since: call OnWritable() once.
  bool Drained(uint64_t bytes) {
    const uint64_t before = queued_.fetch_sub(bytes, std::memory_order_acq_rel);
    last_progress_nanos_.store(clock_->NowNanos(), std::memory_order_relaxed);
    const uint64_t after = before - bytes;
    if (after >= budget_ || before < budget_) return false;
    if (waiters_.load(std::memory_order_acquire) > 0) {
      std::lock_guard lock(mu_);
      room_.notify_all();
    }
    return want_writable_.exchange(false, std::memory_order_acq_rel);
  }

  // Under the budget? A false answer arms one OnWritable (Drained).
  bool writable() {
    if (queued_.load(std::memory_order_acquire) < budget_) return true;
    want_writable_.store(true, std::memory_order_release);
    // Drained may have run between the two lines: look again.
    if (queued_.load(std::memory_order_acquire) < budget_) {
      want_writable_.store(false, std::memory_order_release);
      return true;
    }
    return false;
  }

  // Blocks until writable(), `closed` closes, or `deadline_nanos` (on
  // Clock::Real(); 0 = none) passes. FAILED_PRECONDITION on a delivering
  // thread, which must never wait (transport.h).
  Status WaitWritable(int64_t deadline_nanos, const CloseOnce& closed, std::string_view peer) {
    if (DeliveryScope::Active()) {
      return absl::FailedPreconditionError(
          "WaitWritable on a thread that delivers a connection's frames: it would stall that connection");
    }
    waiters_.fetch_add(1, std::memory_order_acq_rel);
    std::unique_lock lock(mu_);
    Status result = absl::OkStatus();
    for (;;) {
      if (closed.closed()) {
        result = absl::UnavailableError(absl::StrCat("connection to ", ToAbsl(peer), " is closed"));
        break;
      }
      if (queued_.load(std::memory_order_acquire) < budget_) break;
      const int64_t now = Clock::Real().NowNanos();
      if (deadline_nanos != 0 && now >= deadline_nanos) {
        result = absl::DeadlineExceededError(
            absl::StrCat("deadline passed while the send queue to ", ToAbsl(peer), " was full"));
        break;
      }
      // Bounded slices: a close or a deadline is noticed without a wake-up.
      room_.wait_for(lock, std::chrono::milliseconds(10));
    }
    lock.unlock();
    waiters_.fetch_sub(1, std::memory_order_acq_rel);
    return result;
  }

  // Wakes every WaitWritable (on close).
  void WakeAll() {
    std::lock_guard lock(mu_);
    room_.notify_all();
  }

  // Bytes queued and not yet drained, and whether they made no progress
  // for the stall timeout.
  uint64_t queued() const { return queued_.load(std::memory_order_acquire); }
  bool Stalled(int64_t now_nanos) const {
    return queued() > 0 && now_nanos - last_progress_nanos_.load(std::memory_order_relaxed) >= stall_nanos_;
  }
  int64_t stall_nanos() const { return stall_nanos_; }

 private:
  const uint64_t budget_;
  const int64_t stall_nanos_;
  Clock* const clock_;
  std::atomic<uint64_t> queued_{0};
  std::atomic<int64_t> last_progress_nanos_{0};
  std::atomic<bool> want_writable_{false};
  std::atomic<int> waiters_{0};
  std::mutex mu_;
  std::condition_variable room_;
};

}  // namespace zcrpc::transport::internal
