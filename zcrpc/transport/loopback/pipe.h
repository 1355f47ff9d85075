// Pipe: one loopback connection, two Endpoints facing each other. Each
// endpoint owns the queue of frames its peer sent it (the "inbox"), its own
// close state, the budget of its own sends (bytes sitting in the peer's
// inbox) and the fault hooks of its side. A frame moves from the sender's
// Send() into the peer's inbox and from there into the peer's handler: the
// Frame and its Buffers are moved, never copied.
//
// Ownership: a Pipe is held by shared_ptr: by the two LoopbackConnection
// handles, and by the poller tasks and timers that deliver to it. An
// endpoint holds its handler from Start() until right after OnClosed (the
// handler may own the handle, so that breaks the cycle).
//
// Threads: Send, writable, WaitWritable, Close, SetFaults from any thread.
// Delivery (OnFrame, OnWritable, OnClosed) happens on the endpoint's poller
// or on a caller inside PollUntil, whichever holds the endpoint's
// ReadOwnership; never two at once. Lock order: an endpoint's mu_ is never
// held while taking the peer's, nor while calling a handler.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/transport/internal/close_once.h"
#include "zcrpc/transport/internal/read_ownership.h"
#include "zcrpc/transport/internal/send_budget.h"
#include "zcrpc/transport/loopback/loopback_address.h"
#include "zcrpc/transport/loopback/poller.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::loopback {

class Pipe;

// What one side is set up with; the "preface" is both sides' options
// meeting in the Pipe's constructor.
struct EndpointSetup {
  std::shared_ptr<Poller> poller;
  ConnectionOptions options;
  Faults faults;
  std::string peer_uri;  // what peer() reports
};

class Endpoint {
 public:
  Endpoint(Pipe* pipe, int side, EndpointSetup setup, const FrameLimits& peer_limits);
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Connection, as in transport.h.
  Status Send(Frame frame);
  bool writable() { return budget_.writable(); }
  Status WaitWritable(int64_t deadline_nanos) { return budget_.WaitWritable(deadline_nanos, closed_, peer_uri_); }
  const Capabilities& capabilities() const { return capabilities_; }
  void Start(std::shared_ptr<ConnectionHandler> handler);
  void Close(const Status& reason);
  const std::string& peer_uri() const { return peer_uri_; }
  bool PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget);

  Faults faults() const;
  void SetFaults(const Faults& faults);

 private:
  struct Queued {
    Frame frame;
    uint64_t bytes;    // what it counts against the sender's budget
    int64_t ready_at;  // delay_us: not delivered before this (0 = at once)
  };
  // Why Deliver returned.
  enum class Stop { kIdle, kBatchFull, kDone, kClosed };

  std::shared_ptr<Endpoint> Self();
  Endpoint& peer();

  // The peer's Send: queue `frame` here. False (frame untouched) if this
  // side is closed.
  bool Push(Frame& frame, uint64_t bytes);
  // The peer took `bytes` of this side's sends out of its inbox.
  void SentBytesTaken(uint64_t bytes);
  // Closed by the other side: frames already queued here are still
  // delivered, then OnClosed(reason).
  void CloseFromPeer(const Status& reason);
  // The stall clock: closes when this side's sends made no progress for
  // send_stall_timeout.
  void ArmStallCheck();
  void CheckStall();

  // Posts RunOnPoller once (until it runs).
  void Schedule();
  void RunOnPoller();
  // Delivers what is due. REQUIRES: this thread holds read_. `done` is
  // checked after each handler call (PollUntil); `max_frames` bounds one
  // poller turn so one busy connection does not starve others.
  Stop Deliver(absl::FunctionRef<bool()> done, int max_frames);
  // Something for Deliver to do (frames due or not, OnWritable, OnClosed).
  bool HasWork() const;

  Pipe* const pipe_;
  const int side_;
  const std::shared_ptr<Poller> poller_;
  const ConnectionOptions options_;
  const std::string peer_uri_;
  Capabilities capabilities_;

  internal::CloseOnce closed_;
  internal::SendBudget budget_;
  internal::ReadOwnership read_;
  std::atomic<bool> scheduled_{false};
  std::atomic<bool> stall_check_armed_{false};

  mutable std::mutex mu_;
  std::condition_variable arrived_;  // a PollUntil caller waits here
  Faults faults_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<ConnectionHandler> handler_ ABSL_GUARDED_BY(mu_);
  std::deque<Queued> inbox_ ABSL_GUARDED_BY(mu_);
  bool discard_inbox_ ABSL_GUARDED_BY(mu_) = false;  // closed by this side
  bool closed_reported_ ABSL_GUARDED_BY(mu_) = false;
  bool writable_owed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t timer_at_ ABSL_GUARDED_BY(mu_) = 0;  // a delay_us wake-up is pending for then
  int callers_waiting_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t sends_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t arrivals_ ABSL_GUARDED_BY(mu_) = 0;
};

class Pipe : public std::enable_shared_from_this<Pipe> {
 public:
  Pipe(EndpointSetup client, EndpointSetup server);
  Endpoint& end(int side) { return ends_[side]; }
  std::shared_ptr<Endpoint> shared_end(int side) { return std::shared_ptr<Endpoint>(shared_from_this(), &ends_[side]); }

 private:
  Endpoint ends_[2];  // [0] the client's, [1] the server's
};

}  // namespace zcrpc::transport::loopback
