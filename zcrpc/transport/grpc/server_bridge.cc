#include "zcrpc/transport/grpc/server_bridge.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/server_callback_handlers.h>
#include <grpcpp/impl/rpc_service_method.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "zcrpc/base/detached_thread.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/transport/grpc/bridged_connection.h"
#include "zcrpc/transport/grpc/grpc_channel_args.h"
#include "zcrpc/transport/grpc/grpc_status.h"
#include "zcrpc/transport/grpc/serial_delivery.h"
#include "zcrpc/transport/grpc/slices.h"
#include "zcrpc/transport/internal/capabilities.h"

namespace zcrpc::transport::grpc_bridge {

// The one call a bridged connection carries has this id on the runtime's
// side: the bridge is its client.
constexpr uint64_t kBridgedCallId = 1;

// Takes calls from the gRPC server for the runtime, until the listener
// stops it. Outlives the gRPC server (the reaper frees it last).
class BridgeService final : public ::grpc::CallbackGenericService,
                            public std::enable_shared_from_this<BridgeService> {
 public:
  BridgeService(ConnectionOptions options, AcceptCallback on_accept)
      : options_(std::move(options)),
        kinds_(options_.served_methods.begin(), options_.served_methods.end()),
        on_accept_(std::move(on_accept)) {}

  ::grpc::ServerGenericBidiReactor* CreateReactor(::grpc::GenericCallbackServerContext* ctx) override;

  // New calls get UNAVAILABLE from now on; returns once no accept callback runs.
  void Stop() {
    std::unique_lock lock(mu_);
    accepting_ = false;
    idle_.wait(lock, [this] { return accepts_running_ == 0; });
  }

  const ConnectionOptions& options() const { return options_; }
  // The kind of the server's method at `path`; nullopt if it has none.
  std::optional<MethodKind> KindOf(const std::string& path) const {
    auto it = kinds_.find(path);
    if (it == kinds_.end()) return std::nullopt;
    return it->second;
  }

 private:
  friend class BridgedCall;
  friend class BridgedUnaryCall;
  // Runs on_accept unless stopped; false if stopped.
  bool Accept(std::unique_ptr<Connection> connection) {
    {
      std::lock_guard lock(mu_);
      if (!accepting_) return false;
      ++accepts_running_;
    }
    {
      internal::DeliveryScope delivering;  // as for every transport's accepts
      on_accept_(std::move(connection));
    }
    std::lock_guard lock(mu_);
    if (--accepts_running_ == 0) idle_.notify_all();
    return true;
  }

  const ConnectionOptions options_;
  const absl::flat_hash_map<std::string, MethodKind> kinds_;  // from options_.served_methods
  const AcceptCallback on_accept_;
  std::mutex mu_;
  std::condition_variable idle_;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  int accepts_running_ ABSL_GUARDED_BY(mu_) = 0;
};

namespace {

// "ipv4:127.0.0.1:5000" (gRPC's peer form) -> "grpc://127.0.0.1:5000".
std::string PeerUri(const std::string& grpc_peer) {
  std::string_view address = grpc_peer;
  for (std::string_view prefix : {"ipv4:", "ipv6:"}) {
    if (address.substr(0, prefix.size()) == prefix) address.remove_prefix(prefix.size());
  }
  return absl::StrCat("grpc://", ToAbsl(address));
}

// The request a gRPC call becomes for the runtime: its path, its metadata
// (entries zcrpc would refuse are left out), its deadline as a timeout, and
// for a unary call its one message.
Frame BridgedRequestFrame(const ::grpc::CallbackServerContext& ctx, const std::string& path, bool stream,
                          Buffer message) {
  // Encoded straight from gRPC's metadata, with no copy into a Metadata
  // vector first (two passes: the size, then the bytes).
  auto view = [](const ::grpc::string_ref& s) { return std::string_view(s.data(), s.size()); };
  size_t md_size = 0;
  for (const auto& [key, value] : ctx.client_metadata()) {
    if (ValidateMetadataEntry(view(key), view(value)).ok()) md_size += EncodedMetadataEntrySize(view(key), view(value));
  }
  Frame frame;
  frame.header.type = FrameType::kRequest;
  frame.header.call_id = kBridgedCallId;
  frame.header.flags = kFlagMethodPath | (stream ? kFlagStream : 0);
  frame.header.method_id = 1;  // the connection's one binding, announced with the path
  const auto deadline = ctx.deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - std::chrono::system_clock::now());
    frame.header.timeout_us = static_cast<uint64_t>(std::max<int64_t>(1, left.count()));
  }
  const size_t path_size = EncodedMethodPathSize(path);
  frame.metadata = BufferPool::Default().Allocate(path_size + md_size);
  EncodeMethodPath(path, frame.metadata.span());
  uint8_t* out = frame.metadata.data() + path_size;
  for (const auto& [key, value] : ctx.client_metadata()) {
    if (ValidateMetadataEntry(view(key), view(value)).ok()) out = EncodeMetadataEntry(view(key), view(value), out);
  }
  frame.message = std::move(message);
  frame.SetLengthsFromParts();
  return frame;
}

