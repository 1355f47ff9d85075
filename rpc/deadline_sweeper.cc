#include "rpc/deadline_sweeper.h"

#include <algorithm>

namespace zcrpc {

DeadlineSweeper::DeadlineSweeper(std::chrono::nanoseconds tick, Clock* clock)
    : tick_(tick), clock_(clock), thread_([this] { Run(); }) {}

DeadlineSweeper::~DeadlineSweeper() {
  {
    absl::MutexLock lock(&park_mu_);
    stop_ = true;
  }
  thread_.join();
}

void DeadlineSweeper::Add(Client* client) {
  absl::MutexLock lock(&clients_mu_);
  clients_.push_back(client);
}

void DeadlineSweeper::Remove(Client* client) {
  absl::MutexLock lock(&clients_mu_);  // waits for a sweep in progress
  std::erase(clients_, client);
}

void DeadlineSweeper::WakeSlow() {
  absl::MutexLock lock(&park_mu_);
  wake_ = true;
}

bool DeadlineSweeper::AnyCallsInFlight() {
  return std::any_of(clients_.begin(), clients_.end(),
                     [](Client* c) { return c->HasCallsInFlight(); });
}

void DeadlineSweeper::Run() {
  for (;;) {
    bool busy;
    {
      absl::MutexLock lock(&clients_mu_);
      busy = AnyCallsInFlight();
      if (busy) {
        int64_t now = clock_->NowNanos();
        for (Client* c : clients_) {
          if (c->HasCallsInFlight()) c->SweepExpired(now);
        }
      }
    }
    absl::MutexLock lock(&park_mu_);
    if (stop_) return;
    if (busy) {
      park_mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::FromChrono(tick_));
      continue;
    }
    // Park. Publishing `parked_` before re-checking the clients pairs with a
    // client's seq_cst insert-then-Wake(): one of the two sees the other, so
    // a call that starts now is never left unswept for a whole park.
    parked_.store(true, std::memory_order_seq_cst);
    park_mu_.Unlock();
    bool became_busy;
    {
      absl::MutexLock clients_lock(&clients_mu_);
      became_busy = AnyCallsInFlight();
    }
    park_mu_.Lock();
    if (!became_busy) {
      park_mu_.AwaitWithTimeout(absl::Condition(this, &DeadlineSweeper::WokenOrStopped),
                                absl::Milliseconds(100));
    }
    wake_ = false;
    parked_.store(false, std::memory_order_seq_cst);
    if (stop_) return;
  }
}

}  // namespace zcrpc
