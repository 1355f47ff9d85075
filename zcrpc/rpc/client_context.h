// ClientContext: per-call settings and results on the client side: the
// deadline, metadata to send, metadata the server sent back, cancellation.
// One context per call; it must outlive the call (for a callback call, until
// the callback has run). Not thread-safe, except TryCancel().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "zcrpc/base/buffer.h"
#include "zcrpc/base/status.h"
#include "zcrpc/base/wire.h"

namespace zcrpc {

class Channel;
namespace internal {
class ClientCall;
class CallbackCall;
class ClientStream;
}  // namespace internal

class ClientContext {
 public:
  ClientContext() = default;
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  // The call fails with DEADLINE_EXCEEDED once this time has passed, and the
  // server is told to cancel. Default: no deadline; time_point::max() is
  // none too.
  void set_deadline(std::chrono::steady_clock::time_point deadline);
  // Deadline relative to now. Saturates: a timeout too large to add to the
  // clock (nanoseconds::max(), say) is no deadline at all, never one in the
  // past; zero or negative has passed already.
  void set_timeout(std::chrono::nanoseconds timeout);
  // Nanoseconds on the steady clock, 0 if none.
  int64_t deadline_nanos() const { return deadline_nanos_; }

  // Adds a metadata entry to send. INVALID_ARGUMENT for a key or value that
  // breaks gRPC's rules (wire.h); the entry is then not added.
  Status AddMetadata(std::string key, std::string value);
  const Metadata& metadata() const { return metadata_; }

  // Metadata the server sent with its response, gRPC's trailing metadata
  // (valid once the call ended).
  const Metadata& server_metadata() const { return server_metadata_; }
  // Metadata the server sent before its first message or its response,
  // gRPC's initial metadata: valid once the call ended, and on a stream
  // once a Read() has returned.
  const Metadata& server_initial_metadata() const { return server_initial_metadata_; }

  // Sends `buffer` beside the request message, as an attachment: out by
  // scatter-gather, never through protobuf. Buffers from
  // Channel::AllocateBuffer() live in the transport's memory and go out
  // with no framework copy. Taken by the next call made with this context.
  void AddAttachment(Buffer buffer) { attachments_.push_back(std::move(buffer)); }
  // Attachments the server sent beside its response (valid once the call
  // ended): page-aligned buffers, handed over. Move them out to keep them.
  std::vector<Buffer>& response_attachments() { return response_attachments_; }

  // Ends the call with CANCELLED if it is still in flight and tells the
  // server. Thread-safe; a no-op before the call starts or after it ends.
  void TryCancel();

  // Streams: bytes of messages the server may send ahead of this side's
  // reads (docs/streaming.md, "Flow control"). 0 (the default): the
  // channel's ChannelOptions::stream_window_bytes. At least 64 KiB.
  void set_stream_window_bytes(uint64_t bytes) { stream_window_bytes_ = bytes; }
  uint64_t stream_window_bytes() const { return stream_window_bytes_; }
  // Streams: the stream ends with DEADLINE_EXCEEDED once no frame has come
  // from the server and no message has gone to it for this long
  // (docs/streaming.md, "Idle streams"). 0 (the default): the channel's
  // ChannelOptions::stream_idle_timeout. Negative: never, whatever the channel says.
  void set_stream_idle_timeout(std::chrono::nanoseconds timeout) { stream_idle_timeout_ = timeout; }
  std::chrono::nanoseconds stream_idle_timeout() const { return stream_idle_timeout_; }

 private:
  friend class Channel;
  friend class internal::ClientCall;
  friend class internal::CallbackCall;
  friend class internal::ClientStream;

  int64_t deadline_nanos_ = 0;
  uint64_t stream_window_bytes_ = 0;
  std::chrono::nanoseconds stream_idle_timeout_{0};
  Metadata metadata_;
  Metadata server_metadata_;
  Metadata server_initial_metadata_;
  std::vector<Buffer> attachments_;
  std::vector<Buffer> response_attachments_;
  // The call in flight, for TryCancel(): its channel by id (a pointer
  // could outlive the channel). Set and cleared by the Channel.
  std::atomic<uint64_t> channel_id_{0};
  std::atomic<uint64_t> call_id_{0};
};

}  // namespace zcrpc
