#include "zcrpc/rpc/server.h"

#include <algorithm>

#include <google/protobuf/message_lite.h>
#include <cstring>
#include <exception>
#include <random>
#include <limits>
#include <system_error>
#include <thread>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "absl/strings/str_cat.h"
#include "zcrpc/rpc/internal/connection_keeper.h"
#include "zcrpc/rpc/internal/discarded_status.h"
#include "zcrpc/rpc/internal/method_bindings.h"
#include "zcrpc/rpc/internal/reactor_driver.h"
#include "zcrpc/rpc/internal/server_callback.h"
#include "zcrpc/rpc/internal/server_call.h"
#include "zcrpc/rpc/server_context.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc {
namespace {

// now + timeout, or 0 (no deadline) when a peer's timeout is so large that
// the sum would not fit: "infinity" must never wrap into the past.
int64_t DeadlineFromTimeout(int64_t now, uint64_t timeout_us) {
  if (timeout_us == 0) return 0;
  const uint64_t room_us = static_cast<uint64_t>(std::numeric_limits<int64_t>::max() - now) / 1000;
  if (timeout_us >= room_us) return 0;
  return now + static_cast<int64_t>(timeout_us) * 1000;
}

// Runs a handler: its status, or INTERNAL naming `path` if it threw. A
// handler that throws fails its call, not the process or the poller.
template <typename Handler>
Status RunHandler(std::string_view path, Handler&& handler) {
  try {
    return handler();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("the handler of ", ToAbsl(path), " threw: ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat("the handler of ", ToAbsl(path), " threw"));
  }
}

}  // namespace

// One accepted connection: resolves each request's method, puts the call in
// the server's table and runs it, and routes the client's cancel frames to
// the right call.
class ServerConnection final : public transport::ConnectionHandler,
                               public std::enable_shared_from_this<ServerConnection> {
 public:
  // `load`: the listener's count, which this connection is in (null: it
  // was refused, over the listener's limit).
  ServerConnection(Server* server, std::unique_ptr<transport::Connection> connection,
                   std::shared_ptr<Server::ListenerLoad> load, double age_jitter)
      : server_(server),
        connection_(std::move(connection)),
        peer_(connection_->peer()),
        takes_streams_((connection_->capabilities().features & kFeatureStreams) != 0),
        load_(std::move(load)),
        keeper_(server->options_.keepalive, &server->options_.connection_lifetime,
                (connection_->capabilities().features & kFeatureKeepalive) != 0, server->Now(), age_jitter) {}
  ~ServerConnection() override {
    if (load_) load_->connections.fetch_sub(1, std::memory_order_relaxed);
  }

  transport::Connection& connection() { return *connection_; }
  internal::ConnectionKeeper& keeper() { return keeper_; }
  bool refused() const { return load_ == nullptr; }
  const std::string& peer() const { return peer_; }
  bool HasCalls() {
    std::lock_guard lock(mu_);
    return !running_.empty();
  }

  void OnFrame(Frame frame) override {
    keeper_.NoteFrame();
    switch (frame.header.type) {
      case FrameType::kRequest:
        return OnRequest(std::move(frame));
      case FrameType::kStreamMessage:
      case FrameType::kHalfClose:
      case FrameType::kCredit:
        return OnStreamFrame(std::move(frame));
      case FrameType::kCancel: {
        internal::ServerCall* call = nullptr;
        {
          std::lock_guard lock(mu_);
          auto it = running_.find(frame.header.call_id);
          if (it == running_.end()) return;
          call = it->second;
          call->Ref();
        }
        // Outside the lock: a reactor's reactions may run inside Cancel().
        call->Cancel();
        call->Unref();
        return;
      }
      case FrameType::kPing:
        return AnswerPing(frame.header.call_id);
      case FrameType::kPingAck:
        return;  // NoteFrame above was the point
      default:
        Fail(absl::StrCat("sent a ", FrameTypeName(frame.header.type), " frame to a server"));
    }
  }

  // A keepalive ping: echoed, unless the client is not reading what is
  // queued for it already (then its own keepalive, or the send stall
  // timeout, ends the connection; acks must not pile up behind a stall).
  void AnswerPing(CallId id) {
    if ((connection_->capabilities().features & kFeatureKeepalive) == 0) {
      return Fail("sent a ping on a connection without keepalive");
    }
    if (!connection_->writable()) return;
    Frame ack;
    ack.header.type = FrameType::kPingAck;
    ack.header.call_id = id;
    (void)connection_->Send(std::move(ack));
  }

  // The send queue drained: reactors whose writes it held back go on
  // (blocking writers wait in WaitWritable and need no word).
  void OnWritable() override {
    std::vector<internal::ServerCall*> streams;
    {
      std::lock_guard lock(mu_);
      for (auto& [id, call] : running_) {
        if (call->stream == nullptr) continue;
        call->Ref();
        streams.push_back(call);
      }
    }
    for (internal::ServerCall* call : streams) {
      if (std::shared_ptr<internal::StreamListener> listener = call->stream->OnWritable()) listener->OnStreamChanged();
      call->Unref();
    }
  }

  void OnClosed(const Status&) override {
    std::vector<internal::ServerCall*> calls;
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      for (auto& [id, call] : running_) {
        call->Ref();
        calls.push_back(call);
      }
    }
    // Outside the lock: a reactor's reactions may run inside Cancel().
    for (internal::ServerCall* call : calls) {
      call->Cancel();
      call->Unref();
    }
    server_->OnConnectionClosed(this);
  }

