#include "zcrpc/rpc/internal/stream_state.h"

#include <algorithm>
#include <limits>
#include <utility>

#include <google/protobuf/message_lite.h>

#include "absl/strings/str_cat.h"
#include "zcrpc/rpc/internal/discarded_status.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::internal {
namespace {

Status WaitsOnADeliveringThread() {
  return absl::FailedPreconditionError(
      "blocking stream operation on a thread that delivers a connection's frames (a callback, or a handler run "
      "inline): it could wait for itself");
}

}  // namespace

StreamState::StreamState(Options options, Abort abort) : options_(options), abort_(std::move(abort)) {
  window_ = ClampWindow(options.receive_window);
}

void StreamState::Attach(transport::Connection* connection, CallId wire_call_id, int64_t deadline_nanos) {
  connection_ = connection;
  wire_call_id_ = wire_call_id;
  deadline_nanos_ = deadline_nanos;
  // Frames this side holds live in the peer's memory (shm's slab): one
  // stream may hold an eighth of it, so a stalled reader leaves the rest
  // to the connection's other streams and calls.
  if (const uint64_t memory = connection->capabilities().receive_memory_bytes; memory != 0) {
    max_window_ = std::max(memory / 8, kInitialStreamWindow);
    std::lock_guard lock(mu_);
    window_ = ClampWindow(window_);
  }
  Touch();
}

uint64_t StreamState::ClampWindow(uint64_t bytes) const {
  return std::clamp(bytes, kInitialStreamWindow, std::max(max_window_, kInitialStreamWindow));
}

void StreamState::AnnounceWindow() {
  uint64_t extra;
  {
    std::lock_guard lock(mu_);
    announced_ = true;
    if (window_ <= kInitialStreamWindow) return;
    extra = window_ - kInitialStreamWindow;
    peer_credit_ += static_cast<int64_t>(extra);  // before the frame: a message may follow it at once
  }
  SendCredit(extra);
}

void StreamState::SetReceiveWindow(uint64_t bytes) {
  uint64_t grant = 0;
  {
    std::lock_guard lock(mu_);
    bytes = ClampWindow(bytes);
    if (!announced_) {  // the peer holds the initial credit only: AnnounceWindow grants the rest
      window_ = bytes;
      return;
    }
    if (bytes > window_) {
      // Repay what a smaller window held back first.
      grant = bytes - window_;
      const uint64_t repaid = std::min(grant, withheld_);
      withheld_ -= repaid;
      grant -= repaid;
    } else {
      withheld_ += window_ - bytes;
    }
    window_ = bytes;
    // After the peer's last message there is nothing to grant.
    if (input_closed_) grant = 0;
    peer_credit_ += static_cast<int64_t>(grant);
  }
  if (grant > 0) SendCredit(grant);
}

void StreamState::Touch() {
  if (options_.idle_timeout.count() > 0) {
    last_active_nanos_.store(options_.clock->NowNanos(), std::memory_order_relaxed);
  }
}

int64_t StreamState::DueAt() const {
  if (options_.idle_timeout.count() <= 0) return deadline_nanos_;
  const int64_t idle_at =
      SaturatingAddNanos(last_active_nanos_.load(std::memory_order_relaxed), options_.idle_timeout.count());
  return deadline_nanos_ == 0 ? idle_at : std::min(deadline_nanos_, idle_at);
}

Status StreamState::ExpiredStatus(int64_t now) const {
  if (deadline_nanos_ != 0 && deadline_nanos_ <= now) return absl::DeadlineExceededError("deadline exceeded");
  return absl::DeadlineExceededError(
      absl::StrCat("the stream was idle for ",
                   std::chrono::duration_cast<std::chrono::milliseconds>(options_.idle_timeout).count(),
                   " ms (its idle timeout): no message, credit or half-close either way"));
}

Status StreamState::OnFrame(Frame frame, std::shared_ptr<StreamListener>* notify_later) {
  std::shared_ptr<Listener> listener;
  Status verdict;
  Touch();
  {
    std::lock_guard lock(mu_);
    bool changed = false;
    verdict = OnFrameLocked(frame, &changed);
    if (changed) listener = ChangedLocked();
  }
  if (notify_later != nullptr) {
    *notify_later = std::move(listener);
  } else if (listener) {
    listener->OnStreamChanged();
  }
  return verdict;
}

