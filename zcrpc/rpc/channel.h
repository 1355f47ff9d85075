// Channel: the client's end of a connection to one server, created from a
// URI ("tcp://127.0.0.1:50051", "shm://orders"). Generated stubs call
// CallUnary / CallUnaryAsync; users rarely need to.
//
// Connecting: the first call starts an asynchronous connect and waits for
// it no longer than its own deadline; other callers never wait on a lock
// while it runs. A connection that fails is retried with exponential
// backoff (gRPC's: 1 s, x1.6, up to 120 s, ±20 % jitter); while backing off,
// calls fail at once with UNAVAILABLE naming the last error. A connection
// lost after it worked is re-made by the next call, without backoff.
//
// Calls in flight live in the channel's CallTable; the process's
// DeadlineSweeper fails them at their deadline and tells the server.
//
// Thread-safe: any number of threads may call through one channel. A
// blocking call on a thread that delivers a connection's frames (inside a
// callback or an inline handler) fails at once with FAILED_PRECONDITION:
// its reply could only be read by that same thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/base/status.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/rpc/call_table.h"
#include "zcrpc/rpc/client_context.h"
#include "zcrpc/base/memory_quota.h"
#include "zcrpc/rpc/connection_limits.h"
#include "zcrpc/rpc/deadline_sweeper.h"
#include "zcrpc/rpc/internal/method_bindings.h"
#include "zcrpc/rpc/method.h"
#include "zcrpc/transport/registry.h"
#include "zcrpc/transport/transport.h"

namespace google::protobuf {
class MessageLite;
}

namespace zcrpc {

namespace internal {
class ClientCall;
class ClientStream;
}

struct ChannelOptions {
  // Calls in flight at once; one more fails with RESOURCE_EXHAUSTED.
  uint32_t max_calls_in_flight = 4096;
  // What a response may carry (wire.h); announced to the server.
  FrameLimits limits;
  // How long a blocking call spins on its completion before it sleeps.
  std::chrono::nanoseconds spin_before_sleep = std::chrono::microseconds(5);
  // Connection setup and the send queue (transport.h, ConnectionOptions).
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(20);
  uint64_t send_budget_bytes = 16u << 20;
  std::chrono::nanoseconds send_stall_timeout = std::chrono::seconds(20);
  // A response begun and then not continued for this long closes the
  // connection (ServerOptions::receive_stall_timeout); 0: never.
  std::chrono::nanoseconds receive_stall_timeout = std::chrono::seconds(20);
  // Bodies of responses still arriving are reserved from this budget
  // (memory_quota.h); one that does not fit fails its call with
  // RESOURCE_EXHAUSTED. null: MemoryQuota::Default().
  std::shared_ptr<MemoryQuota> memory_quota;
  // Keepalive pings (connection_limits.h): a server that stops answering
  // ends the calls on its connection with UNAVAILABLE.
  KeepaliveOptions keepalive;
  // Streams: bytes of messages a server may send ahead of the client's
  // reads, per stream (docs/streaming.md, "Flow control"); at least 64 KiB.
  // ClientContext::set_stream_window_bytes overrides it per call.
  uint64_t stream_window_bytes = 1u << 20;
  // Streams: end a stream with DEADLINE_EXCEEDED after this long without a
  // frame either way (0: never). ClientContext::set_stream_idle_timeout
  // overrides it per call.
  std::chrono::nanoseconds stream_idle_timeout{0};
  // Reconnect backoff after a failed connect (gRPC's connection backoff).
  std::chrono::nanoseconds initial_backoff = std::chrono::seconds(1);
  std::chrono::nanoseconds max_backoff = std::chrono::seconds(120);
  double backoff_multiplier = 1.6;
  double backoff_jitter = 0.2;
  // Where the scheme is looked up; nullptr means Registry::Default().
  transport::Registry* registry = nullptr;
  // Who fails calls at their deadline; nullptr means the process's
  // DeadlineSweeper::Default(). Deadlines are on the sweeper's clock.
  DeadlineSweeper* sweeper = nullptr;
};

class Channel final : public std::enable_shared_from_this<Channel>, private DeadlineSweeper::Client {
 public:
  // INVALID_ARGUMENT for a malformed URI, an unknown scheme, or an address
  // or option the transport refuses. Does not connect: an unreachable
  // server shows as UNAVAILABLE on the first call.
  static StatusOr<std::shared_ptr<Channel>> Create(std::string_view uri, ChannelOptions options = {});
  // Calls still in flight (callback calls) end with CANCELLED.
  ~Channel();