  // Sends the status (and, if OK, the response) of the call the client
  // knows as `call_id`.
  void Reply(CallId call_id, const Status& status, ServerContext* ctx, Buffer response);

  void Run(internal::ServerCall* call);
  // Ends `call` with `status` and `response` (if OK), unless the sweep, a
  // cancel or Shutdown ended it first: the tail of every handler, blocking
  // or reactor.
  void EndCall(internal::ServerCall* call, const Status& status, Buffer response);

 private:
  friend class internal::ServerCallbackCall;
  // A callback method: its adapter runs here, on the delivering thread.
  void StartCallback(internal::ServerCall* call);
  void OnRequest(Frame frame);
  // A stream message, half-close or credit frame: to its call's stream.
  void OnStreamFrame(Frame frame);
  // Ends `call` now with `status`, if nobody else has ended it: a stream
  // that broke (the client exceeded its window, a write failed).
  void EndEarly(internal::ServerCall* call, const Status& status);
  // The client broke the protocol: the connection closes, naming it.
  void Fail(std::string_view what) {
    connection_->Close(absl::InvalidArgumentError(absl::StrCat("client ", peer_, " ", ToAbsl(what))));
  }

  Server* const server_;
  std::unique_ptr<transport::Connection> connection_;
  const std::string peer_;
  // Both prefaces announced streams (capabilities are fixed once connected).
  const bool takes_streams_;
  const std::shared_ptr<Server::ListenerLoad> load_;
  internal::ConnectionKeeper keeper_;
  // Touched only by the thread delivering this connection's frames.
  internal::ServerMethodBindings<Service::Method> bindings_;
  std::mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Calls running on this connection, by the client's call id, so a cancel
  // frame finds its call. Each entry holds no reference: Run erases it
  // before it lets go of the call.
  absl::flat_hash_map<CallId, internal::ServerCall*> running_ ABSL_GUARDED_BY(mu_);
};