Status StreamState::OnFrameLocked(Frame& frame, bool* changed) {
  if (ended_) return absl::OkStatus();  // late: the stream is over here
  switch (frame.header.type) {
    case FrameType::kStreamMessage: {
      if (input_closed_) return absl::InternalError("protocol error: the peer sent a message after closing its writes");
      if (frame.body_discarded) {
        if (frame.discard_reason != Frame::DiscardReason::kOverLimits) return DiscardedStatus(frame, "a stream message", "receiver", FrameLimits{});
        return absl::ResourceExhaustedError(absl::StrCat("a stream message of ", frame.header.body_len(),
                                                         " bytes exceeds the receiver's limits"));
      }
      if (peer_credit_ <= 0) {
        return absl::ResourceExhaustedError("protocol error: the peer sent past its flow-control window");
      }
      peer_credit_ -= static_cast<int64_t>(CreditCost(frame.header));
      inbox_.push_back(std::move(frame));
      break;
    }
    case FrameType::kHalfClose:
      if (input_closed_) return absl::InternalError("protocol error: the peer closed its writes twice");
      input_closed_ = true;
      break;
    case FrameType::kCredit: {
      const uint64_t credit = frame.header.credit_bytes();
      if (send_credit_ > 0 && static_cast<uint64_t>(send_credit_) + credit > kMaxStreamWindow) {
        return absl::InternalError("protocol error: flow-control credit grew the window past 2^40 bytes");
      }
      send_credit_ += static_cast<int64_t>(credit);
      break;
    }
    default:
      return absl::InternalError(
          absl::StrCat("protocol error: a ", FrameTypeName(frame.header.type), " frame inside a stream"));
  }
  *changed = true;
  return absl::OkStatus();
}

void StreamState::End(const Status& status, bool keep_messages) {
  std::deque<Frame> dropped;  // released after the lock
  std::shared_ptr<Listener> listener;
  {
    std::lock_guard lock(mu_);
    if (ended_) return;
    ended_ = true;
    end_status_ = status;
    input_closed_ = true;
    if (!keep_messages) dropped.swap(inbox_);
    listener = ChangedLocked();
  }
  if (listener) listener->OnStreamChanged();
}

void StreamState::SetListener(std::shared_ptr<Listener> listener) {
  std::lock_guard lock(mu_);
  listener_ = std::move(listener);
}

bool StreamState::ended() const {
  std::lock_guard lock(mu_);
  return ended_;
}

bool StreamState::EndedWith(Status* status) const {
  std::lock_guard lock(mu_);
  if (ended_) *status = end_status_;
  return ended_;
}

bool StreamState::Read(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments) {
  Frame frame;
  uint64_t credit = 0;
  {
    std::unique_lock lock(mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !inbox_.empty() || input_closed_; };
    if (!ready() && transport::InDeliveryThread()) {
      lock.unlock();
      FailHere(WaitsOnADeliveringThread());
      return false;
    }
    WaitLocked(lock, ready);
    if (TakeLocked(&frame, &credit) != ReadResult::kMessage) return false;
  }
  if (credit > 0) SendCredit(credit);
  return Deliver(frame, message, attachments);
}

StreamState::ReadResult StreamState::TryRead(google::protobuf::MessageLite* message,
                                             std::vector<Buffer>* attachments) {
  Frame frame;
  uint64_t credit = 0;
  ReadResult result;
  {
    std::lock_guard lock(mu_);
    result = TakeLocked(&frame, &credit);
  }
  if (credit > 0) SendCredit(credit);
  if (result != ReadResult::kMessage) return result;
  return Deliver(frame, message, attachments) ? ReadResult::kMessage : ReadResult::kNoMore;
}

StreamState::ReadResult StreamState::TakeLocked(Frame* frame, uint64_t* credit) {
  if (inbox_.empty()) return input_closed_ ? ReadResult::kNoMore : ReadResult::kNotYet;
  *frame = std::move(inbox_.front());
  inbox_.pop_front();
  consumed_ += CreditCost(frame->header);
  // Given back in quarters of the window: few credit frames, and the
  // peer never waits for one while a quarter is still free.
  if (!input_closed_ && consumed_ >= window_ / 4) {
    const uint64_t repaid = std::min(consumed_, withheld_);  // the window shrank
    withheld_ -= repaid;
    *credit = consumed_ - repaid;
    consumed_ = 0;
    peer_credit_ += static_cast<int64_t>(*credit);
  }
  return ReadResult::kMessage;
}

bool StreamState::Deliver(Frame& frame, google::protobuf::MessageLite* message, std::vector<Buffer>* attachments) {
  if (!message->ParseFromArray(frame.message.data(), static_cast<int>(frame.message.size()))) {
    FailHere(absl::InternalError(absl::StrCat("cannot parse a stream message as ", message->GetTypeName())));
    return false;
  }
  if (attachments != nullptr) *attachments = std::move(frame.attachments);
  return true;
}

