// ClientContext and ServerContext: small enough to share one file.
#include <limits>

#include "zcrpc/base/clock.h"
#include "zcrpc/rpc/channel.h"
#include "zcrpc/rpc/client_context.h"
#include "zcrpc/rpc/internal/stream_state.h"
#include "zcrpc/rpc/server_context.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc {
namespace {
int64_t SteadyNanos(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
}  // namespace

void ClientContext::set_deadline(std::chrono::steady_clock::time_point deadline) {
  const int64_t nanos = SteadyNanos(deadline);
  deadline_nanos_ = nanos == std::numeric_limits<int64_t>::max() ? 0 : std::max<int64_t>(1, nanos);
}

void ClientContext::set_timeout(std::chrono::nanoseconds timeout) {
  const int64_t deadline = SaturatingAddNanos(SteadyNanos(std::chrono::steady_clock::now()), timeout.count());
  // The largest steady time means "no deadline" everywhere downstream.
  deadline_nanos_ = deadline == std::numeric_limits<int64_t>::max() ? 0 : std::max<int64_t>(1, deadline);
}

Status ClientContext::AddMetadata(std::string key, std::string value) {
  ZCRPC_RETURN_IF_ERROR(ValidateMetadataEntry(key, value));
  metadata_.emplace_back(std::move(key), std::move(value));
  return absl::OkStatus();
}

void ClientContext::TryCancel() {
  const uint64_t channel_id = channel_id_.load(std::memory_order_acquire);
  const uint64_t id = call_id_.load(std::memory_order_acquire);
  if (channel_id == 0 || id == 0) return;
  // Held for the length of the cancel: completing the call may run a
  // callback that drops the caller's last reference to the channel.
  if (std::shared_ptr<Channel> channel = Channel::FindLive(channel_id)) channel->CancelCall(id);
}

std::chrono::steady_clock::time_point ServerContext::deadline() const {
  if (deadline_nanos_ == 0) return std::chrono::steady_clock::time_point::max();
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(deadline_nanos_));
}

bool ServerContext::IsCancelled() const {
  // The deadline turns this true through the server's sweep (one tick late
  // at most), on the server's own clock, which tests may inject.
  return cancelled_.load(std::memory_order_acquire);
}

Status ServerContext::AddTrailingMetadata(std::string key, std::string value) {
  ZCRPC_RETURN_IF_ERROR(ValidateMetadataEntry(key, value));
  trailing_metadata_.emplace_back(std::move(key), std::move(value));
  return absl::OkStatus();
}

Status ServerContext::AddInitialMetadata(std::string key, std::string value) {
  ZCRPC_RETURN_IF_ERROR(ValidateMetadataEntry(key, value));
  std::lock_guard lock(initial_mu_);
  // Announced before the check: a SendInitialMetadata that has begun either
  // sees it (and waits for this lock) or is seen here.
  has_initial_.store(true, std::memory_order_seq_cst);
  if (initial_sent_.load(std::memory_order_seq_cst)) {
    return absl::FailedPreconditionError("initial metadata has gone already (with the first message or the reply)");
  }
  initial_metadata_.emplace_back(std::move(key), std::move(value));
  return absl::OkStatus();
}

void ServerContext::SendInitialMetadata() {
  if (initial_sent_.exchange(true, std::memory_order_seq_cst)) return;
  if (!has_initial_.load(std::memory_order_seq_cst)) return;  // the common case: no lock
  Frame frame;
  {
    std::lock_guard lock(initial_mu_);
    if (initial_metadata_.empty() ||
        (connection_->capabilities().features & kFeatureInitialMetadata) == 0) {
      return;
    }
    frame.metadata = connection_->Allocate(EncodedMetadataSize(initial_metadata_));
    EncodeMetadata(initial_metadata_, frame.metadata.span());
  }
  frame.header.type = FrameType::kInitialMetadata;
  frame.header.call_id = wire_call_id_;
  (void)connection_->Send(std::move(frame));  // never waits; a closed connection ends the call anyway
}

void ServerContext::set_stream_window_bytes(uint64_t bytes) {
  if (stream_ != nullptr) stream_->SetReceiveWindow(bytes);
}

Buffer ServerContext::AllocateBuffer(size_t size) { return connection_->Allocate(size); }

}  // namespace zcrpc