  const std::string& target() const { return target_; }

  // A buffer for ClientContext::AddAttachment. It lives in the memory of
  // the channel's connection when there is one (connecting first, for at
  // most connect_timeout), so it goes out with no framework copy; otherwise
  // it comes from the process's BufferPool and the transport copies it
  // (counted) if it must. Any thread except a delivering one, where it
  // never waits for a connection.
  Buffer AllocateBuffer(size_t size);

  // Blocking unary call: serializes `request` straight into a transport
  // buffer, waits, parses the reply into `*response`. FAILED_PRECONDITION
  // on a thread that delivers frames (see above).
  Status CallUnary(const MethodDescriptor& method, ClientContext* context,
                   const google::protobuf::MessageLite& request, google::protobuf::MessageLite* response);

  // Callback unary call: returns at once, without waiting for a connection;
  // `done` runs exactly once, on a transport or sweeper thread (or on the
  // calling thread if the call could not start). `context` and `response`
  // must stay valid until then; `request` only during this call.
  void CallUnaryAsync(const MethodDescriptor& method, ClientContext* context,
                      const google::protobuf::MessageLite& request, google::protobuf::MessageLite* response,
                      std::function<void(Status)> done);

  // Opens a stream of a streaming `method` (stream.h's OpenServerStream &
  // co. are the way in). Never null: a stream that could not open has
  // ended with why. `response`: client streaming only, else nullptr.
  // Waits for the connection, no longer than the context's deadline. Any
  // thread except a delivering one (there it fails FAILED_PRECONDITION).
  // `may_wait` false (any thread): never waits; returns nullptr if it would
  // have to wait for the connection.
  std::unique_ptr<internal::ClientStream> OpenStream(const MethodDescriptor& method, ClientContext* context,
                                                     google::protobuf::MessageLite* response, bool may_wait = true);

  // Ends call `id` with `why` if it is still in flight, and tells the
  // server. For ClientContext::TryCancel, and streams that broke here.
  void CancelCall(CallId id, Status why = absl::CancelledError("call cancelled by the client"));

  // The channel with this id (ClientContext keeps the id of its call's
  // channel), or nullptr once it is destroyed. Any thread.
  static std::shared_ptr<Channel> FindLive(uint64_t id);

 private:
  class Link;
  struct PendingStart;
  friend class Link;

  Channel(std::string target, transport::Uri uri, transport::Transport* transport, ChannelOptions options);

