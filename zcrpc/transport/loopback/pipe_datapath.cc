// The per-message path of a loopback connection: Send, delivery, close,
// the budget and the fault hooks. Setup is in loopback_transport.cc.
#include <algorithm>
#include <array>
#include <utility>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/transport/internal/capabilities.h"
#include "zcrpc/transport/internal/delivery_scope.h"
#include "zcrpc/transport/loopback/pipe.h"

namespace zcrpc::transport::loopback {
namespace {

// Frames one poller turn delivers for one connection before it lets the
// poller's other connections have a go.
constexpr int kBatch = 64;

int64_t Now() { return Clock::Real().NowNanos(); }

Status PeerClosed(const Status& reason) {
  return absl::UnavailableError(absl::StrCat("loopback peer closed the connection: ", reason.ToString()));
}

}  // namespace

Pipe::Pipe(EndpointSetup client, EndpointSetup server)
    : ends_{Endpoint(this, 0, client, server.options.limits), Endpoint(this, 1, server, client.options.limits)} {}

Endpoint::Endpoint(Pipe* pipe, int side, EndpointSetup setup, const FrameLimits& peer_limits)
    : pipe_(pipe),
      side_(side),
      poller_(std::move(setup.poller)),
      options_(setup.options),
      peer_uri_(std::move(setup.peer_uri)),
      budget_(setup.options.send_budget_bytes, setup.options.send_stall_timeout),
      faults_(setup.faults) {
  // The in-memory preface: what the peer accepts is what this side may
  // send. Loopback moves frames without limits of its own.
  Preface mine, theirs;
  mine.limits = setup.options.limits;
  theirs.limits = peer_limits;
  capabilities_ = internal::NegotiateCapabilities(mine, theirs, internal::kNoTransportLimits,
                                                  /*caller_can_poll=*/true);
}

std::shared_ptr<Endpoint> Endpoint::Self() { return pipe_->shared_end(side_); }
Endpoint& Endpoint::peer() { return pipe_->end(1 - side_); }

Faults Endpoint::faults() const {
  std::lock_guard lock(mu_);
  return faults_;
}

void Endpoint::SetFaults(const Faults& faults) {
  {
    std::lock_guard lock(mu_);
    faults_ = faults;
  }
  Schedule();  // an end to a stall, a changed delay: look at the inbox again
}

// ---- send ----

Status Endpoint::Send(Frame frame) {
  frame.SetLengthsFromParts();
  frame.header.padding_len = 0;  // the transport's field (wire.h); parts travel separately here
  frame.body_discarded = false;
  uint64_t number = 0;
  Faults faults;
  {
    std::lock_guard lock(mu_);
    if (closed_.closed()) {
      return absl::UnavailableError(absl::StrCat("connection to ", peer_uri_, " is closed"));
    }
    number = ++sends_;
    faults = faults_;
  }
  if (faults.fail_send_at != 0 && number == faults.fail_send_at) {
    const Status fault = absl::UnavailableError(
        absl::StrCat("loopback fault: fail_send_at=", faults.fail_send_at, " on ", peer_uri_));
    Close(fault);
    return fault;
  }
  if (!faults.unchecked_send) ZCRPC_RETURN_IF_ERROR(internal::CheckFrameFits(capabilities_, frame, peer_uri_));
  const uint64_t bytes = kWireHeaderSize + frame.header.body_len();
  budget_.Queued(bytes);
  ArmStallCheck();
  if (!peer().Push(frame, bytes)) {
    budget_.Drained(bytes);  // closed: nobody is owed OnWritable
    return absl::UnavailableError(absl::StrCat("connection to ", peer_uri_, " is closed"));
  }
  return absl::OkStatus();
}

bool Endpoint::Push(Frame& frame, uint64_t bytes) {
  bool wake_caller = false;
  bool started = false;
  {
    std::lock_guard lock(mu_);
    if (closed_.closed()) return false;
    const int64_t ready_at = faults_.delay_us == 0 ? 0 : Now() + static_cast<int64_t>(faults_.delay_us) * 1000;
    inbox_.push_back(Queued{std::move(frame), bytes, ready_at});
    wake_caller = callers_waiting_ > 0;
    started = handler_ != nullptr;
  }
  if (wake_caller) arrived_.notify_all();
  if (started) Schedule();
  return true;
}

void Endpoint::SentBytesTaken(uint64_t bytes) {
  if (!budget_.Drained(bytes)) return;
  bool wake_caller = false;
  {
    std::lock_guard lock(mu_);
    if (closed_.closed()) return;  // no OnWritable for a closing connection
    writable_owed_ = true;
    wake_caller = callers_waiting_ > 0;
  }
  if (wake_caller) arrived_.notify_all();
  Schedule();
}

void Endpoint::ArmStallCheck() {
  if (stall_check_armed_.exchange(true, std::memory_order_acq_rel)) return;
  // A quarter of the timeout: a stall is noticed between 1x and 1.25x.
  const int64_t step = std::max<int64_t>(budget_.stall_nanos() / 4, 1'000'000);
  poller_->PostAt(Now() + step, [self = Self()] { self->CheckStall(); });
}

void Endpoint::CheckStall() {
  stall_check_armed_.store(false, std::memory_order_seq_cst);
  if (closed_.closed()) return;
  if (budget_.Stalled(Now())) {
    Close(absl::UnavailableError(absl::StrCat("send queue to ", peer_uri_, " made no progress for ",
                                              budget_.stall_nanos() / 1'000'000, " ms: the peer stopped reading")));
    return;
  }
  // Still bytes queued: keep watching. (A Send racing with the store above
  // arms its own check; arming twice is harmless.)
  if (budget_.queued() > 0) ArmStallCheck();
}

// ---- close ----

void Endpoint::Close(const Status& reason) {
  Status recorded;
  std::deque<Queued> dropped;
  {
    std::lock_guard lock(mu_);
    if (!closed_.Close(reason)) return;
    discard_inbox_ = true;  // this side closed: nothing more is delivered here
    recorded = closed_.reason();
    // Never started: nobody will deliver, so let the frames' buffers go
    // now rather than when the last handle does.
    if (handler_ == nullptr) dropped = std::move(inbox_);
  }
  for (const Queued& q : dropped) peer().SentBytesTaken(q.bytes);
  dropped.clear();
  arrived_.notify_all();
  budget_.WakeAll();
  peer().CloseFromPeer(recorded);
  Schedule();
}

void Endpoint::CloseFromPeer(const Status& reason) {
  {
    std::lock_guard lock(mu_);
    if (!closed_.Close(PeerClosed(reason))) return;
  }
  arrived_.notify_all();
  budget_.WakeAll();
  Schedule();
}

// ---- delivery ----

void Endpoint::Start(std::shared_ptr<ConnectionHandler> handler) {
  {
    std::lock_guard lock(mu_);
    if (handler_ != nullptr || closed_reported_) return;  // "call once"
    handler_ = std::move(handler);
  }
  Schedule();
}

void Endpoint::Schedule() {
  if (scheduled_.exchange(true, std::memory_order_acq_rel)) return;
  poller_->Post([self = Self()] {
    self->scheduled_.store(false, std::memory_order_release);
    self->RunOnPoller();
  });
}

void Endpoint::RunOnPoller() {
  // A caller inside PollUntil holds the receive side: it hands the
  // endpoint back (Release() says parked) when it lets go.
  if (!read_.AcquireOrPark()) return;
  const Stop stop = Deliver([] { return false; }, kBatch);
  const bool parked = read_.Release();
  if (stop == Stop::kBatchFull || parked) Schedule();
}

Endpoint::Stop Endpoint::Deliver(absl::FunctionRef<bool()> done, int max_frames) {
  for (int delivered = 0;;) {
    std::unique_lock lock(mu_);
    if (handler_ == nullptr) return closed_reported_ ? Stop::kClosed : Stop::kIdle;  // not started, or over
    const bool closing = closed_.closed();
    if (closing && (discard_inbox_ || faults_.stall || inbox_.empty())) {
      // The end: frames still queued are dropped (their buffers released,
      // their bytes drained from the peer's budget), then OnClosed once.
      closed_reported_ = true;
      std::shared_ptr<ConnectionHandler> handler = std::move(handler_);
      std::deque<Queued> dropped = std::move(inbox_);
      const Status reason = closed_.reason();
      lock.unlock();
      for (const Queued& q : dropped) peer().SentBytesTaken(q.bytes);
      dropped.clear();
      {
        internal::DeliveryScope scope;
        handler->OnClosed(reason);
      }
      return Stop::kClosed;
    }
    std::shared_ptr<ConnectionHandler> handler = handler_;
    if (writable_owed_ && !closing) {
      writable_owed_ = false;
      lock.unlock();
      internal::DeliveryScope scope;
      handler->OnWritable();
      if (done()) return Stop::kDone;
      continue;
    }
    if (faults_.stall || inbox_.empty()) return Stop::kIdle;
    if (delivered >= max_frames) return Stop::kBatchFull;
    if (const int64_t ready_at = inbox_.front().ready_at; ready_at != 0) {
      const int64_t now = Now();
      if (ready_at > now) {
        if (timer_at_ <= now || ready_at < timer_at_) {
          timer_at_ = ready_at;
          poller_->PostAt(ready_at, [self = Self()] { self->Schedule(); });
        }
        return Stop::kIdle;
      }
    }
    Queued queued = std::move(inbox_.front());
    inbox_.pop_front();
    const uint64_t number = ++arrivals_;
    const Faults faults = faults_;
    lock.unlock();

    peer().SentBytesTaken(queued.bytes);
    Frame& frame = queued.frame;
    if (faults.close_at_frame != 0 && number == faults.close_at_frame) {
      Close(absl::UnavailableError(
          absl::StrCat("loopback fault: close_at_frame=", faults.close_at_frame, " from ", peer_uri_)));
      continue;  // the frame is dropped; the next turn reports OnClosed
    }
    if (faults.drop_every != 0 && number % faults.drop_every == 0) continue;

    // The header goes through the wire codec, so a header that tcp's
    // receiver would refuse closes a loopback connection too.
    std::array<uint8_t, kWireHeaderSize> raw;
    EncodeWireHeader(frame.header, raw);
    StatusOr<WireHeader> decoded = DecodeWireHeader(raw);
    if (!decoded.ok()) {
      Close(absl::InvalidArgumentError(
          absl::StrCat("malformed frame from ", peer_uri_, ": ", decoded.status().message())));
      continue;
    }
    frame.header = *decoded;
    if (!CheckLimits(frame.header, options_.limits).ok()) {
      if (frame.header.body_len() > kMaxDiscardBytes) {
        Close(absl::ResourceExhaustedError(absl::StrCat("frame of ", frame.header.body_len(), " bytes from ",
                                                        peer_uri_, " is too large to discard")));
        continue;
      }
      // As tcp does: the body is thrown away, the header tells the runtime
      // what the peer sent, the connection lives on.
      frame.metadata.reset();
      frame.message.reset();
      frame.attachments.clear();
      frame.body_discarded = true;
    }
    ++delivered;
    {
      internal::DeliveryScope scope;
      handler->OnFrame(std::move(frame));
    }
    if (done()) return Stop::kDone;
  }
}

bool Endpoint::PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) {
  {
    std::lock_guard lock(mu_);
    if (handler_ == nullptr) return false;  // not started or already over: nothing to read
  }
  if (!read_.TryAcquire()) return false;
  const int64_t deadline = Now() + budget.count();
  while (!done()) {
    const Stop stop = Deliver(done, INT32_MAX);
    if (stop == Stop::kDone || stop == Stop::kClosed) break;
    const int64_t now = Now();
    if (now >= deadline) break;
    // Nothing due: sleep until a frame arrives, a delayed one is due, the
    // connection closes, or the budget ends. Send() notifies arrived_.
    std::unique_lock lock(mu_);
    int64_t wake = deadline;
    if (!inbox_.empty() && inbox_.front().ready_at > now) wake = std::min(wake, inbox_.front().ready_at);
    const bool due = (!inbox_.empty() && !faults_.stall && inbox_.front().ready_at <= now) || writable_owed_ ||
                     (closed_.closed() && !closed_reported_);
    if (due) continue;
    ++callers_waiting_;
    // Bounded slices: done() may turn true through another connection.
    arrived_.wait_for(lock, std::chrono::nanoseconds(std::min<int64_t>(wake - now, 1'000'000)));
    --callers_waiting_;
  }
  // Frames that arrived while this thread held the receive side made the
  // poller park; hand the endpoint back if there is still something to
  // deliver. When there is not, the poller stays asleep: anything that
  // arrives after Release() schedules it itself, and what arrived before
  // is seen by HasWork().
  if (read_.Release() && HasWork()) Schedule();
  return true;
}

bool Endpoint::HasWork() const {
  std::lock_guard lock(mu_);
  if (handler_ == nullptr) return false;
  return (!inbox_.empty() && !faults_.stall) || writable_owed_ || closed_.closed();
}

}  // namespace zcrpc::transport::loopback