void ServerConnection::OnRequest(Frame frame) {
  const WireHeader& h = frame.header;
  keeper_.NoteCall();
  if (refused()) {
    return Reply(h.call_id,
                 absl::ResourceExhaustedError(absl::StrCat(
                     "the server holds its limit of ", server_->options_.max_connections_per_listener,
                     " connections on this listener (max_connections_per_listener); try again later")),
                 nullptr, Buffer());
  }
  if (frame.body_discarded) {
    // The path (if any) was in the discarded body: nothing is bound, and the
    // client announces it again with its next request.
    return Reply(h.call_id, internal::DiscardedStatus(frame, "request", "server", server_->options_.limits), nullptr, Buffer());
  }
  std::span<const uint8_t> metadata = frame.metadata.span();
  StatusOr<internal::ServerMethodBindings<Service::Method>::Resolved> resolved;
  if (h.flags & kFlagMethodPath) {
    StatusOr<std::string_view> path = TakeMethodPath(metadata);
    if (!path.ok()) {
      resolved = path.status();
    } else {
      resolved = bindings_.Bind(h.method_id, *path, server_->FindMethod(*path));
    }
  } else {
    resolved = bindings_.Lookup(h.method_id);
  }
  if (!resolved.ok()) {
    connection_->Close(absl::InvalidArgumentError(
        absl::StrCat("client ", peer_, " broke the protocol: ", resolved.status().message())));
    return;
  }
  if (resolved->method == nullptr) {
    const std::string_view path = resolved->path;
    const std::string_view service = path.substr(1, path.find('/', 1) - 1);
    const bool known_service = server_->methods_.contains(absl::StrCat("service:", ToAbsl(service)));
    return Reply(h.call_id,
                 absl::UnimplementedError(known_service
                                              ? absl::StrCat("unknown method ", ToAbsl(path), " (service ",
                                                             ToAbsl(service), " has no such method)")
                                              : absl::StrCat("unknown service ", ToAbsl(service), " (called ",
                                                             ToAbsl(path), ")")),
                 nullptr, Buffer());
  }
  const Service::Method& method = *resolved->method;
  const bool opens_stream = (h.flags & kFlagStream) != 0;
  if (opens_stream && !takes_streams_) return Fail("opened a stream on a connection without streams");
  if (opens_stream != (method.descriptor.kind != MethodKind::kUnary)) {
    return Reply(h.call_id,
                 absl::UnimplementedError(absl::StrCat(ToAbsl(method.descriptor.path), " is a ",
                                                       opens_stream ? "unary method" : "streaming method",
                                                       "; it was called as a ", opens_stream ? "stream" : "unary call")),
                 nullptr, Buffer());
  }
  if (server_->draining()) {
    return Reply(h.call_id, absl::UnavailableError("the server is shutting down"), nullptr, Buffer());
  }

  const int64_t deadline = DeadlineFromTimeout(server_->Now(), h.timeout_us);
  auto* call = new internal::ServerCall(shared_from_this(), connection_.get(), peer_, method, h.call_id, deadline);
  if (Status md = DecodeMetadata(metadata, &call->context.client_metadata_); !md.ok()) {
    call->Unref();
    connection_->Close(
        absl::InvalidArgumentError(absl::StrCat("malformed request metadata from ", peer_, ": ", md.message())));
    return;
  }
  call->request = std::move(frame);
  call->context.wire_call_id_ = h.call_id;
  if (opens_stream) {
    internal::StreamState::Options stream_options;
    stream_options.receive_window = server_->options_.stream_window_bytes;
    // The handler's thread reads the connection itself while it waits for
    // a message, as a blocking client does: no wake-up per message.
    stream_options.poll_connection = true;
    stream_options.idle_timeout = server_->options_.stream_idle_timeout;
    stream_options.clock = &server_->sweeper_->clock();
    call->stream = std::make_unique<internal::StreamState>(
        stream_options, [this, call](Status status) { EndEarly(call, status); });
    call->stream->Attach(connection_.get(), h.call_id, deadline);
    call->context.stream_ = call->stream.get();
    call->stream->SetBeforeFirstMessage([call] { call->context.SendInitialMetadata(); });
  }
  call->Ref();  // the table's reference
  const int64_t due = call->stream ? call->stream->DueAt() : deadline;
  StatusOr<CallId> id = server_->calls_.Insert(call, due);
  if (!id.ok()) {
    const CallId client_call_id = call->client_call_id;
    call->Unref();
    call->Unref();
    return Reply(client_call_id, id.status(), nullptr, Buffer());
  }
  call->server_call_id = *id;
  // Shutdown may have begun between the check above and the insert: either
  // its final sweep of the table sees this call, or this sees it draining.
  if (server_->draining() && server_->RemoveCall(call)) {
    const CallId client_call_id = call->client_call_id;
    call->Unref();
    call->Unref();
    return Reply(client_call_id, absl::UnavailableError("the server is shutting down"), nullptr, Buffer());
  }
  if (due != 0) server_->sweeper_->Wake();
  {
    std::lock_guard lock(mu_);
    running_[call->client_call_id] = call;
    if (closed_) call->Cancel();  // under the lock, safe: no reactor listens yet
  }
  if (call->stream) call->stream->AnnounceWindow();
  if (call->method.callback_handler) {
    StartCallback(call);
  } else if (call->stream) {
    if (!server_->RunOnStreamThread([this, call] { Run(call); })) {
      // Out of threads: this call fails, the connection and the rest go on.
      {
        std::lock_guard lock(mu_);
        running_.erase(call->client_call_id);
      }
      EndEarly(call, absl::ResourceExhaustedError("the server could not start a thread for the stream's handler"));
      call->Unref();  // the reference Run would have dropped
    }
  } else if (server_->workers_) {
    boost::asio::post(*server_->workers_, [this, call] { Run(call); });
  } else {
    Run(call);
  }
}

