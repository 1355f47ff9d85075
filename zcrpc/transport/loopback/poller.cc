#include "zcrpc/transport/loopback/poller.h"

#include <chrono>
#include <utility>

#include "zcrpc/base/clock.h"

namespace zcrpc::transport::loopback {

Poller::Poller() : thread_([this] { Run(); }) {}

Poller::~Poller() { Stop(); }

void Poller::Post(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    if (!stopped_) {
      ready_.push_back(std::move(task));
      wake_.notify_one();
      return;
    }
  }
  // Stopped: `task` is destroyed here, outside the lock (it may hold the
  // last reference to a connection).
}

void Poller::PostAt(int64_t when_nanos, std::function<void()> task) {
  std::lock_guard lock(mu_);
  if (stopped_) return;
  timed_.push(Timed{when_nanos, next_seq_++, std::move(task)});
  wake_.notify_one();
}

void Poller::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    wake_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void Poller::Run() {
  std::unique_lock lock(mu_);
  for (;;) {
    // Due timed tasks join the ready queue (all of them once stopping).
    const int64_t now = Clock::Real().NowNanos();
    while (!timed_.empty() && (stopping_ || timed_.top().when <= now)) {
      ready_.push_back(std::move(const_cast<Timed&>(timed_.top()).task));
      timed_.pop();
    }
    if (!ready_.empty()) {
      std::function<void()> task = std::move(ready_.front());
      ready_.pop_front();
      lock.unlock();
      task();
      task = nullptr;  // destroyed outside the lock too
      lock.lock();
      continue;
    }
    if (stopping_) break;
    if (timed_.empty()) {
      wake_.wait(lock);
    } else {
      wake_.wait_for(lock, std::chrono::nanoseconds(timed_.top().when - now));
    }
  }
  stopped_ = true;
}

}  // namespace zcrpc::transport::loopback
