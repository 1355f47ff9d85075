// Poller: one of the shm transport's fixed set of threads. It serves every
// item given to it: connections (their receive rings and pending sends),
// listening sockets, and handshakes in progress on either side.
//
// While any item had work within its spin time (ShmOptions::spin) the
// thread spins over all items, so a frame on a busy connection is seen
// within a few hundred nanoseconds; after kSpinBeforeYieldNanos without
// work it yields the CPU between looks (a peer on the same vCPU then gets
// to answer), still without sleeping; every millisecond it
// also asks epoll, without waiting, what happened on the sockets (a peer's
// hang-up) and tends each item (returns, stall clock, timeouts). With
// nothing to do it prepares each item for sleep (doorbell flags) and sleeps
// in epoll_wait on every connection's doorbell eventfd and socket, the
// listening sockets and handshake sockets, until something happens or the
// earliest item deadline passes.
//
// Ownership: the poller holds its items (shared_ptr) until they report
// themselves finished from Tend(); an item's fds stay registered until it
// unwatches them. Items are touched only on the poller thread, except
// through Post() (any thread). The transport calls Stop() before it goes;
// the Poller object may outlive it (a connection handle keeps it).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "zcrpc/transport/internal/unique_fd.h"

namespace zcrpc::transport::shm {

class Poller;

// How long a spinning thread (a poller, or a caller in PollUntil) looks for
// work with only a pause between looks before it gives its CPU up
// (sched_yield) before each further look. On this 2-vCPU machine a caller,
// its poller and the peer's poller can land on one vCPU; a pure spin then
// keeps the very thread that would answer off that vCPU until the spin
// budget or the scheduler's time slice runs out (unary shm calls took
// ~190 µs instead of ~5 µs, docs/benchmarks.md "Three rows that
// wandered"). 5 µs is above a round trip to a peer spinning on another core
// (1-6 µs here), so that path stays a pure spin, and small against what a
// starved peer waits otherwise. A yield with nothing else runnable on the
// vCPU is one system call: the look after it comes a fraction of a µs late.
inline constexpr int64_t kSpinBeforeYieldNanos = 5'000;

// One wait between two looks of a spin loop that has found no work for
// `idle_nanos`: a pause at first, then sched_yield. Any thread.
void SpinPause(int64_t idle_nanos);

// Something the poller serves. Every method runs on the poller thread.
class Pollable {
 public:
  virtual ~Pollable() = default;
  // The item joined `poller` (Poller::Add): watch its fds.
  virtual void Attach(Poller& poller) { (void)poller; }
  // One spinning look for work, without system calls. True if any was done.
  virtual bool Poll() { return false; }
  // An fd this item watches (Poller::Watch, `which` as given there) is
  // ready.
  virtual void OnEvent(int which, uint32_t events) = 0;
  // Housekeeping, at least every millisecond while spinning and before
  // every sleep. False once the item is finished (its fds unwatched): the
  // poller drops it.
  virtual bool Tend(int64_t now_nanos) = 0;
  // The poller is about to sleep. False if the item has work right now
  // (then the poller does not sleep).
  virtual bool PrepareSleep() { return true; }
  // The poller woke up.
  virtual void AfterSleep() {}
  // The latest moment the poller may sleep until for this item's sake, on
  // Clock::Real(); 0 for none.
  virtual int64_t deadline_nanos() const { return 0; }
  // How long the poller keeps spinning after this item's last work, and
  // whether it spins for good (ShmOptions).
  virtual int64_t spin_nanos() const { return 0; }
  virtual bool busy_poll() const { return false; }
  // The transport is going away: end now (a connection closes and reports
  // OnClosed, a pending Connect fails). Unwatch every fd.
  virtual void Shutdown() = 0;
};

class Poller {
 public:
  Poller();
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  // Starts the thread.
  void Start();
  // Shuts every item down on the poller thread and joins it. Items posted
  // afterwards are shut down on the posting thread.
  void Stop();

  // Runs `task` on the poller thread soon. Any thread. False (and `task`
  // not run) once stopped.
  bool Post(std::function<void()> task);
  // Adds an item (Post + Add on the thread). False once stopped.
  bool Add(std::shared_ptr<Pollable> item);

  bool OnThread() const { return std::this_thread::get_id() == thread_id_.load(std::memory_order_acquire); }

  // Poller thread only. `which` is 0 or 1 (an item has at most two fds).
  void Watch(int fd, uint32_t events, Pollable* item, int which);
  void Unwatch(int fd);

 private:
  void Run();
  void RunPosted();
  // Waits up to `timeout_ms` (0: just looks) and dispatches what is ready.
  void Wait(int timeout_ms);
  void TendAll(int64_t now);

  internal::UniqueFd epoll_;
  internal::UniqueFd wake_;  // eventfd: posted work or Stop()
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_{};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> has_posted_{false};
  std::mutex mu_;
  bool stopped_ = false;                       // guarded by mu_
  std::vector<std::function<void()>> posted_;  // guarded by mu_
  std::vector<std::shared_ptr<Pollable>> items_;  // poller thread only
};

}  // namespace zcrpc::transport::shm