void ServerConnection::OnStreamFrame(Frame frame) {
  if (!takes_streams_) return Fail(absl::StrCat("sent a ", FrameTypeName(frame.header.type), " frame"));
  internal::ServerCall* call = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = running_.find(frame.header.call_id);
    if (it == running_.end()) return;  // the call is over here: dropped
    call = it->second;
    if (call->stream) call->Ref();  // held while the frame goes in, outside the lock
  }
  if (call->stream == nullptr) {
    return Fail(absl::StrCat("sent a ", FrameTypeName(frame.header.type), " frame for a unary call"));
  }
  if (Status verdict = call->stream->OnFrame(std::move(frame)); !verdict.ok()) EndEarly(call, verdict);
  call->Unref();
}

void ServerConnection::EndEarly(internal::ServerCall* call, const Status& status) {
  if (!server_->RemoveCall(call)) return;  // ended already, by whoever removed it
  call->Cancel();
  Reply(call->client_call_id, status, nullptr, Buffer());
  call->Unref();  // the table's reference, handed over by the removal
}

void ServerConnection::Run(internal::ServerCall* call) {
  ServerContext& ctx = call->context;
  ctx.request_attachments_ = std::move(call->request.attachments);
  Buffer response;
  const Status status = RunHandler(call->method.descriptor.path, [&] {
    return call->stream ? call->method.stream_handler(&ctx, call->stream.get(), &response)
                        : call->method.handler(&ctx, call->request.message.span(), &response);
  });
  call->request = Frame{};  // the request's buffers go back to the pool before the reply goes out
  ctx.request_attachments_.clear();
  EndCall(call, status, std::move(response));
  call->Unref();
}

void ServerConnection::EndCall(internal::ServerCall* call, const Status& status, Buffer response) {
  {
    std::lock_guard lock(mu_);
    running_.erase(call->client_call_id);
  }
  // Whoever takes the call out of the table ends it. If the sweep, a
  // cancel or Shutdown did, the client already has (or gets) its status.
  const bool mine = server_->RemoveCall(call);
  if (mine) {
    if (!call->context.cancelled_.load(std::memory_order_acquire)) {
      Reply(call->client_call_id, status, &call->context, std::move(response));
    }
    call->Unref();  // the table's reference, handed over by the removal
  }
  // A reactor's reads still outstanding end; nothing more arrives.
  if (call->stream) call->stream->End(status);
}

void ServerConnection::StartCallback(internal::ServerCall* call) {
  call->context.request_attachments_ = std::move(call->request.attachments);
  const internal::ServerCallbackCall handle(this, call);
  // Counted while the adapter runs: a reactor it binds, or a request it
  // waits for, is counted on its own before this lets go.
  server_->handlers_->Enter();
  const Status threw = RunHandler(call->method.descriptor.path, [&] {
    call->method.callback_handler(handle);
    return Status();
  });
  if (!threw.ok()) handle.EndNow(threw);
  call->request = Frame{};  // parsed by now
  call->Unref();            // OnRequest's reference; a bound reactor holds its own
  server_->handlers_->Leave();
}

void ServerConnection::Reply(CallId call_id, const Status& status, ServerContext* ctx, Buffer response) {
  if (ctx != nullptr) ctx->SendInitialMetadata();
  Frame reply;
  reply.header.type = FrameType::kResponse;
  reply.header.call_id = call_id;
  reply.header.status_code = static_cast<uint32_t>(status.code());
  if (ctx != nullptr && !ctx->trailing_metadata().empty()) {
    reply.metadata = connection_->Allocate(EncodedMetadataSize(ctx->trailing_metadata()));
    EncodeMetadata(ctx->trailing_metadata(), reply.metadata.span());
  }
  if (status.ok()) {
    reply.message = std::move(response);
    if (ctx != nullptr) reply.attachments = std::move(ctx->response_attachments_);
  } else if (!status.message().empty()) {
    reply.message = connection_->Allocate(status.message().size());
    std::memcpy(reply.message.data(), status.message().data(), status.message().size());
  }
  const bool had_body = !reply.message.empty() || !reply.metadata.empty() || !reply.attachments.empty();
  Status sent = connection_->Send(std::move(reply));
  // A reply the transport refused (over what the client announced it
  // accepts, say) must still end the call, with why; a closed connection
  // has nobody to tell.
  if (!sent.ok() && had_body && sent.code() != StatusCode::kUnavailable) {
    const StatusCode code =
        sent.code() == StatusCode::kResourceExhausted ? StatusCode::kResourceExhausted : StatusCode::kInternal;
    Reply(call_id, Status(code, absl::StrCat("the response could not be sent: ", sent.message())), nullptr, Buffer());
  }
}

