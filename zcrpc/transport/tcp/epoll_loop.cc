#include "zcrpc/transport/tcp/epoll_loop.h"

#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstdlib>

#include "zcrpc/base/clock.h"
#include "zcrpc/transport/internal/errno_status.h"

namespace zcrpc::transport::tcp {
namespace {

// epoll data of the loop's own descriptors; watcher ids start at 1 and
// count up, far below these.
constexpr uint64_t kStopId = ~uint64_t{0};
constexpr uint64_t kPostId = ~uint64_t{0} - 1;
constexpr uint64_t kTimerId = ~uint64_t{0} - 2;
constexpr uint64_t kLazyTimerId = ~uint64_t{0} - 3;

thread_local bool on_loop_thread = false;

void AddOwn(int epoll_fd, int fd, uint64_t id, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = id;
  if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) std::abort();  // out of memory: nothing can work
}

void Drain(int fd) {
  uint64_t value = 0;
  [[maybe_unused]] ssize_t n = ::read(fd, &value, sizeof value);
}

}  // namespace

EpollLoop::EpollLoop(int threads, std::chrono::nanoseconds lazy_tick)
    : epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)),
      stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      post_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      timer_fd_(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)),
      lazy_timer_fd_(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)),
      lazy_tick_(std::max<std::chrono::nanoseconds>(lazy_tick, std::chrono::microseconds(1))) {
  if (!epoll_fd_.valid() || !stop_fd_.valid() || !post_fd_.valid() || !timer_fd_.valid() ||
      !lazy_timer_fd_.valid()) {
    // Nothing can work without these; this only happens out of descriptors.
    std::abort();
  }
  // Level-triggered and never disarmed: the stop event wakes every thread.
  AddOwn(epoll_fd_.get(), stop_fd_.get(), kStopId, EPOLLIN);
  // Exclusive: one thread runs the posted tasks or the tick, not all of them.
  AddOwn(epoll_fd_.get(), post_fd_.get(), kPostId, EPOLLIN | EPOLLEXCLUSIVE);
  AddOwn(epoll_fd_.get(), timer_fd_.get(), kTimerId, EPOLLIN | EPOLLEXCLUSIVE);
  AddOwn(epoll_fd_.get(), lazy_timer_fd_.get(), kLazyTimerId, EPOLLIN | EPOLLEXCLUSIVE);
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Run(); });
}

EpollLoop::~EpollLoop() {
  Stop();
  DropLazy();  // pushed after Stop() by connections that outlived the transport
}

void EpollLoop::Stop() {
  if (stopped_) return;
  stopped_ = true;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
  for (std::thread& t : threads_) t.join();
  std::vector<std::shared_ptr<Watcher>> left;
  {
    std::lock_guard lock(mu_);
    accepting_posts_ = false;
    posted_.clear();
    for (auto& [id, weak] : watchers_) {
      if (auto w = weak.lock()) left.push_back(std::move(w));
    }
    ticking_.clear();
  }
  for (const auto& w : left) w->OnLoopStopped();
  DropLazy();
}

void EpollLoop::DropLazy() {
  for (LazyNode* n = lazy_new_.exchange(nullptr, std::memory_order_acquire); n != nullptr;) {
    LazyNode* next = n->next;
    delete n;
    n = next;
  }
  lazy_.clear();
}

StatusOr<uint64_t> EpollLoop::Add(int fd, std::weak_ptr<Watcher> watcher) {
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    watchers_.emplace(id, std::move(watcher));
  }
  epoll_event ev{};
  ev.events = 0;  // disarmed until Modify()
  ev.data.u64 = id;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    Status error = internal::ErrnoError("epoll_ctl(ADD)");
    std::lock_guard lock(mu_);
    watchers_.erase(id);
    return error;
  }
  return id;
}

void EpollLoop::Modify(int fd, uint64_t id, uint32_t events) {
  epoll_event ev{};
  ev.events = events == 0 ? 0 : events | EPOLLONESHOT;
  ev.data.u64 = id;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, fd, &ev);
}

void EpollLoop::Remove(int fd, uint64_t id) {
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
  std::lock_guard lock(mu_);
  watchers_.erase(id);
  ticking_.erase(id);
}

void EpollLoop::WatchTicks(uint64_t id) {
  std::lock_guard lock(mu_);
  if (!accepting_posts_) return;
  ticking_.insert(id);
  if (!timer_armed_) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(kTickInterval).count();
    itimerspec spec{};
    spec.it_interval.tv_sec = spec.it_value.tv_sec = ns / 1'000'000'000;
    spec.it_interval.tv_nsec = spec.it_value.tv_nsec = ns % 1'000'000'000;
    ::timerfd_settime(timer_fd_.get(), 0, &spec, nullptr);
    timer_armed_ = true;
  }
}