WriteStatus StreamState::Write(const google::protobuf::MessageLite& message, std::vector<Buffer>&& attachments,
                               bool may_wait, bool respect_send_queue) {
  {
    std::unique_lock lock(mu_);
    if (ended_ || writes_closed_) return WriteStatus::kClosed;
    if (send_credit_ <= 0) {
      if (!may_wait) return WriteStatus::kWouldBlock;
      if (transport::InDeliveryThread()) {
        lock.unlock();
        FailHere(WaitsOnADeliveringThread());
        return WriteStatus::kClosed;
      }
      WaitLocked(lock, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return send_credit_ > 0 || ended_; });
      if (ended_) return WriteStatus::kClosed;
    }
  }
  // The connection's own send queue: a writer that may wait does, no
  // longer than the call's deadline; nothing waits on a delivering thread.
  if (respect_send_queue && !connection_->writable()) {
    if (!may_wait) return WriteStatus::kWouldBlock;
    if (Status room = connection_->WaitWritable(deadline_nanos_); !room.ok()) {
      FailHere(room);
      return WriteStatus::kClosed;
    }
  }
  // Writes are one thread's at a time: no lock for the hook.
  if (before_first_message_) std::exchange(before_first_message_, nullptr)();
  const size_t size = message.ByteSizeLong();
  if (size > std::numeric_limits<uint32_t>::max()) {
    FailHere(absl::ResourceExhaustedError(absl::StrCat("a stream message of ", size, " bytes is over 4 GiB")));
    return WriteStatus::kClosed;
  }
  Frame frame;
  frame.header.type = FrameType::kStreamMessage;
  frame.header.call_id = wire_call_id_;
  frame.message = connection_->Allocate(size);
  message.SerializeWithCachedSizesToArray(frame.message.data());
  frame.attachments = std::move(attachments);
  frame.SetLengthsFromParts();
  {
    std::lock_guard lock(mu_);
    if (ended_) return WriteStatus::kClosed;
    send_credit_ -= static_cast<int64_t>(CreditCost(frame.header));
  }
  if (Status sent = connection_->Send(std::move(frame)); !sent.ok()) {
    FailHere(sent);
    return WriteStatus::kClosed;
  }
  Touch();
  return WriteStatus::kWritten;
}

bool StreamState::MayWriteNow() const {
  std::lock_guard lock(mu_);
  return ended_ || writes_closed_ || (send_credit_ > 0 && connection_->writable());
}

std::shared_ptr<StreamState::Listener> StreamState::OnWritable() {
  std::lock_guard lock(mu_);
  return ChangedLocked();
}

bool StreamState::CloseWrites() {
  {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    if (writes_closed_) return true;
    writes_closed_ = true;
  }
  if (!options_.sends_half_close) return true;
  Touch();
  Frame half_close;
  half_close.header.type = FrameType::kHalfClose;
  half_close.header.call_id = wire_call_id_;
  if (Status sent = connection_->Send(std::move(half_close)); !sent.ok()) {
    FailHere(sent);
    return false;
  }
  return true;
}

Status StreamState::WaitEnded() {
  std::unique_lock lock(mu_);
  if (!ended_ && transport::InDeliveryThread()) {
    lock.unlock();
    FailHere(WaitsOnADeliveringThread());
    lock.lock();
  }
  WaitLocked(lock, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_; });
  return end_status_;
}

template <typename Ready>
void StreamState::WaitLocked(std::unique_lock<std::mutex>& lock, Ready ready) {
  bool may_poll = options_.poll_connection && connection_ != nullptr;
  while (!ready()) {
    const uint64_t seen = version_.load(std::memory_order_relaxed);
    if (may_poll) {
      // Read the connection on this thread rather than be woken by its
      // poller (docs/architecture.md, "Threads"). Again only after it
      // brought news: a poll that ended without any (its budget spent,
      // another thread reading) gives way to sleeping.
      lock.unlock();
      connection_->PollUntil([this, seen] { return version_.load(std::memory_order_acquire) != seen; },
                             options_.spin);
      lock.lock();
      may_poll = version_.load(std::memory_order_relaxed) != seen;
      continue;
    }
    changed_.wait(lock, [this, seen] { return version_.load(std::memory_order_relaxed) != seen; });
  }
}

std::shared_ptr<StreamState::Listener> StreamState::ChangedLocked() {
  version_.fetch_add(1, std::memory_order_release);
  changed_.notify_all();
  return listener_;
}

void StreamState::SendCredit(uint64_t bytes) {
  Frame credit;
  credit.header.type = FrameType::kCredit;
  credit.header.call_id = wire_call_id_;
  credit.header.set_credit_bytes(std::min(bytes, kMaxStreamWindow));
  (void)connection_->Send(std::move(credit));  // never waits; a closed connection ends the stream anyway
}

void StreamState::FailHere(const Status& status) {
  if (abort_) abort_(status);
}

}  // namespace zcrpc::internal
