// CallTable: one slot per call in flight, like a process table. A call id
// carries the slot index and the slot's generation, so a late reply to a
// reused slot is recognised and dropped. Each slot has a deadline field:
// arming a timer is one store of an absolute deadline, disarming one store
// of zero. A sweeper (deadline_sweeper.h) scans the table on a tick; there is
// no ordered timer structure.
//
// A call is armed as it is inserted, so no deadline can land on a slot
// after its call left it (a later call in that slot would expire at once).
// A call that gets many frames (a stream) is pinned while one is delivered
// (Acquire) and removed exactly once (Remove, a sweep or RemoveIf): removal
// hands the table's pointer back to whoever removed it.
//
// Thread-safe and lock-free: this is on every call's path, twice (insert
// and remove), so it takes no mutex. Free slots are a tagged stack; a
// slot's generation, pin count and "occupied" bit are one atomic word, so
// removal is one compare-and-swap that only one thread can win. A pin
// (Acquire, Arm, the scans) holds removal off for a few instructions; a
// Remove that meets a pin spins until it is let go.
#pragma once

#include <atomic>
#include <cassert>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/cpu_relax.h"
#include "zcrpc/base/status.h"

namespace zcrpc {

using CallId = uint64_t;

inline constexpr uint32_t CallIdSlot(CallId id) { return static_cast<uint32_t>(id); }
inline constexpr uint32_t CallIdGeneration(CallId id) { return static_cast<uint32_t>(id >> 32); }
inline constexpr CallId MakeCallId(uint32_t slot, uint32_t generation) {
  return (CallId{generation} << 32) | slot;
}

// T is whatever the owner keeps per call; the table stores a pointer and
// never owns it. Removal hands the pointer back, so the owner finishes the
// call with no table state held.
template <typename T>
class CallTable {
 public:
  explicit CallTable(uint32_t capacity) : capacity_(capacity), slots_(new Slot[capacity]) {
    assert(capacity > 0 && capacity < kEmpty);
    // Low slots first, so the sweeps' scans stay short.
    for (uint32_t i = capacity; i-- > 0;) PushFree(i);
  }
  CallTable(const CallTable&) = delete;
  CallTable& operator=(const CallTable&) = delete;

  uint32_t capacity() const { return capacity_; }
  // Calls in flight.
  uint32_t size() const { return size_.load(std::memory_order_seq_cst); }

  // Claims a slot for `call`, armed with `deadline_nanos` (0: none).
  // RESOURCE_EXHAUSTED when every slot is in use.
  StatusOr<CallId> Insert(T* call, int64_t deadline_nanos = 0) {
    const uint32_t index = PopFree();
    if (index == kEmpty) {
      return absl::ResourceExhaustedError(
          absl::StrCat("too many calls in flight (the call table holds ", capacity_, ")"));
    }
    Slot& s = slots_[index];
    // The slot is ours alone until the state below says it is occupied.
    const uint64_t free_state = s.state.load(std::memory_order_relaxed);
    assert(!Occupied(free_state) && Pins(free_state) == 0);
    s.call.store(call, std::memory_order_relaxed);
    s.deadline.store(deadline_nanos, std::memory_order_relaxed);
    s.state.store(free_state | kOccupied, std::memory_order_release);
    size_.fetch_add(1, std::memory_order_seq_cst);
    for (uint32_t hw = high_water_.load(std::memory_order_relaxed);
         index >= hw && !high_water_.compare_exchange_weak(hw, index + 1, std::memory_order_relaxed);) {
    }
    return MakeCallId(index, Generation(free_state));
  }

  // Sets (or, with 0, clears) the deadline of call `id` if it is still in
  // the table; false if it is gone. Never touches a slot reused since.
  bool Arm(CallId id, int64_t deadline_nanos) {
    Slot* s = Pin(id);
    if (s == nullptr) return false;
    s->deadline.store(deadline_nanos, std::memory_order_relaxed);
    Unpin(*s);
    return true;
  }
  bool Disarm(CallId id) { return Arm(id, 0); }

