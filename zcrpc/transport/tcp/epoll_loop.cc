#include "zcrpc/transport/tcp/epoll_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace zcrpc::transport::tcp {
namespace {
constexpr uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
}  // namespace

EpollLoop::EpollLoop(int threads) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    // Nothing can work without these; this only happens out of descriptors.
    std::abort();
  }
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered, never disarmed: wakes every thread
  ev.data.ptr = nullptr;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Run(); });
}

EpollLoop::~EpollLoop() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  for (std::thread& t : threads_) t.join();
  std::vector<Watcher*> left;
  {
    std::lock_guard lock(mu_);
    left.assign(watchers_.begin(), watchers_.end());
    watchers_.clear();
  }
  for (Watcher* w : left) w->OnLoopStopped();
  ::close(wake_fd_);
  ::close(epoll_fd_);
}

Status EpollLoop::Add(int fd, Watcher* watcher) {
  {
    std::lock_guard lock(mu_);
    watchers_.insert(watcher);
  }
  epoll_event ev{};
  ev.events = 0;  // disarmed until Arm()
  ev.data.ptr = watcher;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    std::lock_guard lock(mu_);
    watchers_.erase(watcher);
    return absl::InternalError(absl::StrCat("epoll_ctl(ADD) failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

void EpollLoop::Arm(int fd, Watcher* watcher) {
  epoll_event ev{};
  ev.events = kReadEvents;
  ev.data.ptr = watcher;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
}

void EpollLoop::Disarm(int fd, Watcher* watcher) {
  epoll_event ev{};
  ev.events = 0;
  ev.data.ptr = watcher;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
}

void EpollLoop::Remove(int fd, Watcher* watcher) {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  std::lock_guard lock(mu_);
  watchers_.erase(watcher);
}

void EpollLoop::Run() {
  epoll_event events[64];
  for (;;) {
    int n = ::epoll_wait(epoll_fd_, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) return;  // stop
      static_cast<Watcher*>(events[i].data.ptr)->OnReady(events[i].events);
    }
  }
}

}  // namespace zcrpc::transport::tcp
