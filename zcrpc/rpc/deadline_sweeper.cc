#include "zcrpc/rpc/deadline_sweeper.h"

#include <algorithm>

namespace zcrpc {

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

void DeadlineSweeper::SweepOnce() {
  const int64_t now = clock_->NowNanos();
  std::vector<Client*> busy;
  {
    std::lock_guard lock(clients_mu_);
    for (Client* c : clients_) {
      if (c->HasCallsInFlight()) busy.push_back(c);
    }
    for (Client* c : busy) sweeping_.push_back({c, std::this_thread::get_id()});
  }
  auto done_with = [this](Client* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(clients_mu_) {
    const std::thread::id me = std::this_thread::get_id();
    sweeping_.erase(std::find_if(sweeping_.begin(), sweeping_.end(),
                                 [&](const Sweep& s) { return s.client == c && s.by == me; }));
    sweep_done_.notify_all();
  };
  for (Client* c : busy) {
    {
      // Skip a client removed since the snapshot (Remove waits for us only
      // once we marked it, which we did; it may have left the list since).
      std::lock_guard lock(clients_mu_);
      if (std::find(clients_.begin(), clients_.end(), c) == clients_.end()) {
        done_with(c);
        continue;
      }
    }
    c->SweepExpired(now);  // no sweeper lock held: it may run callbacks and send
    std::lock_guard lock(clients_mu_);
    done_with(c);
  }
}

void DeadlineSweeper::Run() {
  for (;;) {
    bool busy;
    {
      std::lock_guard lock(clients_mu_);
      busy = AnyCallsInFlight();
    }
    if (busy) SweepOnce();
    std::unique_lock lock(park_mu_);
    if (stop_) return;
    if (busy) {
      park_cv_.wait_for(lock, tick_, [this] { return stop_; });
      continue;
    }
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
    }
    wake_ = false;
    parked_.store(false, std::memory_order_seq_cst);
    if (stop_) return;
  }
}

}  // namespace zcrpc