void EpollLoop::Post(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    if (!accepting_posts_) return;
    posted_.push_back(std::move(task));
  }
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(post_fd_.get(), &one, sizeof one);
}

void EpollLoop::WatchLazily(std::weak_ptr<Watcher> watcher) {
  auto* node = new LazyNode{std::move(watcher), lazy_new_.load(std::memory_order_relaxed)};
  while (!lazy_new_.compare_exchange_weak(node->next, node, std::memory_order_seq_cst, std::memory_order_relaxed)) {
  }
  // Pairs with LazyTick(), which clears lazy_timer_on_ and then looks at
  // lazy_new_: either it sees this node, or this sees the timer off and
  // arms it. Both sequentially consistent, so one of them does.
  if (!lazy_timer_on_.exchange(true, std::memory_order_seq_cst)) ArmLazyTimer();
}

void EpollLoop::ArmLazyTimer() {
  itimerspec spec{};  // one-shot: the tick re-arms it while it has work
  spec.it_value.tv_sec = lazy_tick_.count() / 1'000'000'000;
  spec.it_value.tv_nsec = lazy_tick_.count() % 1'000'000'000;
  ::timerfd_settime(lazy_timer_fd_.get(), 0, &spec, nullptr);
}

void EpollLoop::LazyTick() {
  Drain(lazy_timer_fd_.get());
  // One loop thread at a time walks lazy_; another woken meanwhile leaves
  // it to that one, which re-arms the timer when it is done.
  if (lazy_ticking_.exchange(true, std::memory_order_acquire)) return;
  for (LazyNode* n = lazy_new_.exchange(nullptr, std::memory_order_acquire); n != nullptr;) {
    lazy_.push_back(std::move(n->watcher));
    LazyNode* next = n->next;
    delete n;
    n = next;
  }
  for (size_t i = 0; i < lazy_.size();) {
    std::shared_ptr<Watcher> watcher = lazy_[i].lock();
    if (watcher != nullptr && watcher->OnLazyTick()) {
      ++i;
      continue;
    }
    if (i + 1 != lazy_.size()) lazy_[i] = std::move(lazy_.back());
    lazy_.pop_back();
  }
  if (!lazy_.empty()) {
    ArmLazyTimer();
  } else {
    lazy_timer_on_.store(false, std::memory_order_seq_cst);
    if (lazy_new_.load(std::memory_order_seq_cst) != nullptr &&
        !lazy_timer_on_.exchange(true, std::memory_order_seq_cst)) {
      ArmLazyTimer();
    }
  }
  lazy_ticking_.store(false, std::memory_order_release);
}

bool EpollLoop::OnLoopThread() { return on_loop_thread; }

std::shared_ptr<EpollLoop::Watcher> EpollLoop::Find(uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = watchers_.find(id);
  return it == watchers_.end() ? nullptr : it->second.lock();
}

void EpollLoop::Tick() {
  Drain(timer_fd_.get());
  std::vector<std::shared_ptr<Watcher>> due;
  // Watchers dropped from the tick set, released after the lock: the last
  // reference may be this one, and a watcher's destructor calls Remove().
  std::vector<std::shared_ptr<Watcher>> dropped;
  {
    std::lock_guard lock(mu_);
    for (auto it = ticking_.begin(); it != ticking_.end();) {
      auto w = watchers_.find(*it);
      std::shared_ptr<Watcher> watcher = w == watchers_.end() ? nullptr : w->second.lock();
      // Decided under the lock: a watcher that wants ticks again calls
      // WatchTicks(), which waits for this lock, after making it visible.
      if (watcher == nullptr || !watcher->WantsTicks()) {
        ticking_.erase(it++);
        dropped.push_back(std::move(watcher));
        continue;
      }
      due.push_back(std::move(watcher));
      ++it;
    }
    if (ticking_.empty() && timer_armed_) {
      itimerspec off{};
      ::timerfd_settime(timer_fd_.get(), 0, &off, nullptr);
      timer_armed_ = false;
    }
  }
  const int64_t now = Clock::Real().NowNanos();
  for (const auto& w : due) w->OnTick(now);
}

void EpollLoop::RunPosted() {
  Drain(post_fd_.get());
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(mu_);
    tasks.swap(posted_);
  }
  for (auto& task : tasks) task();
}

void EpollLoop::Run() {
  on_loop_thread = true;
  epoll_event events[64];
  for (;;) {
    int n = ::epoll_wait(epoll_fd_.get(), events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t id = events[i].data.u64;
      if (id == kStopId) return;
      if (id == kPostId) {
        RunPosted();
      } else if (id == kTimerId) {
        Tick();
      } else if (id == kLazyTimerId) {
        LazyTick();
      } else if (std::shared_ptr<Watcher> watcher = Find(id)) {
        watcher->OnReady(events[i].events);
      }
    }
  }
}

}  // namespace zcrpc::transport::tcp
