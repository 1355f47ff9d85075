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
// Thread-safe. Insert/Remove/Acquire/sweeps take a short lock for the free
// list; arming is part of Insert, re-arming checks the slot's generation.
#pragma once

#include <atomic>
#include <mutex>
#include <cassert>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
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
// call outside the table's lock.
template <typename T>
class CallTable {
 public:
  explicit CallTable(uint32_t capacity) : capacity_(capacity), slots_(new Slot[capacity]) {
    assert(capacity > 0);
    free_.reserve(capacity);
    for (uint32_t i = capacity; i-- > 0;) free_.push_back(i);
  }
  CallTable(const CallTable&) = delete;
  CallTable& operator=(const CallTable&) = delete;

  uint32_t capacity() const { return capacity_; }
  // Calls in flight.
  uint32_t size() const { return size_.load(std::memory_order_seq_cst); }

  // Claims a slot for `call`, armed with `deadline_nanos` (0: none).
  // RESOURCE_EXHAUSTED when every slot is in use.
  StatusOr<CallId> Insert(T* call, int64_t deadline_nanos = 0) {
    std::lock_guard lock(mu_);
    if (free_.empty()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("too many calls in flight (the call table holds ", capacity_, ")"));
    }
    uint32_t index = free_.back();
    free_.pop_back();
    Slot& s = slots_[index];
    s.call = call;
    s.deadline.store(deadline_nanos, std::memory_order_relaxed);
    if (index >= high_water_) high_water_ = index + 1;
    size_.fetch_add(1, std::memory_order_seq_cst);
    return MakeCallId(index, s.generation);
  }

  // Sets (or, with 0, clears) the deadline of call `id` if it is still in
  // the table; false if it is gone. Never touches a slot reused since.
  bool Arm(CallId id, int64_t deadline_nanos) {
    std::lock_guard lock(mu_);
    Slot* s = FindLocked(id);
    if (s == nullptr) return false;
    s->deadline.store(deadline_nanos, std::memory_order_relaxed);
    return true;
  }
  bool Disarm(CallId id) { return Arm(id, 0); }

  // The call `id`, pinned: `pin(call)` runs under the table's lock (it
  // takes a reference the caller drops when done), so a concurrent Remove
  // cannot free the call before the pin holds it. nullptr if unknown,
  // removed, or stale.
  template <typename Pin>
  T* Acquire(CallId id, Pin&& pin) {
    std::lock_guard lock(mu_);
    Slot* s = FindLocked(id);
    if (s == nullptr) return nullptr;
    pin(s->call);
    return s->call;
  }

  // Takes the call out of the table. nullptr if `id` is unknown, already
  // removed, or of an older generation of its slot (a stale reply).
  T* Remove(CallId id) {
    std::lock_guard lock(mu_);
    return RemoveLocked(id);
  }

  // Removes every armed call whose deadline is at or before `now_nanos` and
  // calls on_expired(id, call) for each, outside the lock. Returns how many.
  template <typename F>
  size_t SweepExpired(int64_t now_nanos, F&& on_expired) {
    Expired expired;
    {
      std::lock_guard lock(mu_);
      for (uint32_t i = 0; i < high_water_; ++i) {
        Slot& s = slots_[i];
        int64_t d = s.deadline.load(std::memory_order_relaxed);
        if (d != 0 && d <= now_nanos && s.call != nullptr) {
          CallId id = MakeCallId(i, s.generation);
          expired.push_back({id, RemoveLocked(id)});
        }
      }
    }
    for (auto& [id, call] : expired) on_expired(id, call);
    return expired.size();
  }

  // Whether pred(call) holds for any call in the table (under its lock).
  template <typename Pred>
  bool AnyOf(Pred&& pred) {
    std::lock_guard lock(mu_);
    for (uint32_t i = 0; i < high_water_; ++i) {
      if (slots_[i].call != nullptr && pred(slots_[i].call)) return true;
    }
    return false;
  }

  // Removes every call for which pred(call) holds and hands each to
  // on_removed(id, call), outside the lock. For a connection that failed.
  template <typename Pred, typename F>
  size_t RemoveIf(Pred&& pred, F&& on_removed) {
    Expired removed;
    {
      std::lock_guard lock(mu_);
      for (uint32_t i = 0; i < high_water_; ++i) {
        Slot& s = slots_[i];
        if (s.call != nullptr && pred(s.call)) {
          CallId id = MakeCallId(i, s.generation);
          removed.push_back({id, RemoveLocked(id)});
        }
      }
    }
    for (auto& [id, call] : removed) on_removed(id, call);
    return removed.size();
  }

 private:
  struct Slot {
    std::atomic<int64_t> deadline{0};  // 0: not armed
    uint32_t generation = 1;           // never 0, so no call id is 0
    T* call = nullptr;
  };
  struct Entry {
    CallId id;
    T* call;
  };
  using Expired = std::vector<Entry>;

  Slot* FindLocked(CallId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    uint32_t index = CallIdSlot(id);
    if (index >= capacity_) return nullptr;
    Slot& s = slots_[index];
    if (s.call == nullptr || s.generation != CallIdGeneration(id)) return nullptr;
    return &s;
  }

  T* RemoveLocked(CallId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Slot* found = FindLocked(id);
    if (found == nullptr) return nullptr;
    Slot& s = *found;
    const uint32_t index = CallIdSlot(id);
    T* call = s.call;
    s.call = nullptr;
    s.deadline.store(0, std::memory_order_relaxed);
    if (++s.generation == 0) s.generation = 1;
    free_.push_back(index);
    size_.fetch_sub(1, std::memory_order_seq_cst);
    return call;
  }

  const uint32_t capacity_;
  std::unique_ptr<Slot[]> slots_;
  std::mutex mu_;
  std::vector<uint32_t> free_ ABSL_GUARDED_BY(mu_);
  uint32_t high_water_ ABSL_GUARDED_BY(mu_) = 0;  // slots at or above were never used
  std::atomic<uint32_t> size_{0};
};

}  // namespace zcrpc
