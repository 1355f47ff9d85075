#include "zcrpc/rpc/deadline_sweeper.h"

#include <algorithm>

namespace zcrpc {
namespace {

// The clients the sweep on this thread is going through. Reused from tick
// to tick (a sweep allocates nothing in steady state); a client that a
// callback in this sweep removes is blanked here, so it is not swept after.
thread_local std::vector<DeadlineSweeper::Client*> t_sweep_list;

// Ticks up to this long are slept without a lock; longer ones wait on the
// condition variable, so the destructor need not wait for them.
constexpr std::chrono::nanoseconds kSleepTickLimit = std::chrono::milliseconds(10);

// Ticks with nothing in flight before the thread parks. Back-to-back
// calls leave the tables empty for a moment between calls; parking at
// every such moment would make nearly every call pay to wake the thread.
constexpr int kIdleTicksBeforePark = 100;

}  // namespace

DeadlineSweeper& DeadlineSweeper::Default() {
  static DeadlineSweeper* sweeper = new DeadlineSweeper();  // never destroyed: channels may outlive main()
  return *sweeper;
}

DeadlineSweeper::DeadlineSweeper(std::chrono::nanoseconds tick, Clock* clock, bool run_thread)
    : tick_(tick), clock_(clock) {
  if (run_thread) thread_ = std::thread([this] { Run(); });
}

DeadlineSweeper::~DeadlineSweeper() {
  {
    std::lock_guard lock(park_mu_);
    stop_ = true;
    stopping_.store(true, std::memory_order_release);
  }
  park_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DeadlineSweeper::Add(Client* client) {
  {
    std::lock_guard lock(clients_mu_);
    clients_.push_back(client);
  }
  Wake();
}

void DeadlineSweeper::Remove(Client* client) {
  std::replace(t_sweep_list.begin(), t_sweep_list.end(), client, static_cast<Client*>(nullptr));
  std::unique_lock lock(clients_mu_);
  std::erase(clients_, client);
  // A sweep of this client on another thread must finish first; one on this
  // thread (a completion callback destroying its channel) is our caller.
  const std::thread::id me = std::this_thread::get_id();
  sweep_done_.wait(lock, [&] {
    return std::none_of(sweeping_.begin(), sweeping_.end(),
                        [&](const Sweep& s) { return s.client == client && s.by != me; });
  });
}

void DeadlineSweeper::WakeSlow() {
  {
    std::lock_guard lock(park_mu_);
    wake_ = true;
  }
  park_cv_.notify_all();
}

bool DeadlineSweeper::AnyCallsInFlight() {
  return std::any_of(clients_.begin(), clients_.end(), [](Client* c) { return c->HasCallsInFlight(); });
}

bool DeadlineSweeper::SweepOnce() {
  const int64_t now = clock_->NowNanos();
  std::vector<Client*>& busy = t_sweep_list;
  busy.clear();
  const std::thread::id me = std::this_thread::get_id();
  bool calls_in_flight = false;
  {
    std::lock_guard lock(clients_mu_);
    for (Client* c : clients_) {
      const bool has_calls = c->HasCallsInFlight();
      calls_in_flight |= has_calls;
      if (has_calls) {
        busy.push_back(c);
      } else if (const int64_t timer = c->NextTimerNanos(); timer != 0 && timer <= now) {
        busy.push_back(c);
      }
    }
    for (Client* c : busy) sweeping_.push_back({c, me});
  }
  if (busy.empty()) return false;
  // No sweeper lock held: a client may run callbacks and send. A client
  // Remove()d on another thread waits for its mark to go, so it is still
  // whole here; one removed by a callback of this sweep is blanked.
  for (size_t i = 0; i < busy.size(); ++i) {
    if (Client* c = busy[i]) c->SweepExpired(now);
  }
  std::lock_guard lock(clients_mu_);
  std::erase_if(sweeping_, [&](const Sweep& s) { return s.by == me; });
  sweep_done_.notify_all();
  return calls_in_flight;
}

void DeadlineSweeper::Run() {
  int idle_ticks = 0;
  for (;;) {
    if (stopping_.load(std::memory_order_acquire)) return;
    idle_ticks = SweepOnce() ? 0 : idle_ticks + 1;
    if (idle_ticks < kIdleTicksBeforePark) {
      // Busy, or idle only briefly: tick with a plain sleep, no lock, so
      // that sweeping costs the same however many calls run. A stop is
      // seen within one tick.
      if (tick_ <= kSleepTickLimit) {
        std::this_thread::sleep_for(tick_);
      } else {
        std::unique_lock lock(park_mu_);
        park_cv_.wait_for(lock, tick_, [this] { return stop_; });
      }
      continue;
    }
    idle_ticks = 0;
    std::unique_lock lock(park_mu_);
    if (stop_) return;
    // Park. Publishing `parked_` before re-checking the clients pairs with a
    // client's seq_cst insert-then-Wake(): one of the two sees the other, so
    // a call that starts now is never left unswept for a whole park.
    parked_.store(true, std::memory_order_seq_cst);
    lock.unlock();
    bool became_busy;
    {
      std::lock_guard clients_lock(clients_mu_);
      became_busy = AnyCallsInFlight();
    }
    lock.lock();
    if (!became_busy) {
      park_cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return WokenOrStopped(); });
      // Not woken by a call: one sweep for timers that fell due, then park
      // again, rather than ticking 100 times.
      if (!wake_) idle_ticks = kIdleTicksBeforePark - 1;
    }
    wake_ = false;
    parked_.store(false, std::memory_order_seq_cst);
    if (stop_) return;
  }
}

}  // namespace zcrpc
