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
// receiver_sleeping flag) also needs to know, for as long as it sleeps,
// that it sleeps: every caller that reads meanwhile clears the doorbell
// flag (it looks at the ring itself) and so must re-arm it when it lets go,
// not only the first one. Hence two more states, kept until the poller
// wakes (Resume()):
//   kIdle          nobody reads and the poller sleeps (LetGoToSleep, or a
//                  caller let go of kHeldAsleep);
//   kHeldAsleep    a caller reads and the poller sleeps (the caller took
//                  kIdle, or the poller went to sleep while it read:
//                  ParkToSleep). Release() answers true and leaves kIdle,
//                  so the next caller re-arms too.
// Letting go of kHeldAsleep into kFree instead (as a first version did)
// lost wake-ups: the next caller took kFree, believed the poller awake,
// cleared the doorbell flag and let go without re-arming it, and the
// poller slept on with nobody asking the peer to ring.
//
// tcp and loopback never sleep that way (they only use TryAcquire,
// AcquireOrPark and Release) and never see kIdle or kHeldAsleep.
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
  // Taking it while the poller sleeps obliges the taker to hand it back
  // (Release() then answers true).
  bool TryAcquire() {
    int expected = kFree;
    if (state_.compare_exchange_strong(expected, kHeld, std::memory_order_acquire)) return true;
    return expected == kIdle && state_.compare_exchange_strong(expected, kHeldAsleep, std::memory_order_acquire);
  }

  // The poller was woken: take the receive side, or, while a caller holds
  // it, leave a note for that caller and return false (the caller re-arms).
  bool AcquireOrPark() {
    int expected = kFree;
    for (;;) {
      if (expected == kFree || expected == kIdle) {
        if (state_.compare_exchange_weak(expected, kHeld, std::memory_order_acq_rel)) return true;
      } else if (expected == kParked || expected == kHeldAsleep) {
        return false;  // noted already: the holder hands it back
      } else if (state_.compare_exchange_weak(expected, kParked, std::memory_order_acq_rel)) {
        return false;
      }
      // The state moved in between (`expected` has the new one): again.
    }
  }

  // The poller is about to sleep: take the receive side (true: the poller
  // then arms its doorbell and calls LetGoToSleep(), or Release() if it
  // found work), or, while a caller holds it, record that the poller sleeps
  // (false: the caller re-arms when it lets go, and so does every caller
  // after it until Resume()).
  bool AcquireOrParkToSleep() {
    int expected = kFree;
    for (;;) {
      if (expected == kFree || expected == kIdle) {
        if (state_.compare_exchange_weak(expected, kHeld, std::memory_order_acq_rel)) return true;
      } else if (expected == kHeldAsleep) {
        return false;
      } else if (state_.compare_exchange_weak(expected, kHeldAsleep, std::memory_order_acq_rel)) {
        return false;  // was kHeld or kParked
      }
    }
  }

  // Lets go. Returns true if the connection must be handed back to the
  // poller: it was parked meanwhile, or it sleeps (then the state stays
  // "asleep", kIdle, until Resume()).
  bool Release() {
    int expected = kHeld;
    for (;;) {
      const int next = expected == kHeldAsleep ? kIdle : kFree;
      if (state_.compare_exchange_weak(expected, next, std::memory_order_acq_rel)) return expected != kHeld;
    }
  }

  // The poller, holding the receive side, lets go because it is about to
  // sleep: whoever takes it next must hand it back (Release() == true).
  void LetGoToSleep() { state_.store(kIdle, std::memory_order_seq_cst); }

  // The poller woke up: from now on it looks at the ring itself before it
  // sleeps again, so callers need not re-arm for it any more. A caller
  // that holds the receive side keeps it (kHeldAsleep becomes kHeld).
  void Resume() {
    int expected = kIdle;
    while (!state_.compare_exchange_weak(expected, expected == kIdle ? kFree : kHeld, std::memory_order_acq_rel)) {
      if (expected != kIdle && expected != kHeldAsleep) return;
    }
  }

  bool held() const {
    const int state = state_.load(std::memory_order_acquire);
    return state == kHeld || state == kParked || state == kHeldAsleep;
  }

 private:
  enum : int { kFree = 0, kHeld = 1, kParked = 2, kIdle = 3, kHeldAsleep = 4 };
  std::atomic<int> state_{kFree};
};

}  // namespace zcrpc::transport::internal
