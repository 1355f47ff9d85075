// DeadlineSweeper: the one thread per process that fails calls at their
// deadline. Every tick it asks each registered client (a Channel, a
// Server) to sweep its call table; a client removes the expired calls
// (each exactly once) and finishes them: DEADLINE_EXCEEDED and a cancel
// frame on a channel, a cancelled context on a server. There is no ordered
// timer structure (docs/timers.md). It parks once no client has had a call
// in flight for 100 ticks, so an idle process does not wake 1000 times a
// second, while back-to-back calls do not each pay to wake it; parked, it
// still sweeps a client whose connection timers are due (NextTimerNanos),
// waking at most every 100 ms for them.
//
// Lock discipline: a client's SweepExpired runs with none of the sweeper's
// locks held, so it may run completion callbacks and send frames (Send
// never blocks: transport.h), and a callback may even destroy its channel
// (Remove() from the sweeper's own thread does not wait for itself).
//
// Thread-safe. Clients must Remove() themselves before they are destroyed;
// Remove() returns only once no sweep of that client is running on another
// thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "zcrpc/base/clock.h"

namespace zcrpc {

class DeadlineSweeper {
 public:
  class Client {
   public:
    // Fails every call whose deadline is at or before `now_nanos`. Called
    // on the sweeper's thread (or SweepOnce's caller) with no sweeper lock
    // held.
    virtual void SweepExpired(int64_t now_nanos) = 0;
    // Whether any call is in flight (a cheap atomic read).
    virtual bool HasCallsInFlight() const = 0;
    // When, on the sweeper's clock, this client wants SweepExpired even
    // with no call in flight (its connections' keepalive and idle timers);
    // 0: never. A cheap atomic read. The sweeper calls it at least every
    // 100 ms, so a later answer may change.
    virtual int64_t NextTimerNanos() const { return 0; }

   protected:
    ~Client() = default;
  };

  static constexpr std::chrono::nanoseconds kDefaultTick = std::chrono::milliseconds(1);

  // The process's sweeper: the real clock, a 1 ms tick. Never destroyed.
  static DeadlineSweeper& Default();

  // A sweeper of one's own, for tests: with `run_thread` false nothing
  // sweeps until SweepOnce() is called (with a FakeClock, tests then run
  // instantly and deterministically).
  explicit DeadlineSweeper(std::chrono::nanoseconds tick = kDefaultTick, Clock* clock = &Clock::Real(),
                           bool run_thread = true);
  ~DeadlineSweeper();
  DeadlineSweeper(const DeadlineSweeper&) = delete;
  DeadlineSweeper& operator=(const DeadlineSweeper&) = delete;

  std::chrono::nanoseconds tick() const { return tick_; }
  Clock& clock() const { return *clock_; }

  void Add(Client* client);
  void Remove(Client* client);
  // A client now has a call in flight; unparks the thread if it sleeps.
  void Wake() {
    if (parked_.load(std::memory_order_seq_cst)) WakeSlow();
  }
  // One sweep of every client with calls in flight or a timer due, on the
  // calling thread, at clock().NowNanos(). Returns whether any client had
  // calls in flight. In steady state it
  // takes the sweeper's lock twice and allocates nothing, whatever the
  // number of calls.
  bool SweepOnce();

 private:
  void Run();
  void WakeSlow();
  bool AnyCallsInFlight() ABSL_EXCLUSIVE_LOCKS_REQUIRED(clients_mu_);
  bool WokenOrStopped() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(park_mu_) { return wake_ || stop_; }

  const std::chrono::nanoseconds tick_;
  Clock* const clock_;
  std::mutex clients_mu_;
  std::condition_variable sweep_done_;  // a client's sweep finished
  std::vector<Client*> clients_ ABSL_GUARDED_BY(clients_mu_);
  struct Sweep {
    Client* client;
    std::thread::id by;
  };
  std::vector<Sweep> sweeping_ ABSL_GUARDED_BY(clients_mu_);  // clients being swept now, and by whom
  std::mutex park_mu_;
  std::condition_variable park_cv_;
  bool wake_ ABSL_GUARDED_BY(park_mu_) = false;
  bool stop_ ABSL_GUARDED_BY(park_mu_) = false;
  std::atomic<bool> stopping_{false};  // stop_, for the busy loop that ticks without park_mu_
  std::atomic<bool> parked_{false};
  std::thread thread_;
};

}  // namespace zcrpc
