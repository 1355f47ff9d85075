// ReadOwnership: which thread may read a connection's receive side right
// now, handed between the transport's poller and a caller that reads its
// own reply (Connection::PollUntil, the leader/follower hand-off).
//
// Exactly one thread reads at a time. The poller, woken while a caller
// reads, does not wait: it marks the ownership "parked" and leaves, and the
// caller, on letting go, learns that it must hand the connection back to
// the poller (re-arm it) so no wake-up is lost.
//
// Thread-safe, lock-free.
#pragma once

#include <atomic>

namespace zcrpc::transport::internal {

class ReadOwnership {
 public:
  // A caller (PollUntil) tries to take the receive side. Never waits.
  bool TryAcquire() {
    int expected = kFree;
    return state_.compare_exchange_strong(expected, kHeld, std::memory_order_acquire);
  }

  // The poller was woken: take the receive side, or, while a caller holds
  // it, leave a note for that caller and return false (the caller re-arms).
  bool AcquireOrPark() {
    for (;;) {
      if (TryAcquire()) return true;
      int expected = kHeld;
      if (state_.compare_exchange_strong(expected, kParked, std::memory_order_acq_rel)) return false;
      // The holder let go in between: try again.
    }
  }

  // Lets go. Returns true if the poller was parked meanwhile and the
  // connection must be handed back to it.
  bool Release() { return state_.exchange(kFree, std::memory_order_acq_rel) == kParked; }

  bool held() const { return state_.load(std::memory_order_acquire) != kFree; }

 private:
  enum : int { kFree = 0, kHeld = 1, kParked = 2 };
  std::atomic<int> state_{kFree};
};

}  // namespace zcrpc::transport::internal