  // The call `id`, pinned while `pin(call)` runs (it takes a reference the
  // caller drops when done), so a concurrent Remove cannot hand the call
  // out, and its owner free it, before the pin holds it. `pin` must be
  // short and must not call into this table. nullptr if unknown, removed,
  // or stale.
  template <typename PinFn>
  T* Acquire(CallId id, PinFn&& pin) {
    Slot* s = Pin(id);
    if (s == nullptr) return nullptr;
    T* call = s->call.load(std::memory_order_relaxed);
    pin(call);
    Unpin(*s);
    return call;
  }

  // Takes the call out of the table. nullptr if `id` is unknown, already
  // removed, or of an older generation of its slot (a stale reply).
  T* Remove(CallId id) {
    const uint32_t index = CallIdSlot(id);
    if (index >= capacity_) return nullptr;
    Slot& s = slots_[index];
    uint64_t state = s.state.load(std::memory_order_acquire);
    for (;;) {
      if (!Occupied(state) || Generation(state) != CallIdGeneration(id)) return nullptr;
      if (Pins(state) > 0) {  // held for a few instructions
        CpuRelax();
        state = s.state.load(std::memory_order_acquire);
        continue;
      }
      if (s.state.compare_exchange_weak(state, FreeState(NextGeneration(Generation(state))),
                                        std::memory_order_acq_rel, std::memory_order_acquire)) {
        break;
      }
    }
    // Only the winner of the swap gets here; the slot is not free for
    // reuse until it is pushed back below.
    T* call = s.call.exchange(nullptr, std::memory_order_relaxed);
    s.deadline.store(0, std::memory_order_relaxed);
    size_.fetch_sub(1, std::memory_order_seq_cst);
    PushFree(index);
    return call;
  }

  // Removes every armed call whose deadline is at or before `now_nanos` and
  // calls on_expired(id, call) for each. Returns how many.
  template <typename F>
  size_t SweepExpired(int64_t now_nanos, F&& on_expired) {
    return SweepExpired(now_nanos, [](T*) { return int64_t{0}; }, std::forward<F>(on_expired));
  }

  // As above, but a due call may have moved its deadline since it was
  // armed (a stream's idle timeout, pushed back by each message): `due(call)`
  // says when it is due now, asked while the call is pinned; a time still
  // ahead re-arms the slot instead. Only due slots pay for the question.
  template <typename Due, typename F>
  size_t SweepExpired(int64_t now_nanos, Due&& due, F&& on_expired) {
    size_t expired = 0;
    const uint32_t end = high_water_.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < end; ++i) {
      Slot& s = slots_[i];
      const uint64_t state = s.state.load(std::memory_order_acquire);
      if (!Occupied(state)) continue;
      // Read after the state: at least this generation's deadline. A newer
      // call's would make the Remove below miss, which is harmless.
      const int64_t d = s.deadline.load(std::memory_order_relaxed);
      if (d == 0 || d > now_nanos) continue;
      const CallId id = MakeCallId(i, Generation(state));
      if (Slot* pinned = Pin(id)) {
        const int64_t later = due(pinned->call.load(std::memory_order_relaxed));
        if (later > now_nanos) pinned->deadline.store(later, std::memory_order_relaxed);
        Unpin(*pinned);
        if (later > now_nanos) continue;
      }
      if (T* call = Remove(id)) {
        on_expired(id, call);
        ++expired;
      }
    }
    return expired;
  }

  // Whether pred(call) holds for any call in the table (each pinned while
  // pred runs).
  template <typename Pred>
  bool AnyOf(Pred&& pred) {
    bool found = false;
    ForEachPinned([&](CallId, T* call) {
      found = found || pred(call);
      return false;
    });
    return found;
  }

  // Runs visit(call) on every call in the table, each pinned while visit
  // runs (so it must be quick and must not call into this table).
  template <typename Visit>
  void ForEach(Visit&& visit) {
    ForEachPinned([&](CallId, T* call) {
      visit(call);
      return false;
    });
  }

  // Removes every call for which pred(call) holds and hands each to
  // on_removed(id, call). For a connection that failed.
  template <typename Pred, typename F>
  size_t RemoveIf(Pred&& pred, F&& on_removed) {
    size_t removed = 0;
    // A matching call is removed once unpinned.
    ForEachPinned([&](CallId, T* call) { return static_cast<bool>(pred(call)); },
                  [&](CallId id) {
      if (T* call = Remove(id)) {
        on_removed(id, call);
        ++removed;
      }
    });
    return removed;
  }