namespace internal {

ServerContext* ServerCallbackCall::context() const { return &call_->context; }

std::span<const uint8_t> ServerCallbackCall::request() const { return call_->request.message.span(); }

void ServerCallbackCall::EndNow(const Status& status) const { connection_->EndCall(call_, status, Buffer()); }

void ServerCallbackCall::Bind(ReactorCore* reactor, std::function<Status(Buffer*)> respond,
                              std::shared_ptr<void> keep_alive) const {
  std::shared_ptr<ReactorDriver> driver = DriverOf(*reactor).shared_from_this();
  ServerConnection* connection = connection_;
  ServerCall* call = call_;
  call->Ref();  // the reactor's, until its Done
  std::shared_ptr<Server::Handlers> handlers = connection->server_->handlers_;
  handlers->Enter();
  ReactorDriver::Binding binding;
  binding.stream = call->stream.get();
  binding.cancelled = [call] { return call->context.IsCancelled(); };
  binding.finish = [connection, call, respond = std::move(respond)](Status status) {
    Buffer response;
    if (status.ok() && respond) status = respond(&response);
    connection->EndCall(call, status, std::move(response));
  };
  binding.release = [call, keep_alive = std::move(keep_alive)] {
    call->SetReactor(nullptr);
    call->Unref();
  };
  // Shutdown waits until OnDone has returned, not just begun.
  binding.after_done = [handlers] { handlers->Leave(); };
  // A cancel reaches the driver through the stream's end; a unary call
  // has no stream, so the call tells it itself.
  if (call->stream) {
    call->stream->SetListener(driver);
  } else {
    call->SetReactor(driver);
  }
  driver->Bind(std::move(binding));
}

// Waits for a server streaming call's request with no thread: the stream's
// listener until the message (or the end) is there.
class RequestWaiter final : public StreamListener, public std::enable_shared_from_this<RequestWaiter> {
 public:
  RequestWaiter(ServerCallbackCall call, ServerCall* record, std::shared_ptr<Server::Handlers> handlers,
                google::protobuf::MessageLite* request, std::function<void()> then)
      : call_(call),
        record_(record),
        handlers_(std::move(handlers)),
        request_(request),
        then_(std::move(then)) {
    record_->Ref();
    handlers_->Enter();  // Shutdown waits for the request, or its end
  }
  ~RequestWaiter() {
    record_->Unref();
    handlers_->Leave();
  }

  void OnStreamChanged() override {
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      if (busy_) {  // another thread, or this one inside TryRead (a parse failure ends the stream)
        again_ = true;
        return;
      }
      busy_ = true;
    }
    StreamState::ReadResult result;
    for (;;) {
      result = record_->stream->TryRead(request_, nullptr);  // not under mu_: it may call back
      std::lock_guard lock(mu_);
      if (result != StreamState::ReadResult::kNotYet) {
        done_ = true;
        break;
      }
      if (!again_) {
        busy_ = false;
        return;
      }
      again_ = false;
    }
    const std::shared_ptr<RequestWaiter> self = shared_from_this();
    record_->stream->SetListener(nullptr);
    if (result != StreamState::ReadResult::kMessage) {
      return call_.EndNow(MissingRequest(&record_->context, record_->method.descriptor.path));
    }
    const Status threw = RunHandler(record_->method.descriptor.path, [&] {
      then_();
      return Status();
    });
    if (!threw.ok()) call_.EndNow(threw);
  }

 private:
  const ServerCallbackCall call_;
  ServerCall* const record_;
  const std::shared_ptr<Server::Handlers> handlers_;
  google::protobuf::MessageLite* const request_;
  const std::function<void()> then_;
  std::mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;   // a thread is reading
  bool again_ ABSL_GUARDED_BY(mu_) = false;  // news came meanwhile: read once more
};

