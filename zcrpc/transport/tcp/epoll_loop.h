// EpollLoop: the tcp transport's only threads (TcpTransport::Options::
// poller_threads, default one). They wait for sockets (connections,
// listeners, connects in progress), run tasks posted to them, and tick the
// registrations that asked for it (deadlines and stalled send queues).
//
// Registrations are level-triggered and one-shot: one wake-up per Modify()
// that arms them, delivered to the Watcher on a loop thread, after which the
// socket stays quiet until armed again. That lets a socket's reading move
// between the loop and a caller that reads its own reply (PollUntil) without
// losing a wake-up: arming a socket that already has bytes wakes at once.
// The watcher owns its interest mask (read and write together: epoll has one
// mask per descriptor) and re-arms what it still wants after each wake-up.
//
// Lifetimes: the loop knows a watcher only by id and holds it weakly; a
// wake-up locks it for the length of the call, so a watcher removed (or
// destroyed) on another thread is never called after its memory is gone.
// Whatever must stay alive while armed is the watcher's to hold.
//
// Lazy registrations (WatchLazily): a connection whose reading was left to
// the callers that wait for their replies (TcpConnection::PollUntil) asks
// the loop to look at it every lazy tick, so that once no caller takes the
// socket any more the loop arms it again. The lazy tick has its own timer
// and its own lock-free list, so a busy client pays no lock and no
// epoll_ctl for it, only one wake-up of one loop thread per interval.
//
// Thread-safe. Held by shared_ptr: a connection that outlives its transport
// keeps the (stopped) loop's descriptor valid until it goes.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "zcrpc/base/status.h"
#include "zcrpc/transport/internal/unique_fd.h"

namespace zcrpc::transport::tcp {

class EpollLoop {
 public:
  class Watcher {
   public:
    // The descriptor is ready (`events` as epoll reports them). On a loop
    // thread; the registration is disarmed until the watcher arms it again.
    virtual void OnReady(uint32_t events) = 0;
    // For watchers that asked for ticks (WatchTicks): every tick interval
    // while WantsTicks() is true, on a loop thread, with Clock::Real() now.
    virtual void OnTick(int64_t /*now_nanos*/) {}
    // Whether to keep ticking. Called with the loop's lock held: an atomic
    // look, nothing more.
    virtual bool WantsTicks() const { return false; }
    // The loop stopped (the transport is going away): let go of whatever
    // keeps the watcher alive. On the thread that stops the loop.
    virtual void OnLoopStopped() = 0;
    // For watchers passed to WatchLazily(): every lazy tick, on one loop
    // thread at a time, until it returns false. Must not block; may arm.
    virtual bool OnLazyTick() { return false; }

   protected:
    ~Watcher() = default;
  };

  // Deadlines and stalls are noticed within this much of their time: a
  // tick costs one wake-up of one loop thread, and only while some
  // registration wants ticks.
  static constexpr std::chrono::milliseconds kTickInterval{20};

  // The default lazy tick: a frame nobody waits for that arrives while a
  // connection's reading is left to its callers waits at most about two of
  // these once they stop coming (TcpConnection). 5 ms keeps that far below
  // anything a peer waits for (a server's go-away: its shutdown gives
  // clients at least 100 ms) while a busy client wakes a loop thread only
  // 200 times a second. Measured here (2 vCPUs, a client taking the socket
  // every ~100 us): the loop thread used ~0.4 % of a CPU with 5 ms, ~1 %
  // with 1 ms (a wake-up costs 12-25 us on this VM), ~0.25 % with 10 ms.
  static constexpr std::chrono::microseconds kDefaultLazyTick{5000};

  explicit EpollLoop(int threads, std::chrono::nanoseconds lazy_tick = kDefaultLazyTick);
  // Stops the loop if Stop() was not called.
  ~EpollLoop();
  EpollLoop(const EpollLoop&) = delete;
  EpollLoop& operator=(const EpollLoop&) = delete;

  // Joins the loop threads, then calls OnLoopStopped() on every watcher
  // still registered and runs no posted task after this. Not from a loop
  // thread. Idempotent.
  void Stop();

  // Registers `fd`, disarmed. Returns the registration's id.
  StatusOr<uint64_t> Add(int fd, std::weak_ptr<Watcher> watcher);
  // Sets the registration's interest: `events` (EPOLLIN, EPOLLOUT, ...)
  // one-shot, or nothing when 0. The caller serializes its own Modify()
  // calls for one fd (the mask is the last one set).
  void Modify(int fd, uint64_t id, uint32_t events);
  // Unregisters; no OnReady()/OnTick() starts after this returns, except
  // one a loop thread has already locked the watcher for.
  void Remove(int fd, uint64_t id);

  // Ticks the watcher until its WantsTicks() turns false. The watcher makes
  // WantsTicks() true before calling this, so a tick that sees it false
  // while the loop's lock is held cannot miss a later call.
  void WatchTicks(uint64_t id);

  // Runs `task` on a loop thread, soon. Dropped (not run) once stopped.
  void Post(std::function<void()> task);

  // Calls watcher->OnLazyTick() every lazy tick until it returns false (or
  // the watcher is gone, or the loop stopped). Any thread; lock-free, one
  // small allocation per call: callers call it once per idle-to-busy
  // change, not per message. A watcher passed twice is ticked twice.
  void WatchLazily(std::weak_ptr<Watcher> watcher);

  // True on one of this loop's threads (any loop's, in fact: the tcp
  // transport uses it to decide whether a handler may be called here).
  static bool OnLoopThread();

 private:
  struct LazyNode {
    std::weak_ptr<Watcher> watcher;
    LazyNode* next;
  };

  void Run();
  void Tick();
  void RunPosted();
  void LazyTick();
  void ArmLazyTimer();
  void DropLazy();
  std::shared_ptr<Watcher> Find(uint64_t id);

  internal::UniqueFd epoll_fd_;
  internal::UniqueFd stop_fd_;   // eventfd: tells every thread to stop
  internal::UniqueFd post_fd_;   // eventfd: tasks are waiting
  internal::UniqueFd timer_fd_;  // timerfd: ticks, armed while someone wants them
  internal::UniqueFd lazy_timer_fd_;  // timerfd, one-shot: the next lazy tick
  const std::chrono::nanoseconds lazy_tick_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;         // touched by the stopping thread only

  std::mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, std::weak_ptr<Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> ticking_ ABSL_GUARDED_BY(mu_);
  bool timer_armed_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::function<void()>> posted_ ABSL_GUARDED_BY(mu_);
  bool accepting_posts_ ABSL_GUARDED_BY(mu_) = true;

  // Lazy registrations. New ones are pushed on lazy_new_ by any thread (a
  // Treiber stack; the loop takes it whole with one exchange, so there is
  // no ABA). lazy_ is touched only by the loop thread that holds
  // lazy_ticking_ (or the stopping thread once the loop threads are gone).
  std::atomic<LazyNode*> lazy_new_{nullptr};
  std::vector<std::weak_ptr<Watcher>> lazy_;
  std::atomic<bool> lazy_ticking_{false};
  // The lazy timer is armed (or a tick is under way that will re-arm it
  // or look at lazy_new_ once more before it stops).
  std::atomic<bool> lazy_timer_on_{false};
};

}  // namespace zcrpc::transport::tcp
