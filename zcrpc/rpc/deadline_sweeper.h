// DeadlineSweeper: one thread that, every tick, asks each registered client
// (a channel) to fail the calls whose deadline has passed. It parks while no
// client has a call in flight, so an idle process does not wake 1000 times a
// second.
//
// Thread-safe. Clients must Remove() themselves before they are destroyed;
// Remove() returns only once no sweep of that client is running.
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
    // Fails every call whose deadline is at or before `now_nanos`.
    virtual void SweepExpired(int64_t now_nanos) = 0;
    // Whether any call is in flight (a cheap atomic read).
    virtual bool HasCallsInFlight() const = 0;

   protected:
    ~Client() = default;
  };

  static constexpr std::chrono::nanoseconds kDefaultTick = std::chrono::milliseconds(1);

  explicit DeadlineSweeper(std::chrono::nanoseconds tick = kDefaultTick, Clock* clock = &Clock::Real());
  ~DeadlineSweeper();
  DeadlineSweeper(const DeadlineSweeper&) = delete;
  DeadlineSweeper& operator=(const DeadlineSweeper&) = delete;

  std::chrono::nanoseconds tick() const { return tick_; }

  void Add(Client* client);
  void Remove(Client* client);
  // A client now has a call in flight; unparks the thread if it sleeps.
  void Wake() {
    if (parked_.load(std::memory_order_seq_cst)) WakeSlow();
  }

 private:
  void Run();
  void WakeSlow();
  bool AnyCallsInFlight() ABSL_EXCLUSIVE_LOCKS_REQUIRED(clients_mu_);
  bool WokenOrStopped() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(park_mu_) { return wake_ || stop_; }

  const std::chrono::nanoseconds tick_;
  Clock* const clock_;
  std::mutex clients_mu_;
  std::vector<Client*> clients_ ABSL_GUARDED_BY(clients_mu_);
  std::mutex park_mu_;
  std::condition_variable park_cv_;
  bool wake_ ABSL_GUARDED_BY(park_mu_) = false;
  bool stop_ ABSL_GUARDED_BY(park_mu_) = false;
  std::atomic<bool> parked_{false};
  std::thread thread_;
};

}  // namespace zcrpc