// The reason a bridged connection gives the runtime when its gRPC call is
// over: made once (every call ends with it; a Status with a message costs
// an allocation each time it is made). The runtime has usually finished the
// call by then; a handler still streaming learns its peer from its context.
const Status& CallOver() {
  static const Status* const kCallOver = new Status(absl::UnavailableError("the gRPC call is over"));
  return *kCallOver;
}

class Refused final : public ::grpc::ServerGenericBidiReactor {
 public:
  explicit Refused(::grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

// One gRPC call, seen by the runtime as a connection carrying one call.
// The gRPC reactor and the runtime's Connection handle each hold it; the
// reactor goes at OnDone, the handle when the runtime drops it.
class BridgedCall final : public std::enable_shared_from_this<BridgedCall> {
 public:
  BridgedCall(std::shared_ptr<BridgeService> service, ::grpc::GenericCallbackServerContext* ctx)
      : service_(std::move(service)), ctx_(ctx), peer_(PeerUri(ctx->peer())), caps_(BridgedCapabilities()) {}

  class Reactor;

  // Called once, from CreateReactor, with the reactor gRPC will run.
  void Begin(Reactor* reactor);

  // --- gRPC's reactions ---
  void OnReadDone(bool ok);
  void OnWriteDone(bool ok);
  void OnCancel();
  void OnDone();

  // --- the runtime's connection ---
  Status Send(Frame frame);
  void Close(const Status& reason);
  void StartDelivery(std::shared_ptr<ConnectionHandler> handler) { delivery_.Start(std::move(handler)); }
  const Capabilities& capabilities() const { return caps_; }
  const std::string& peer() const { return peer_; }
  bool closed() const { return delivery_.closing(); }

 private:
  Frame RequestFrame(bool stream, Buffer message) const;
  Frame CallFrame(FrameType type) const {
    Frame frame;
    frame.header.type = type;
    frame.header.call_id = kBridgedCallId;
    return frame;
  }
  // Each starts the gRPC operation its state now allows, if any.
  void MaybeRead();
  void MaybeWrite();
  void MaybeFinish();
  // The call ends with `status` unless it already has one; queued writes
  // are dropped.
  void EndWith(::grpc::Status status);

  const std::shared_ptr<BridgeService> service_;
  ::grpc::GenericCallbackServerContext* const ctx_;
  const std::string peer_;
  const Capabilities caps_;
  SerialDelivery delivery_;

  // gRPC operations, and the reactor they go to, under this lock: none is
  // started after Finish. Recursive: gRPC may run a reaction inline.
  std::recursive_mutex ops_mu_;
  Reactor* reactor_ ABSL_GUARDED_BY(ops_mu_) = nullptr;
  bool finish_called_ ABSL_GUARDED_BY(ops_mu_) = false;
  ::grpc::ByteBuffer read_buffer_;   // the one read in flight
  ::grpc::ByteBuffer write_buffer_;  // the one write in flight

  std::mutex mu_;  // never held while ops_mu_ is taken
  bool unary_ ABSL_GUARDED_BY(mu_) = true;
  // Unary and client streaming: the runtime's final frame carries the
  // response message, which gRPC sends before the status.
  bool final_has_response_ ABSL_GUARDED_BY(mu_) = true;
  bool read_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  int64_t read_credit_ ABSL_GUARDED_BY(mu_) = static_cast<int64_t>(kInitialStreamWindow);
  std::deque<Buffer> writes_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t write_cost_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t credit_owed_ ABSL_GUARDED_BY(mu_) = 0;  // see CreditToReturn
  std::optional<::grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
  Metadata trailing_ ABSL_GUARDED_BY(mu_);
  std::optional<Buffer> final_response_ ABSL_GUARDED_BY(mu_);  // unary and client streaming
  bool finish_taken_ ABSL_GUARDED_BY(mu_) = false;
};

class BridgedCall::Reactor final : public ::grpc::ServerGenericBidiReactor {
 public:
  explicit Reactor(std::shared_ptr<BridgedCall> call) : call_(std::move(call)) {}
  void OnReadDone(bool ok) override { call_->OnReadDone(ok); }
  void OnWriteDone(bool ok) override { call_->OnWriteDone(ok); }
  void OnCancel() override { call_->OnCancel(); }
  void OnDone() override {
    call_->OnDone();
    delete this;
  }

 private:
  const std::shared_ptr<BridgedCall> call_;
};


::grpc::ServerGenericBidiReactor* BridgeService::CreateReactor(::grpc::GenericCallbackServerContext* ctx) {
  {
    std::lock_guard lock(mu_);
    if (!accepting_) return new Refused(::grpc::Status(::grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
  }
  auto call = std::make_shared<BridgedCall>(shared_from_this(), ctx);
  auto* reactor = new BridgedCall::Reactor(call);
  call->Begin(reactor);
  return reactor;
}

void BridgedCall::Begin(Reactor* reactor) {
  {
    std::lock_guard ops(ops_mu_);
    reactor_ = reactor;
  }
  const std::string& path = ctx_->method();
  const std::optional<MethodKind> kind =
      service_->KindOf(path);
  const bool stream = kind.has_value() && *kind != MethodKind::kUnary;
  {
    std::lock_guard lock(mu_);
    unary_ = !stream;
    final_has_response_ = !stream || *kind == MethodKind::kClientStreaming;
  }
  if (!service_->Accept(std::make_unique<BridgedConnection<BridgedCall>>(shared_from_this()))) {
    return EndWith(::grpc::Status(::grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
  }
  if (!kind.has_value() || stream) {
    delivery_.Deliver(RequestFrame(stream, Buffer()));
    MaybeRead();
    return;
  }
  // Unary: the request goes to the runtime with its one message.
  {
    std::lock_guard lock(mu_);
    read_in_flight_ = true;
  }
  std::lock_guard ops(ops_mu_);
  reactor_->StartRead(&read_buffer_);
}

Frame BridgedCall::RequestFrame(bool stream, Buffer message) const {
  return BridgedRequestFrame(*ctx_, ctx_->method(), stream, std::move(message));
}

void BridgedCall::OnReadDone(bool ok) {
  Frame frame;
  bool unary, half_close = false, missing_request = false;
  {
    std::lock_guard lock(mu_);
    read_in_flight_ = false;
    unary = unary_;
    if (unary) {
      missing_request = !ok;
    } else if (ok) {
      frame = CallFrame(FrameType::kStreamMessage);
      frame.message = TakeFromGrpc(read_buffer_);
      frame.SetLengthsFromParts();
      read_credit_ -= static_cast<int64_t>(std::max(uint64_t{frame.header.message_len}, kStreamMessageMinCredit));
      // In line before the next read can start (a credit frame on another
      // thread may start it as soon as this lock goes).
      delivery_.Enqueue(std::move(frame));
    } else {
      reads_done_ = true;
      half_close = true;
      delivery_.Enqueue(CallFrame(FrameType::kHalfClose));
    }
  }
  if (unary) {
    if (missing_request) {
      return EndWith(::grpc::Status(::grpc::StatusCode::INTERNAL, "the client sent no request message"));
    }
    delivery_.Deliver(RequestFrame(false, TakeFromGrpc(read_buffer_)));
    return;
  }
  delivery_.Drain();
  if (!half_close) MaybeRead();
}

void BridgedCall::MaybeRead() {
  {
    std::lock_guard lock(mu_);
    if (unary_ || read_in_flight_ || reads_done_ || read_credit_ <= 0) return;
    read_in_flight_ = true;
  }
  std::lock_guard ops(ops_mu_);
  if (finish_called_ || reactor_ == nullptr) return;
  reactor_->StartRead(&read_buffer_);
}

Status BridgedCall::Send(Frame frame) {
  if (delivery_.closing()) return absl::UnavailableError(absl::StrCat("gRPC call from ", peer_, " is over"));
  frame.SetLengthsFromParts();
  ZCRPC_RETURN_IF_ERROR(internal::CheckFrameFits(caps_, frame, peer_));
  switch (frame.header.type) {
    case FrameType::kResponse: {
      Metadata trailing;
      if (!frame.metadata.empty()) (void)DecodeMetadata(frame.metadata.span(), &trailing);
      const auto code = static_cast<StatusCode>(frame.header.status_code);
      {
        std::lock_guard lock(mu_);
        if (finish_) return absl::OkStatus();  // cancelled or closed first
        trailing_ = std::move(trailing);
        if (code == StatusCode::kOk) {
          finish_ = ::grpc::Status::OK;
          if (final_has_response_) {
            final_response_ = std::move(frame.message);
          }
        } else {
          finish_ = ToGrpcStatus(code, frame.message.span());
        }
      }
      MaybeFinish();
      return absl::OkStatus();
    }
    case FrameType::kInitialMetadata: {
      // Sent by the runtime before the first message or the response, so
      // before any gRPC operation that would send gRPC's own.
      Metadata initial;
      ZCRPC_RETURN_IF_ERROR(DecodeMetadata(frame.metadata.span(), &initial));
      std::lock_guard ops(ops_mu_);
      if (finish_called_) return absl::OkStatus();
      for (const auto& [key, value] : initial) ctx_->AddInitialMetadata(key, value);
      return absl::OkStatus();
    }
    case FrameType::kStreamMessage: {
      {
        std::lock_guard lock(mu_);
        if (finish_) return absl::OkStatus();
        writes_.push_back(std::move(frame.message));
      }
      MaybeWrite();
      return absl::OkStatus();
    }
    case FrameType::kCredit: {
      {
        std::lock_guard lock(mu_);
        read_credit_ += static_cast<int64_t>(std::min(frame.header.credit_bytes(), kMaxStreamWindow));
      }
      MaybeRead();
      return absl::OkStatus();
    }
    default:
      return absl::OkStatus();  // GOAWAY and the like: nothing to tell a gRPC client per call
  }
}

void BridgedCall::MaybeWrite() {
  Buffer next;
  bool more_queued;
  {
    std::lock_guard lock(mu_);
    if (write_in_flight_ || writes_.empty()) return;
    write_in_flight_ = true;
    next = std::move(writes_.front());
    writes_.pop_front();
    more_queued = !writes_.empty();
    write_cost_ = std::max(uint64_t{next.size()}, kStreamMessageMinCredit);
  }
  std::lock_guard ops(ops_mu_);
  if (finish_called_ || reactor_ == nullptr) return;
  LendToGrpc(std::move(next), &write_buffer_);
  // More messages already wait behind this one: gRPC may hold it back and
  // send several in one write to the socket. The last one queued goes
  // without the hint, so nothing is held once the queue is empty.
  ::grpc::WriteOptions options;
  if (more_queued) options.set_buffer_hint();
  reactor_->StartWrite(&write_buffer_, options);
}

void BridgedCall::OnWriteDone(bool ok) {
  uint64_t credit_bytes = 0;
  {
    std::lock_guard lock(mu_);
    write_in_flight_ = false;
    // Taken by gRPC (its own flow control holds it from here): the
    // runtime's writer may send as much again.
    if (ok) credit_bytes = CreditToReturn(&credit_owed_, write_cost_, writes_.empty());
  }
  if (credit_bytes > 0) {
    Frame credit = CallFrame(FrameType::kCredit);
    credit.header.set_credit_bytes(credit_bytes);
    delivery_.Deliver(std::move(credit));
  }
  MaybeWrite();
  MaybeFinish();
}

void BridgedCall::MaybeFinish() {
  ::grpc::Status status;
  Metadata trailing;
  std::optional<Buffer> response;
  {
    std::lock_guard lock(mu_);
    if (!finish_ || finish_taken_ || write_in_flight_ || !writes_.empty()) return;
    finish_taken_ = true;
    status = *finish_;
    trailing = std::move(trailing_);
    response = std::move(final_response_);
  }
  std::lock_guard ops(ops_mu_);
  if (finish_called_ || reactor_ == nullptr) return;
  finish_called_ = true;
  for (const auto& [key, value] : trailing) ctx_->AddTrailingMetadata(key, value);
  if (response) {
    LendToGrpc(std::move(*response), &write_buffer_);
    reactor_->StartWriteAndFinish(&write_buffer_, ::grpc::WriteOptions(), status);
  } else {
    reactor_->Finish(status);
  }
}

void BridgedCall::EndWith(::grpc::Status status) {
  {
    std::lock_guard lock(mu_);
    if (!finish_) finish_ = std::move(status);
    writes_.clear();
    final_response_.reset();
  }
  MaybeFinish();
}

void BridgedCall::OnCancel() {
  // The runtime cancels the handler; it sends nothing back for a
  // cancelled call, so the gRPC call is finished here.
  delivery_.Deliver(CallFrame(FrameType::kCancel));
  EndWith(::grpc::Status(::grpc::StatusCode::CANCELLED, "the client cancelled the call"));
}

void BridgedCall::OnDone() {
  {
    std::lock_guard ops(ops_mu_);
    reactor_ = nullptr;
  }
  delivery_.Closed(CallOver());
}

void BridgedCall::Close(const Status& reason) {
  {
    std::lock_guard lock(mu_);
    if (finish_) return;  // the usual case: the call has its status already
  }
  EndWith(::grpc::Status(::grpc::StatusCode::UNAVAILABLE, std::string(reason.message())));
}

// A unary call to a method the server registered, through gRPC's raw
// callback unary API: gRPC hands over the request with the call and sends
// response, trailing metadata and status in one batch, as it does for its
// own generated services. (The generic API would cost a read operation and
// its callback more per call.) The reactor and the runtime's Connection
// handle each hold it.
class BridgedUnaryCall final : public std::enable_shared_from_this<BridgedUnaryCall> {
 public:
  BridgedUnaryCall(std::shared_ptr<BridgeService> service, ::grpc::CallbackServerContext* ctx,
                   ::grpc::ByteBuffer* response)
      : service_(std::move(service)), ctx_(ctx), response_(response), peer_(PeerUri(ctx->peer())),
        caps_(BridgedCapabilities()) {}

  // Called once, from gRPC's method handler: returns the reactor to give
  // gRPC. The runtime may answer (and so Finish) before this returns.
  ::grpc::ServerUnaryReactor* Begin(const std::string& path, const ::grpc::ByteBuffer& request) {
    auto* reactor = new Reactor(shared_from_this());
    {
      std::lock_guard lock(mu_);
      reactor_ = reactor;
    }
    if (!service_->Accept(std::make_unique<BridgedConnection<BridgedUnaryCall>>(shared_from_this()))) {
      EndWith(::grpc::Status(::grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
      return reactor;
    }
    delivery_.Deliver(BridgedRequestFrame(*ctx_, path, /*stream=*/false, TakeFromGrpc(request)));
    return reactor;
  }

  // --- the runtime's connection ---
  Status Send(Frame frame) {
    if (delivery_.closing()) return absl::UnavailableError(absl::StrCat("gRPC call from ", peer_, " is over"));
    frame.SetLengthsFromParts();
    ZCRPC_RETURN_IF_ERROR(internal::CheckFrameFits(caps_, frame, peer_));
    if (frame.header.type == FrameType::kInitialMetadata) {
      Metadata initial;
      ZCRPC_RETURN_IF_ERROR(DecodeMetadata(frame.metadata.span(), &initial));
      std::lock_guard lock(mu_);
      if (finished_) return absl::OkStatus();
      for (const auto& [key, value] : initial) ctx_->AddInitialMetadata(key, value);
      return absl::OkStatus();
    }
    if (frame.header.type != FrameType::kResponse) return absl::OkStatus();  // nothing else applies to unary
    Metadata trailing;
    if (!frame.metadata.empty()) (void)DecodeMetadata(frame.metadata.span(), &trailing);
    const auto code = static_cast<StatusCode>(frame.header.status_code);
    ::grpc::ServerUnaryReactor* reactor;
    {
      std::lock_guard lock(mu_);
      if (finished_ || reactor_ == nullptr) return absl::OkStatus();  // cancelled or closed first
      finished_ = true;
      reactor = reactor_;
      for (const auto& [key, value] : trailing) ctx_->AddTrailingMetadata(key, value);
      if (code == StatusCode::kOk) LendToGrpc(std::move(frame.message), response_);
    }
    // Answered inline, on the gRPC thread that delivered the request: the
    // call's end may then run OnDone on a gRPC thread directly, as gRPC
    // does for its own default reactor, instead of waking gRPC's executor
    // thread for it (a thread hop per call). Answered from any other
    // thread, OnDone could otherwise run inside this Finish, under the
    // runtime's Send: gRPC's executor runs it.
    inline_done_.store(delivery_.DeliveringHere(), std::memory_order_relaxed);
    reactor->Finish(code == StatusCode::kOk ? ::grpc::Status::OK : ToGrpcStatus(code, frame.message.span()));
    return absl::OkStatus();
  }
  void Close(const Status& reason) {
    {
      std::lock_guard lock(mu_);
      if (finished_ || reactor_ == nullptr) return;  // the usual case: answered already
    }
    EndWith(::grpc::Status(::grpc::StatusCode::UNAVAILABLE, std::string(reason.message())));
  }
  void StartDelivery(std::shared_ptr<ConnectionHandler> handler) { delivery_.Start(std::move(handler)); }
  const Capabilities& capabilities() const { return caps_; }
  const std::string& peer() const { return peer_; }
  bool closed() const { return delivery_.closing(); }

 private:
  class Reactor final : public ::grpc::ServerUnaryReactor {
   public:
    explicit Reactor(std::shared_ptr<BridgedUnaryCall> call) : call_(std::move(call)) {}
    bool InternalInlineable() override { return call_->inline_done_.load(std::memory_order_relaxed); }
    void OnCancel() override {
      // The runtime cancels the handler and sends nothing back for a
      // cancelled call, so the gRPC call is finished here.
      Frame cancel;
      cancel.header.type = FrameType::kCancel;
      cancel.header.call_id = kBridgedCallId;
      call_->delivery_.Deliver(std::move(cancel));
      call_->EndWith(::grpc::Status(::grpc::StatusCode::CANCELLED, "the client cancelled the call"));
    }
    void OnDone() override {
      {
        std::lock_guard lock(call_->mu_);
        call_->reactor_ = nullptr;
      }
      call_->delivery_.Closed(CallOver());
      delete this;
    }

   private:
    const std::shared_ptr<BridgedUnaryCall> call_;
  };

  // The call ends with `status` unless it has ended already.
  void EndWith(::grpc::Status status) {
    ::grpc::ServerUnaryReactor* reactor;
    {
      std::lock_guard lock(mu_);
      if (finished_ || reactor_ == nullptr) return;
      finished_ = true;
      reactor = reactor_;
    }
    reactor->Finish(std::move(status));
  }

  const std::shared_ptr<BridgeService> service_;
  ::grpc::CallbackServerContext* const ctx_;
  ::grpc::ByteBuffer* const response_;
  const std::string peer_;
  const Capabilities caps_;
  SerialDelivery delivery_;
  // Finish is called once, by whoever sets finished_, outside the lock:
  // gRPC may run OnDone inline from it on a thread that is not gRPC's.
  // The reactor outlives that call (gRPC frees it only after Finish).
  std::mutex mu_;
  Reactor* reactor_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> inline_done_{false};  // see Send
};

namespace {

// The server's unary methods, registered with gRPC by path as raw callback
// methods (ByteBuffer in, ByteBuffer out): what gRPC's generated code does
// for a service with raw callback methods. Everything else (streams, and
// paths the server does not have) goes to the generic service.
class RegisteredUnaryMethods final : public ::grpc::Service {
 public:
  RegisteredUnaryMethods(std::shared_ptr<BridgeService> service,
                         const std::vector<std::pair<std::string, MethodKind>>& methods) {
    for (const auto& [path, kind] : methods) {
      if (kind != MethodKind::kUnary) continue;
      const std::string& name = paths_.emplace_back(path);  // gRPC keeps the char pointer
      AddMethod(new ::grpc::internal::RpcServiceMethod(name.c_str(), ::grpc::internal::RpcMethod::NORMAL_RPC,
                                                       nullptr));
      MarkMethodRawCallback(
          static_cast<int>(paths_.size() - 1),
          new ::grpc::internal::CallbackUnaryHandler<::grpc::ByteBuffer, ::grpc::ByteBuffer>(
              [service, &name](::grpc::CallbackServerContext* ctx, const ::grpc::ByteBuffer* request,
                               ::grpc::ByteBuffer* response) -> ::grpc::ServerUnaryReactor* {
                return std::make_shared<BridgedUnaryCall>(service, ctx, response)->Begin(name, *request);
              }));
    }
  }
  bool empty() const { return paths_.empty(); }

 private:
  std::deque<std::string> paths_;  // stable addresses
};

}  // namespace

StatusOr<std::unique_ptr<GrpcListener>> GrpcListener::Start(const GrpcAddress& address,
                                                            const ConnectionOptions& options,
                                                            AcceptCallback on_accept) {
  auto service = std::make_shared<BridgeService>(options, std::move(on_accept));
  auto unary_methods = std::make_unique<RegisteredUnaryMethods>(service, options.served_methods);
  ::grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address.target(), ::grpc::InsecureServerCredentials(), &port);
  if (!unary_methods->empty()) builder.RegisterService(unary_methods.get());
  builder.RegisterCallbackGenericService(service.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<uint64_t>(options.limits.max_body_bytes, INT_MAX)));
  builder.SetMaxSendMessageSize(-1);
  ApplyConnectionLifetime(options, /*server=*/true,
                          [&builder](const char* name, int value) { builder.AddChannelArgument(name, value); });
  std::unique_ptr<::grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve gRPC on ", address.target()));
  }
  GrpcAddress bound = address;
  bound.port = static_cast<uint16_t>(port);
  return std::unique_ptr<GrpcListener>(new GrpcListener(std::move(service), std::move(unary_methods),
                                                       std::move(server), absl::StrCat("grpc://", bound.target())));
}

GrpcListener::GrpcListener(std::shared_ptr<BridgeService> service, std::unique_ptr<::grpc::Service> unary_methods,
                           std::unique_ptr<::grpc::Server> server, std::string uri)
    : service_(std::move(service)),
      unary_methods_(std::move(unary_methods)),
      server_(std::move(server)),
      uri_(std::move(uri)) {}

GrpcListener::~GrpcListener() {
  service_->Stop();
  // gRPC's Shutdown waits for the calls in flight, which the runtime ends
  // on its own schedule (Server::Shutdown's deadline): not on this thread,
  // unless no thread can be had (then this one waits, up to that limit).
  struct Held {
    std::unique_ptr<::grpc::Server> server;
    std::unique_ptr<::grpc::Service> unary_methods;
    std::shared_ptr<BridgeService> service;
    ~Held() {
      if (server) server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(30));
      server.reset();  // before the services it calls into
      unary_methods.reset();
      service.reset();
    }
  };
  auto held = std::make_shared<Held>();
  held->server = std::move(server_);
  held->unary_methods = std::move(unary_methods_);
  held->service = std::move(service_);
  (void)StartDetachedThread("to shut a gRPC server down", [held]() mutable { held.reset(); });
}

}  // namespace zcrpc::transport::grpc_bridge
