// Poller: one of the loopback transport's fixed set of threads. It runs
// posted tasks in order and timed tasks when they are due; connections
// (loopback_connection.h) post their delivery work here, so a connection's
// handler runs on its poller unless a caller reads its own frames
// (PollUntil).
//
// Owned by the transport's core through shared_ptr; connections hold a
// reference too, so a connection handle may outlive its transport: once
// Stop() ran, posts are dropped (the connection is closed by then).
// Thread-safe: Post/PostAt from any thread, including the poller's own.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace zcrpc::transport::loopback {

class Poller {
 public:
  Poller();
  // Stops (see Stop) if it still runs.
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  // Runs `task` on the poller thread, after the tasks posted before it.
  void Post(std::function<void()> task);
  // Runs `task` on the poller thread once Clock::Real() reaches
  // `when_nanos`.
  void PostAt(int64_t when_nanos, std::function<void()> task);

  // Runs what is queued, timed tasks included (at once: a connection's
  // timers only deliver its OnClosed by then, a pending Connect gets its
  // answer), and whatever those post, then joins the thread. Later posts
  // are dropped. Not from the poller thread itself.
  void Stop();

  bool OnPollerThread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  struct Timed {
    int64_t when;
    uint64_t seq;  // FIFO among equal times
    std::function<void()> task;
    bool operator>(const Timed& other) const {
      return when != other.when ? when > other.when : seq > other.seq;
    }
  };
  void Run();

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> ready_ ABSL_GUARDED_BY(mu_);
  std::priority_queue<Timed, std::vector<Timed>, std::greater<Timed>> timed_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace zcrpc::transport::loopback
