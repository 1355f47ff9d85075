// ServerContext: what a handler knows about the call it serves: deadline,
// cancellation, the client's metadata, and metadata to send back. Owned by
// the server's record of the call; valid for the duration of the handler.
// IsCancelled() is thread-safe; the rest is for the handler's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "zcrpc/base/buffer.h"
#include "zcrpc/base/status.h"
#include "zcrpc/base/wire.h"

namespace zcrpc {
namespace transport {
class Connection;
}
namespace internal {
class ServerCall;
class StreamState;
}

class ServerContext {
 public:
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // The client's deadline, or time_point::max() if it set none.
  std::chrono::steady_clock::time_point deadline() const;
  // True once the client cancelled the call (or gave up at its deadline),
  // the server's deadline sweep found it expired, the connection was lost,
  // or Server::Shutdown's deadline passed. A long handler polls it and
  // stops early; its reply is then discarded.
  bool IsCancelled() const;

  const Metadata& client_metadata() const { return client_metadata_; }
  // Metadata sent before the call's first message or its response (gRPC's
  // initial metadata; the client reads it in
  // ClientContext::server_initial_metadata()). INVALID_ARGUMENT under
  // wire.h's rules; FAILED_PRECONDITION once it has gone (after the first
  // write or the reply). Dropped, not sent, for a client that does not
  // take it (kFeatureInitialMetadata). Any thread.
  Status AddInitialMetadata(std::string key, std::string value);
  // Metadata sent with the response. INVALID_ARGUMENT under wire.h's rules.
  Status AddTrailingMetadata(std::string key, std::string value);
  const Metadata& trailing_metadata() const { return trailing_metadata_; }

  // The client's address as a URI, e.g. "tcp://127.0.0.1:40112".
  const std::string& peer() const { return peer_; }
  // "/package.Service/Method".
  std::string_view method() const { return method_; }

  // Streams: bytes of messages the client may send ahead of this call's
  // reads, from now on (ServerOptions::stream_window_bytes until then;
  // docs/streaming.md, "Flow control"). A larger window reaches the client
  // at once; a smaller one as the client uses up the credit it holds.
  // Clamped to [64 KiB, an eighth of an shm connection's slab]. No-op on a
  // unary call. Any thread.
  void set_stream_window_bytes(uint64_t bytes);

  // A buffer in the connection's own memory (used by generated code to
  // serialize the response in place, and by handlers for attachments).
  Buffer AllocateBuffer(size_t size);

  // Attachments the client sent beside the request message: page-aligned
  // buffers handed over, not copied. Move them out to keep them past the
  // handler, or pass them to AddResponseAttachment to send them back (shm
  // sends a received buffer back without copying it).
  std::vector<Buffer>& request_attachments() { return request_attachments_; }
  // Sent beside the response message if the handler returns OK. Buffers
  // from AllocateBuffer() go out with no framework copy.
  void AddResponseAttachment(Buffer buffer) { response_attachments_.push_back(std::move(buffer)); }

 private:
  friend class ServerConnection;
  friend class internal::ServerCall;

  ServerContext(transport::Connection* connection, const std::string& peer, std::string_view method,
                int64_t deadline_nanos)
      : connection_(connection), peer_(peer), method_(method), deadline_nanos_(deadline_nanos) {}
  void MarkCancelled() { cancelled_.store(true, std::memory_order_release); }
  // Sends the initial metadata, once, if there is any: before the first
  // message or the response (the runtime calls it there).
  void SendInitialMetadata();

  transport::Connection* connection_;
  const std::string& peer_;
  std::string_view method_;
  int64_t deadline_nanos_;  // steady clock; 0 = none
  std::atomic<bool> cancelled_{false};
  internal::StreamState* stream_ = nullptr;  // streaming calls: the call's stream, owned by the call
  uint64_t wire_call_id_ = 0;                // the id the client's frames carry
  // Every reply asks SendInitialMetadata(); only a call whose handler added
  // some takes the lock (the two flags pair up as in Dekker's algorithm).
  std::atomic<bool> initial_sent_{false};
  std::atomic<bool> has_initial_{false};
  std::mutex initial_mu_;
  Metadata initial_metadata_ ABSL_GUARDED_BY(initial_mu_);
  Metadata client_metadata_;
  Metadata trailing_metadata_;
  std::vector<Buffer> request_attachments_;
  std::vector<Buffer> response_attachments_;
};

}  // namespace zcrpc