 private:
  // Slot state: bit 0 occupied, bits 1..31 pins, bits 32..63 generation.
  static constexpr uint64_t kOccupied = 1;
  static constexpr uint64_t kOnePin = 2;
  static constexpr uint32_t kEmpty = UINT32_MAX;  // no free slot

  static bool Occupied(uint64_t state) { return state & kOccupied; }
  static uint32_t Pins(uint64_t state) { return static_cast<uint32_t>(state & 0xffffffffu) >> 1; }
  static uint32_t Generation(uint64_t state) { return static_cast<uint32_t>(state >> 32); }
  static uint64_t FreeState(uint32_t generation) { return uint64_t{generation} << 32; }
  // Never 0, so no call id is 0.
  static uint32_t NextGeneration(uint32_t g) { return g + 1 == 0 ? 1 : g + 1; }

  struct Slot {
    std::atomic<uint64_t> state{FreeState(1)};
    std::atomic<int64_t> deadline{0};  // 0: not armed
    std::atomic<T*> call{nullptr};
    std::atomic<uint32_t> next_free{kEmpty};
  };

  // The slot of `id`, pinned (Remove waits), or nullptr if `id` is not in
  // the table.
  Slot* Pin(CallId id) {
    const uint32_t index = CallIdSlot(id);
    if (index >= capacity_) return nullptr;
    Slot& s = slots_[index];
    uint64_t state = s.state.load(std::memory_order_acquire);
    do {
      if (!Occupied(state) || Generation(state) != CallIdGeneration(id)) return nullptr;
    } while (!s.state.compare_exchange_weak(state, state + kOnePin, std::memory_order_acquire,
                                            std::memory_order_acquire));
    return &s;
  }
  static void Unpin(Slot& s) { s.state.fetch_sub(kOnePin, std::memory_order_release); }

  // Runs visit(id, call) on each call while it is pinned; each call for
  // which visit returns true is then handed to after(id), unpinned.
  template <typename Visit, typename After>
  void ForEachPinned(Visit&& visit, After&& after) {
    const uint32_t end = high_water_.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < end; ++i) {
      const uint64_t state = slots_[i].state.load(std::memory_order_acquire);
      if (!Occupied(state)) continue;
      const CallId id = MakeCallId(i, Generation(state));
      Slot* s = Pin(id);
      if (s == nullptr) continue;
      const bool then = visit(id, s->call.load(std::memory_order_relaxed));
      Unpin(*s);
      if (then) after(id);
    }
  }
  template <typename Visit>
  void ForEachPinned(Visit&& visit) {
    ForEachPinned(std::forward<Visit>(visit), [](CallId) {});
  }

  // The free list: a stack whose head carries a tag that changes on every
  // push and pop, so a pop that read a head since popped and pushed again
  // fails its swap instead of linking a stale next (the ABA problem).
  static uint64_t Head(uint32_t tag, uint32_t index) { return (uint64_t{tag} << 32) | index; }
  void PushFree(uint32_t index) {
    uint64_t head = free_head_.load(std::memory_order_relaxed);
    do {
      slots_[index].next_free.store(static_cast<uint32_t>(head), std::memory_order_relaxed);
    } while (!free_head_.compare_exchange_weak(head, Head(static_cast<uint32_t>(head >> 32) + 1, index),
                                               std::memory_order_release, std::memory_order_relaxed));
  }
  uint32_t PopFree() {
    uint64_t head = free_head_.load(std::memory_order_acquire);
    for (;;) {
      const uint32_t index = static_cast<uint32_t>(head);
      if (index == kEmpty) return kEmpty;
      const uint32_t next = slots_[index].next_free.load(std::memory_order_relaxed);
      if (free_head_.compare_exchange_weak(head, Head(static_cast<uint32_t>(head >> 32) + 1, next),
                                           std::memory_order_acquire, std::memory_order_acquire)) {
        return index;
      }
    }
  }

  const uint32_t capacity_;
  std::unique_ptr<Slot[]> slots_;
  std::atomic<uint64_t> free_head_{Head(0, kEmpty)};
  std::atomic<uint32_t> high_water_{0};  // slots at or above were never used
  std::atomic<uint32_t> size_{0};
};

}  // namespace zcrpc
