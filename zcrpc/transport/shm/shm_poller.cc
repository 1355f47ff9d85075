#include "zcrpc/transport/shm/shm_poller.h"

#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "zcrpc/base/clock.h"
#include "zcrpc/base/cpu_relax.h"

namespace zcrpc::transport::shm {
namespace {

// How often a spinning poller asks epoll about sockets and tends its items:
// often enough that a dead peer or a stalled queue is seen within a couple
// of milliseconds, rarely enough that the system call (~0.5 µs) is lost in
// the spinning.
constexpr int64_t kTendIntervalNanos = 1'000'000;

int64_t Now() { return Clock::Real().NowNanos(); }

}  // namespace

void SpinPause(int64_t idle_nanos) {
  if (idle_nanos < kSpinBeforeYieldNanos) {
    CpuRelax();
  } else {
    sched_yield();
  }
}

Poller::Poller() : epoll_(epoll_create1(EPOLL_CLOEXEC)), wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!epoll_.valid() || !wake_.valid()) {
    std::perror("zcrpc shm: poller setup");
    std::abort();
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = 0;  // the wake eventfd; items are never at address 0
  epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &event);
}

Poller::~Poller() { Stop(); }

void Poller::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Poller::Stop() {
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
  }
  stopping_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);
  if (!thread_.joinable()) return;
  // A transport destroyed from inside one of its own callbacks: the thread
  // finishes its round and ends on its own.
  if (OnThread()) thread_.detach();
  else thread_.join();
}

bool Poller::Post(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return false;
    posted_.push_back(std::move(task));
    has_posted_.store(true, std::memory_order_release);
  }
  const uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);
  return true;
}

bool Poller::Add(std::shared_ptr<Pollable> item) {
  return Post([this, item = std::move(item)]() mutable {
    item->Attach(*this);
    items_.push_back(std::move(item));
  });
}

void Poller::Watch(int fd, uint32_t events, Pollable* item, int which) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = reinterpret_cast<uintptr_t>(item) | static_cast<uintptr_t>(which & 1);
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) std::perror("zcrpc shm: epoll_ctl ADD");
}

void Poller::Unwatch(int fd) { (void)epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

void Poller::RunPosted() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(mu_);
    tasks.swap(posted_);
    has_posted_.store(false, std::memory_order_relaxed);
  }
  for (auto& task : tasks) task();
}

void Poller::Wait(int timeout_ms) {
  epoll_event events[64];
  const int n = epoll_wait(epoll_.get(), events, 64, timeout_ms);
  for (int i = 0; i < n; ++i) {
    const uint64_t data = events[i].data.u64;
    if (data == 0) {
      uint64_t count;
      (void)!read(wake_.get(), &count, sizeof count);
      continue;
    }
    auto* item = reinterpret_cast<Pollable*>(static_cast<uintptr_t>(data & ~uint64_t{1}));
    item->OnEvent(static_cast<int>(data & 1), events[i].events);
  }
}

void Poller::TendAll(int64_t now) {
  for (size_t i = 0; i < items_.size();) {
    if (items_[i]->Tend(now)) {
      ++i;
      continue;
    }
    items_[i] = std::move(items_.back());
    items_.pop_back();
  }
}

void Poller::Run() {
  thread_id_.store(std::this_thread::get_id(), std::memory_order_release);
  int64_t idle_since = Now();
  int64_t next_tend = idle_since + kTendIntervalNanos;
  while (!stopping_.load(std::memory_order_acquire)) {
    if (has_posted_.load(std::memory_order_acquire)) RunPosted();
    bool worked = false;
    bool busy = false;
    int64_t spin = 0;
    // By index: a handler may not add items directly (Add posts), but keep
    // the loop safe against the vector moving anyway.
    for (size_t i = 0; i < items_.size(); ++i) {
      Pollable& item = *items_[i];
      worked |= item.Poll();
      spin = std::max(spin, item.spin_nanos());
      busy |= item.busy_poll();
    }
    int64_t now = Now();
    if (worked) idle_since = now;
    const bool keep_spinning = busy || now - idle_since < spin;
    if (now >= next_tend || !keep_spinning) {
      Wait(0);
      TendAll(now);
      next_tend = now + kTendIntervalNanos;
    }
    if (keep_spinning) {
      SpinPause(now - idle_since);
      continue;
    }
    // Posts and Stop() set their flag before they ring the wake eventfd,
    // which Wait(0) above may have drained: look at the flags, not the fd.
    bool can_sleep = !has_posted_.load(std::memory_order_acquire) && !stopping_.load(std::memory_order_acquire);
    for (auto& item : items_) can_sleep &= item->PrepareSleep();
    if (can_sleep) {
      int64_t deadline = 0;
      for (auto& item : items_) {
        const int64_t d = item->deadline_nanos();
        if (d != 0 && (deadline == 0 || d < deadline)) deadline = d;
      }
      int timeout_ms = -1;
      if (deadline != 0) {
        now = Now();
        timeout_ms = deadline <= now ? 0 : static_cast<int>(std::min<int64_t>((deadline - now + 999'999) / 1'000'000, 60'000));
      }
      Wait(timeout_ms);
    }
    for (auto& item : items_) item->AfterSleep();
    idle_since = Now();
  }
  RunPosted();
  for (auto& item : items_) item->Shutdown();
  items_.clear();
}

}  // namespace zcrpc::transport::shm