void ServerCallbackCall::AwaitRequest(google::protobuf::MessageLite* request, std::function<void()> then) const {
  auto waiter =
      std::make_shared<RequestWaiter>(*this, call_, connection_->server_->handlers_, request, std::move(then));
  call_->stream->SetListener(waiter);
  waiter->OnStreamChanged();  // it may have ended already (a cancel)
}

}  // namespace internal

void Server::Handlers::Enter() {
  std::lock_guard lock(mu);
  ++running;
}

void Server::Handlers::Leave() {
  std::lock_guard lock(mu);
  if (--running == 0) none_left.notify_all();
}

bool Server::RunOnStreamThread(std::function<void()> handler) {
  handlers_->Enter();
  try {
    std::thread([handler = std::move(handler), handlers = handlers_]() mutable {
      handler();
      handler = nullptr;  // what it holds goes before the server may
      handlers->Leave();
    }).detach();
    return true;
  } catch (const std::system_error&) {  // the process is out of threads
    handlers_->Leave();
    return false;
  }
}

Server::Server(ServerOptions options)
    : options_(options),
      registry_(options.registry ? *options.registry : transport::Registry::Default()),
      sweeper_(options.sweeper ? options.sweeper : &DeadlineSweeper::Default()),
      handlers_(std::make_shared<Handlers>()),
      calls_(std::max<uint32_t>(1, options.max_calls_in_flight)),
      timer_interval_(internal::ConnectionKeeper::CheckInterval(options.keepalive, &options.connection_lifetime)) {
  int workers = options_.worker_threads;
  if (workers == ServerOptions::kAutoWorkerThreads) {
    workers = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  }
  if (workers > 0) workers_ = std::make_unique<boost::asio::thread_pool>(static_cast<size_t>(workers));
  sweeper_->Add(this);
}

Server::~Server() {
  Shutdown(std::chrono::steady_clock::now());
  sweeper_->Remove(this);
}

Status Server::RegisterService(Service* service) {
  std::unique_lock lock(mu_);
  if (listening_) return absl::FailedPreconditionError("register services before the first AddListener()");
  for (const Service::Method& m : service->methods()) {
    if (methods_.contains(ToAbsl(m.descriptor.path))) {
      return absl::AlreadyExistsError(absl::StrCat("method ", ToAbsl(m.descriptor.path), " is already registered"));
    }
  }
  for (const Service::Method& m : service->methods()) methods_[ToAbsl(m.descriptor.path)] = &m;
  // Service names share the map under a prefix no path can have, so an
  // UNIMPLEMENTED can say whether the service or only the method is unknown.
  methods_[absl::StrCat("service:", service->name())] = nullptr;
  return absl::OkStatus();
}

const Service::Method* Server::FindMethod(std::string_view path) const {
  if (path.empty() || path.front() != '/') return nullptr;
  auto it = methods_.find(ToAbsl(path));
  return it == methods_.end() ? nullptr : it->second;
}

StatusOr<std::string> Server::AddListener(std::string_view uri_text) {
  ZCRPC_ASSIGN_OR_RETURN(transport::Uri uri, transport::Uri::Parse(uri_text));
  ZCRPC_ASSIGN_OR_RETURN(transport::Transport * transport, registry_.Find(uri.scheme));
  ZCRPC_RETURN_IF_ERROR(transport->ValidateAddress(uri));
  {
    std::unique_lock lock(mu_);
    if (shutting_down_) return absl::FailedPreconditionError("server is shut down");
    listening_ = true;
  }
  transport::ConnectionOptions connection_options;
  connection_options.limits = options_.limits;
  connection_options.send_budget_bytes = options_.send_budget_bytes;
  connection_options.send_stall_timeout = options_.send_stall_timeout;
  connection_options.connect_timeout = options_.handshake_timeout;
  connection_options.receive_stall_timeout = options_.receive_stall_timeout;
  connection_options.memory_quota = options_.memory_quota;
  connection_options.keepalive_time = options_.keepalive.time;
  connection_options.keepalive_timeout = options_.keepalive.timeout;
  connection_options.max_connection_idle = options_.connection_lifetime.max_idle;
  connection_options.max_connection_age = options_.connection_lifetime.max_age;
  connection_options.max_connection_age_grace = options_.connection_lifetime.max_age_grace;
  // Services are fixed once a listener exists: read without the lock.
  for (const auto& [path, method] : methods_) {
    if (method != nullptr) connection_options.served_methods.emplace_back(path, method->descriptor.kind);
  }
  auto load = std::make_shared<ListenerLoad>();
  ZCRPC_ASSIGN_OR_RETURN(
      std::unique_ptr<transport::Listener> listener,
      transport->Listen(uri, connection_options,
                        [this, load](std::unique_ptr<transport::Connection> c) { OnAccept(std::move(c), load); }));
  std::string bound = listener->uri();
  std::unique_lock lock(mu_);
  listeners_.push_back(std::move(listener));
  return bound;
}

