// ReadOwnership: which thread may read a connection's receive side right
// now, handed between the transport's poller and a caller that reads its
// own reply (Connection::PollUntil, the leader/follower hand-off).
//
// Exactly one thread reads at a time. The poller, woken while a caller
// reads, does not wait: it marks the ownership "parked" and leaves, and the
// caller, on letting go, learns that it must hand the connection back to
// the poller (re-arm it) so no wake-up is lost.
//
// A poller that sleeps on a doorbell the peer rings only when asked (shm's
// receiver_sleeping flag) also needs the opposite case: the poller lets go
// *before* it sleeps (LetGoToSleep), and a caller that takes the receive
// side while the poller sleeps must hand it back the same way, because it
// will clear the doorbell flag while it reads. Resume() ends that state
// when the poller wakes.
//
// Thread-safe, lock-free. All transitions are read-modify-writes of one
// atomic, so their order is total: a caller either sees the poller asleep
// or is seen by it, never neither.
#pragma once

#include <atomic>

namespace zcrpc::transport::internal {

class ReadOwnership {
 public:
  // A caller (PollUntil), or a poller that must not park (one that only
  // looks while it spins), tries to take the receive side. Never waits.
  // Taking it from a sleeping poller obliges the taker to hand it back
  // (Release() then answers true).
  bool TryAcquire() {
    int expected = kFree;
    if (state_.compare_exchange_strong(expected, kHeld, std::memory_order_acquire)) return true;
    return expected == kIdle && state_.compare_exchange_strong(expected, kParked, std::memory_order_acquire);
  }

  // The poller was woken: take the receive side, or, while a caller holds
  // it, leave a note for that caller and return false (the caller re-arms).
  bool AcquireOrPark() {
    int expected = kFree;
    for (;;) {
      if (expected == kFree || expected == kIdle) {
        if (state_.compare_exchange_weak(expected, kHeld, std::memory_order_acq_rel)) return true;
      } else if (expected == kParked) {
        return false;  // noted already: the holder hands it back
      } else if (state_.compare_exchange_weak(expected, kParked, std::memory_order_acq_rel)) {
        return false;
      }
      // The state moved in between (`expected` has the new one): again.
    }
  }

  // Lets go. Returns true if the poller was parked meanwhile (or slept when
  // this thread took over) and the connection must be handed back to it.
  bool Release() { return state_.exchange(kFree, std::memory_order_acq_rel) == kParked; }

  // The poller, holding the receive side, lets go because it is about to
  // sleep: whoever takes it next must hand it back (Release() == true).
  void LetGoToSleep() { state_.store(kIdle, std::memory_order_seq_cst); }

  // The poller woke up: nobody needs to hand it back any more. A caller
  // that took over meanwhile keeps its duty (it is harmless: a re-arm the
  // poller did not need).
  void Resume() {
    int expected = kIdle;
    state_.compare_exchange_strong(expected, kFree, std::memory_order_acq_rel);
  }

  bool held() const {
    const int state = state_.load(std::memory_order_acquire);
    return state == kHeld || state == kParked;
  }

 private:
  // kIdle: free, and the poller sleeps (see LetGoToSleep).
  enum : int { kFree = 0, kHeld = 1, kParked = 2, kIdle = 3 };
  std::atomic<int> state_{kFree};
};

}  // namespace zcrpc::transport::internal
