#include "zcrpc/rpc/deadline_sweeper.h"

#include <algorithm>

namespace zcrpc {

DeadlineSweeper::DeadlineSweeper(std::chrono::nanoseconds tick, Clock* clock)
    : tick_(tick), clock_(clock), thread_([this] { Run(); }) {}

DeadlineSweeper::~DeadlineSweeper() {
  {
    std::lock_guard lock(park_mu_);
    stop_ = true;
  }
  park_cv_.notify_all();
  thread_.join();
}

void DeadlineSweeper::Add(Client* client) {
  std::lock_guard lock(clients_mu_);
  clients_.push_back(client);
}

void DeadlineSweeper::Remove(Client* client) {
  std::lock_guard lock(clients_mu_);  // waits for a sweep in progress
  std::erase(clients_, client);
}

void DeadlineSweeper::WakeSlow() {
  {
    std::lock_guard lock(park_mu_);
    wake_ = true;
  }
  park_cv_.notify_all();
}

bool DeadlineSweeper::AnyCallsInFlight() {
  return std::any_of(clients_.begin(), clients_.end(),
                     [](Client* c) { return c->HasCallsInFlight(); });
}

void DeadlineSweeper::Run() {
  for (;;) {
    bool busy;
    {
      std::lock_guard lock(clients_mu_);
      busy = AnyCallsInFlight();
      if (busy) {
        int64_t now = clock_->NowNanos();
        for (Client* c : clients_) {
          if (c->HasCallsInFlight()) c->SweepExpired(now);
        }
      }
    }
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