void Server::OnAccept(std::unique_ptr<transport::Connection> connection, const std::shared_ptr<ListenerLoad>& load) {
  // Counted before it can be refused, so the limit holds however many
  // accepts run at once.
  const bool over_limit =
      load->connections.fetch_add(1, std::memory_order_relaxed) >= options_.max_connections_per_listener;
  if (over_limit) load->connections.fetch_sub(1, std::memory_order_relaxed);
  // The age limit's jitter: each connection its own, so a fleet of clients
  // does not reconnect in step.
  thread_local std::minstd_rand jitter_source(std::random_device{}());
  const double jitter = std::uniform_real_distribution<double>(-1.0, 1.0)(jitter_source);
  auto sc = std::make_shared<ServerConnection>(this, std::move(connection), over_limit ? nullptr : load, jitter);
  // Refused: its requests are answered RESOURCE_EXHAUSTED, and the timers
  // close it once its client has been quiet for a moment (no go-away: a
  // client told to go away before its first request went out would see
  // only a closed connection, not why). Marked before the sweep sees it.
  if (over_limit) sc->keeper().GoAwayNow(Now());
  {
    std::unique_lock lock(mu_);
    if (shutting_down_) return;  // dropping it closes it
    connections_.emplace(sc.get(), sc);
    // Arm the connection timers' sweep if none is due yet (under mu_, as
    // CheckConnectionTimers disarms it).
    if ((timer_interval_.count() > 0 || over_limit) && next_timer_nanos_.load(std::memory_order_relaxed) == 0) {
      next_timer_nanos_.store(Now() + TimerInterval().count(), std::memory_order_relaxed);
    }
  }
  sc->connection().Start(sc);
}

void Server::CheckConnectionTimers(int64_t now) {
  std::vector<std::shared_ptr<ServerConnection>> connections;
  {
    std::unique_lock lock(mu_);
    connections.reserve(connections_.size());
    for (const auto& [raw, connection] : connections_) connections.push_back(connection);
    // Armed again while connections remain (OnAccept arms it otherwise).
    next_timer_nanos_.store(connections.empty() ? 0 : now + TimerInterval().count(), std::memory_order_relaxed);
  }
  for (const std::shared_ptr<ServerConnection>& c : connections) {
    const internal::ConnectionKeeper::Action action = c->keeper().Check(now, c->HasCalls(), c->peer());
    if (action.send_ping) {
      Frame ping;
      ping.header.type = FrameType::kPing;
      ping.header.call_id = static_cast<uint64_t>(now) | 1;  // any non-zero value names it
      (void)c->connection().Send(std::move(ping));
    }
    if (action.send_go_away) {
      Frame go_away;
      go_away.header.type = FrameType::kGoAway;
      (void)c->connection().Send(std::move(go_away));
    }
    if (!action.end_calls.ok()) EndCallsOn(c.get(), action.end_calls);
    if (!action.close.ok()) c->connection().Close(action.close);
  }
}

void Server::EndCallsOn(ServerConnection* connection, const Status& why) {
  calls_.RemoveIf([connection](internal::ServerCall* call) { return call->connection.get() == connection; },
                  [&why](CallId, internal::ServerCall* call) {
                    call->Cancel();
                    call->connection->Reply(call->client_call_id, why, nullptr, Buffer());
                    call->Unref();
                  });
}

void Server::OnConnectionClosed(ServerConnection* connection) {
  std::unique_lock lock(mu_);
  connections_.erase(connection);
  changed_.notify_all();
}

bool Server::RemoveCall(internal::ServerCall* call) {
  const bool removed = calls_.Remove(call->server_call_id) != nullptr;
  if (removed && draining()) {
    std::lock_guard lock(mu_);
    changed_.notify_all();
  }
  return removed;
}