  // Puts the call in the table and sends its request, or parks it until
  // the connection is up (`may_wait` false: callback calls). A request
  // that never left because its connection was told to go away and closed
  // as it started is sent once more, on a new connection.
  Status StartCall(const MethodDescriptor& method, ClientContext* context,
                   const google::protobuf::MessageLite& request, internal::ClientCall* call, bool may_wait,
                   std::shared_ptr<Link>* used_link, bool retried_after_go_away = false);
  // The request frame, with all it takes from `context`; in `link`'s memory,
  // or the pool's when there is no link yet. No `request`: a stream's
  // opening frame (no message).
  Frame BuildRequest(Link* link, const MethodDescriptor& method, ClientContext* context,
                     const google::protobuf::MessageLite* request, size_t size,
                     internal::ClientMethodBindings::Binding* binding);
  // Sends call `id`'s request on `link`. `live_call`: the call's record if it
  // is known to outlive the call (blocking calls), else nullptr (it is then
  // pinned through the table, and nothing is sent if it already ended).
  Status SendRequest(Link& link, Frame frame, internal::ClientMethodBindings::Binding binding, CallId id,
                     int64_t deadline, bool may_wait, internal::ClientCall* live_call);
  // The connected link, connecting if needed. With `may_wait`, waits for a
  // connect in progress until `deadline` (0: connect_timeout); without,
  // returns nullptr while connecting.
  StatusOr<std::shared_ptr<Link>> GetLink(int64_t deadline, bool may_wait);
  // The connected link, or nullptr; takes no lock.
  std::shared_ptr<Link> CurrentLink();
  // Makes `next` the link new calls use; returns the one it replaces, which
  // no lock-free reader (CurrentLink) can still be about to take.
  std::shared_ptr<Link> ReplaceLinkLocked(std::shared_ptr<Link> next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartConnectLocked(std::unique_lock<std::mutex>& lock) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnConnected(uint64_t attempt, StatusOr<std::unique_ptr<transport::Connection>> connection);
  void OnResponse(Link& link, Frame frame);
  // The server's initial metadata for a call: into its context.
  void OnInitialMetadata(Frame frame);
  // A stream message or credit frame: to its stream, or dropped if it ended.
  void OnStreamFrame(Link& link, Frame frame);
  void OnLinkClosed(Link* link, const Status& reason);
  // `link`'s send queue drained: streams whose reactor writes it held back
  // go on.
  void OnLinkWritable(Link& link);
  // The server is shutting down: no new calls on `link`, and it closes once
  // the calls on it have ended.
  void OnGoAway(Link& link);
  void CloseIfDrained(Link& link);
  void SendCancel(CallId id, uint64_t link_epoch);
  int64_t Now() const { return sweeper_->clock().NowNanos(); }

  void SweepExpired(int64_t now_nanos) override;
  bool HasCallsInFlight() const override { return table_.size() > 0; }
  int64_t NextTimerNanos() const override { return next_timer_nanos_.load(std::memory_order_relaxed); }
  // Keepalive on the links (ConnectionKeeper).
  void CheckKeepalive(int64_t now_nanos);

  uint64_t id_ = 0;  // set once by Create(), before the channel is shared
  const std::string target_;
  const transport::Uri uri_;
  transport::Transport* const transport_;
  const ChannelOptions options_;
  DeadlineSweeper* const sweeper_;
  CallTable<internal::ClientCall> table_;
  // How often the links' keepalive is checked (0: never), and when next
  // (0: no link).
  const std::chrono::nanoseconds timer_interval_;
  std::atomic<int64_t> next_timer_nanos_{0};

  std::mutex mu_;
  std::condition_variable connect_done_;
  std::shared_ptr<Link> link_ ABSL_GUARDED_BY(mu_);
  // link_, for CurrentLink(): written with it, read without mu_. The link
  // stays alive for readers through link_readers_ (see ReplaceLinkLocked).
  std::atomic<Link*> current_link_{nullptr};
  std::atomic<uint32_t> link_readers_{0};
  uint64_t link_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  bool connecting_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t connect_attempt_ ABSL_GUARDED_BY(mu_) = 0;
  Status last_connect_error_ ABSL_GUARDED_BY(mu_);
  int64_t next_connect_nanos_ ABSL_GUARDED_BY(mu_) = 0;  // backing off until then
  std::chrono::nanoseconds backoff_ ABSL_GUARDED_BY(mu_);
  // Links the server told to go away that still carry calls: a call on
  // one that ends early (deadline, cancel) still tells the server.
  std::vector<std::shared_ptr<Link>> draining_links_ ABSL_GUARDED_BY(mu_);
  // Callback calls that started while the connection was being made.
  std::vector<PendingStart> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace zcrpc
