// Monotonic time in nanoseconds, behind an interface so tests can drive the
// call table's deadline sweep with a fake clock and run instantly.
//
// Thread-safe: NowNanos() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>

namespace zcrpc {

class Clock {
 public:
  virtual ~Clock() = default;
  // Nanoseconds on a monotonic clock with an arbitrary epoch. Never returns 0
  // (0 means "no deadline" in the call table).
  virtual int64_t NowNanos() const = 0;

  // The process-wide steady clock. Never destroyed.
  static Clock& Real();
};

// The real clock: std::chrono::steady_clock.
class SteadyClock final : public Clock {
 public:
  int64_t NowNanos() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

// A clock that only moves when told to. For tests.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_nanos = 1'000'000'000) : now_(start_nanos) {}
  int64_t NowNanos() const override { return now_.load(std::memory_order_acquire); }
  void Advance(std::chrono::nanoseconds d) { now_.fetch_add(d.count(), std::memory_order_acq_rel); }
  void Set(int64_t nanos) { now_.store(nanos, std::memory_order_release); }

 private:
  std::atomic<int64_t> now_;
};

// t + d, clamped to int64_t's range: a deadline or timer computed from a
// huge duration ("infinity", or a value a peer sent) never wraps into the
// past, and a huge negative one never into the future.
inline int64_t SaturatingAddNanos(int64_t t, int64_t d) {
  int64_t sum;
  if (__builtin_add_overflow(t, d, &sum)) {
    return d > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return sum;
}

inline Clock& Clock::Real() {
  static SteadyClock* clock = new SteadyClock();  // never destroyed: usable at exit
  return *clock;
}

}  // namespace zcrpc