void Server::SweepExpired(int64_t now_nanos) {
  if (const int64_t timer = next_timer_nanos_.load(std::memory_order_relaxed); timer != 0 && timer <= now_nanos) {
    CheckConnectionTimers(now_nanos);
  }
  // The client's own sweep gives its caller DEADLINE_EXCEEDED; here the
  // handler learns that nobody waits any more, and its reply is dropped.
  calls_.SweepExpired(
      now_nanos, [](internal::ServerCall* call) { return call->stream ? call->stream->DueAt() : 0; },
      [now_nanos](CallId, internal::ServerCall* call) {
        if (call->stream && !call->DeadlinePassed(now_nanos)) {
          // The stream's idle timeout: unlike at a deadline, the client
          // does not know, so it is told.
          const Status idle = call->stream->ExpiredStatus(now_nanos);
          call->connection->Reply(call->client_call_id, idle, nullptr, Buffer());
          call->Cancel(idle);
        } else {
          call->Cancel();
        }
        call->Unref();
      });
}

void Server::Shutdown(std::chrono::steady_clock::time_point deadline) {
  std::vector<std::unique_ptr<transport::Listener>> listeners;
  {
    std::unique_lock lock(mu_);
    if (shutting_down_) {
      changed_.wait(lock, [this] { return shut_down_; });
      return;
    }
    shutting_down_ = true;
    listeners.swap(listeners_);
  }
  // 1. No new connections, and new requests are answered UNAVAILABLE;
  // clients are told to go away: they send no new calls on their
  // connection and close it once their calls on it have ended.
  draining_.store(true, std::memory_order_release);
  listeners.clear();
  std::vector<std::shared_ptr<ServerConnection>> connections;
  {
    std::unique_lock lock(mu_);
    for (const auto& [raw, connection] : connections_) connections.push_back(connection);
  }
  for (auto& c : connections) {
    Frame go_away;
    go_away.header.type = FrameType::kGoAway;
    (void)c->connection().Send(std::move(go_away));
  }
  connections.clear();
  // 2. Calls in flight may finish until the deadline.
  {
    // In slices: a call the sweep ends does not notify.
    std::unique_lock lock(mu_);
    while (calls_.size() > 0 && std::chrono::steady_clock::now() < deadline) {
      changed_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(10)));
    }
  }
  // 3. The rest are cancelled: their handlers see IsCancelled(), their
  // clients get CANCELLED now, and the handlers' late replies are dropped.
  calls_.RemoveIf([](internal::ServerCall*) { return true; },
                  [](CallId, internal::ServerCall* call) {
                    call->Cancel();
                    call->connection->Reply(call->client_call_id,
                                            absl::CancelledError("the server shut down before the call finished"),
                                            nullptr, Buffer());
                    call->Unref();
                  });
  // 4. Clients close their connections as their last replies arrive; give
  // them until the deadline (at least 100 ms, so the last replies and
  // cancels get there; at most 2 s more, for a client that never closes),
  // then close what is left and wait for the handlers still running.
  {
    const auto now = std::chrono::steady_clock::now();
    const auto grace = std::clamp(deadline, now + std::chrono::milliseconds(100), now + std::chrono::seconds(2));
    std::unique_lock lock(mu_);
    changed_.wait_until(lock, grace, [this] { return connections_.empty(); });
    for (const auto& [raw, connection] : connections_) connections.push_back(connection);
  }
  for (auto& c : connections) c->connection().Close(absl::UnavailableError("server shut down"));
  connections.clear();
  if (workers_) workers_->join();
  {
    // Every connection reports OnClosed on a delivering thread, then
    // leaves the set; a callback method's adapter runs inside a delivery,
    // so once all are gone no reactor can still be about to be counted.
    std::unique_lock lock(mu_);
    changed_.wait(lock, [this] { return connections_.empty(); });
  }
  {
    // Streaming handlers' threads, and reactors not yet at OnDone (they
    // were cancelled above; each must still call Finish()).
    std::unique_lock lock(handlers_->mu);
    handlers_->none_left.wait(lock, [this] { return handlers_->running == 0; });
  }
  std::unique_lock lock(mu_);
  shut_down_ = true;
  changed_.notify_all();
}

void Server::Wait() {
  std::unique_lock lock(mu_);
  changed_.wait(lock, [this] { return shut_down_; });
}

}  // namespace zcrpc
