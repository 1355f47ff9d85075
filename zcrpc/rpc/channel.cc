#include "zcrpc/rpc/channel.h"

#include "zcrpc/base/cpu_relax.h"

#include <google/protobuf/message_lite.h>

#include "absl/strings/str_cat.h"
#include "zcrpc/rpc/internal/client_call.h"

namespace zcrpc {

// One transport connection and the calls sent on it. The transport keeps it
// alive until OnClosed; it reaches the channel through a weak pointer, so a
// late frame after the channel is gone is dropped.
class Channel::Link final : public transport::ConnectionHandler {
 public:
  Link(std::weak_ptr<Channel> channel, std::unique_ptr<transport::Connection> connection, uint64_t epoch)
      : channel_(std::move(channel)), connection_(std::move(connection)), epoch_(epoch) {}

  transport::Connection& connection() { return *connection_; }
  uint64_t epoch() const { return epoch_; }

  void OnFrame(Frame frame) override {
    if (frame.header.type != FrameType::kResponse) {
      connection_->Close(absl::InvalidArgumentError(
          absl::StrCat("server ", connection_->peer(), " sent a frame of type ",
                       static_cast<int>(frame.header.type), " to a client")));
      return;
    }
    if (auto channel = channel_.lock()) channel->OnResponse(std::move(frame));
  }
  void OnClosed(const Status& reason) override {
    if (auto channel = channel_.lock()) channel->OnLinkClosed(this, reason);
  }

 private:
  std::weak_ptr<Channel> channel_;
  std::unique_ptr<transport::Connection> connection_;
  const uint64_t epoch_;
};

StatusOr<std::shared_ptr<Channel>> Channel::Create(std::string_view target, ChannelOptions options) {
  ZCRPC_ASSIGN_OR_RETURN(transport::Uri uri, transport::Uri::Parse(target));
  transport::Registry& registry = options.registry ? *options.registry : transport::Registry::Default();
  ZCRPC_ASSIGN_OR_RETURN(transport::Transport * transport, registry.Find(uri.scheme));
  if (options.max_calls_in_flight == 0) return absl::InvalidArgumentError("max_calls_in_flight must be > 0");
  return std::shared_ptr<Channel>(new Channel(std::string(target), std::move(uri), transport, options));
}

Channel::Channel(std::string target, transport::Uri uri, transport::Transport* transport, ChannelOptions options)
    : target_(std::move(target)),
      uri_(std::move(uri)),
      transport_(transport),
      options_(options),
      table_(options.max_calls_in_flight),
      sweeper_(options.sweep_tick) {
  sweeper_.Add(this);
}

Channel::~Channel() {
  sweeper_.Remove(this);
  std::shared_ptr<Link> link;
  {
    std::lock_guard lock(mu_);
    link = std::move(link_);
  }
  if (link) link->connection().Close(absl::CancelledError("channel destroyed"));
  // Only callback calls can still be in flight (a blocking caller holds the
  // channel through its stub).
  table_.RemoveIf([](internal::ClientCall*) { return true; },
                  [](CallId, internal::ClientCall* call) {
                    call->Complete(absl::CancelledError("channel destroyed"), Frame{});
                  });
}

StatusOr<std::shared_ptr<Channel::Link>> Channel::GetLink() {
  std::lock_guard lock(mu_);
  if (link_) return link_;
  // Connecting under the lock: concurrent first calls share one attempt.
  transport::ConnectionOptions connection_options{options_.limits};
  StatusOr<std::unique_ptr<transport::Connection>> connection = transport_->Connect(uri_, connection_options);
  if (!connection.ok()) return absl::UnavailableError(connection.status().message());
  auto link = std::make_shared<Link>(weak_from_this(), std::move(*connection), ++link_epoch_);
  link->connection().Start(link);
  link_ = link;
  return link;
}

StatusOr<Buffer> Channel::AllocateBuffer(size_t size) {
  ZCRPC_ASSIGN_OR_RETURN(std::shared_ptr<Link> link, GetLink());
  return link->connection().Allocate(size);
}

Status Channel::StartCall(const MethodDescriptor& method, ClientContext* context,
                          const google::protobuf::MessageLite& request, internal::ClientCall* call,
                          std::shared_ptr<Link>* used_link) {
  int64_t deadline = context->deadline_nanos();
  int64_t now = 0;
  if (deadline != 0) {
    now = Clock::Real().NowNanos();
    if (deadline <= now) return absl::DeadlineExceededError("deadline passed before the call started");
  }
  ZCRPC_ASSIGN_OR_RETURN(std::shared_ptr<Link> link, GetLink());
  transport::Connection& connection = link->connection();

  Frame frame;
  frame.header.type = FrameType::kRequest;
  frame.header.method_id = method.id;
  size_t size = request.ByteSizeLong();
  if (size > options_.limits.max_body_bytes || size > UINT32_MAX) {
    return absl::ResourceExhaustedError(absl::StrCat("request of ", size, " bytes exceeds the channel's limit of ",
                                                     options_.limits.max_body_bytes));
  }
  frame.message = connection.Allocate(size);
  request.SerializeWithCachedSizesToArray(frame.message.data());
  if (!context->metadata().empty()) {
    frame.metadata = connection.Allocate(EncodedMetadataSize(context->metadata()));
    EncodeMetadata(context->metadata(), frame.metadata.span());
  }

  frame.attachments = std::move(context->attachments_);
  context->attachments_.clear();
  context->response_attachments_.clear();

  call->link_epoch = link->epoch();
  ZCRPC_ASSIGN_OR_RETURN(CallId id, table_.Insert(call));
  frame.header.call_id = id;
  if (deadline != 0) {
    frame.header.timeout_us = static_cast<uint64_t>(std::max<int64_t>(1, (deadline - now) / 1000));
    table_.Arm(id, deadline);
    sweeper_.Wake();
  }
  context->channel_.store(this, std::memory_order_release);
  context->call_id_.store(id, std::memory_order_release);

  if (Status sent = connection.Send(std::move(frame)); !sent.ok()) {
    // If the call is still ours, fail it here; otherwise whoever removed it
    // (a failing connection, the sweeper) completes it.
    if (internal::ClientCall* mine = table_.Remove(id)) mine->Complete(sent, Frame{});
  }
  if (used_link != nullptr) *used_link = std::move(link);
  return absl::OkStatus();
}

Status Channel::CallUnary(const MethodDescriptor& method, ClientContext* context,
                          const google::protobuf::MessageLite& request, google::protobuf::MessageLite* response) {
  internal::BlockingCall call(context, response);
  std::shared_ptr<Link> link;
  Status started = StartCall(method, context, request, &call, &link);
  if (!started.ok()) return started;
  // Where the transport can (shm), read the reply on this thread rather
  // than be woken by its poller (DESIGN.md, "Threads").
  if (link != nullptr) {
    link->connection().PollUntil([&call] { return call.done(); }, options_.spin_before_sleep);
  }
  Status result = call.Wait(options_.spin_before_sleep);
  context->call_id_.store(0, std::memory_order_release);
  context->channel_.store(nullptr, std::memory_order_release);
  return result;
}

void Channel::CallUnaryAsync(const MethodDescriptor& method, ClientContext* context,
                             const google::protobuf::MessageLite& request, google::protobuf::MessageLite* response,
                             std::function<void(Status)> done) {
  auto* call = new internal::CallbackCall(context, response, std::move(done));
  Status started = StartCall(method, context, request, call);
  if (!started.ok()) call->Complete(started, Frame{});  // deletes call
}

void Channel::OnResponse(Frame frame) {
  internal::ClientCall* call = table_.Remove(frame.header.call_id);
  if (call == nullptr) return;  // a reply to a call that already ended (deadline, cancel): dropped
  if (frame.body_discarded) {
    call->Complete(absl::ResourceExhaustedError(absl::StrCat("response of ", frame.header.body_len(),
                                                             " bytes exceeds the channel's limit of ",
                                                             options_.limits.max_body_bytes)),
                   Frame{});
    return;
  }
  call->Complete(absl::OkStatus(), std::move(frame));
}

void Channel::OnLinkClosed(Link* link, const Status& reason) {
  {
    std::lock_guard lock(mu_);
    if (link_.get() == link) link_.reset();  // the next call reconnects
  }
  uint64_t epoch = link->epoch();
  Status failure = absl::UnavailableError(absl::StrCat("connection to ", target_, " lost: ", reason.message()));
  table_.RemoveIf([epoch](internal::ClientCall* call) { return call->link_epoch == epoch; },
                  [&failure](CallId, internal::ClientCall* call) { call->Complete(failure, Frame{}); });
}

void Channel::SendCancel(CallId id, uint64_t link_epoch) {
  std::shared_ptr<Link> link;
  {
    std::lock_guard lock(mu_);
    if (link_ && link_->epoch() == link_epoch) link = link_;
  }
  if (!link) return;  // that connection is gone, and the server's call with it
  Frame cancel;
  cancel.header.type = FrameType::kCancel;
  cancel.header.call_id = id;
  (void)link->connection().Send(std::move(cancel));
}

void Channel::CancelCall(CallId id) {
  internal::ClientCall* call = table_.Remove(id);
  if (call == nullptr) return;
  uint64_t epoch = call->link_epoch;
  call->Complete(absl::CancelledError("call cancelled by the client"), Frame{});
  SendCancel(id, epoch);
}

void Channel::SweepExpired(int64_t now_nanos) {
  table_.SweepExpired(now_nanos, [this](CallId id, internal::ClientCall* call) {
    uint64_t epoch = call->link_epoch;
    call->Complete(absl::DeadlineExceededError("deadline exceeded"), Frame{});
    SendCancel(id, epoch);
  });
}

namespace internal {

Status ClientCall::Finish(Status status, Frame& reply) {
  if (!status.ok()) return status;
  context_->response_attachments_ = std::move(reply.attachments);
  if (!reply.metadata.empty()) {
    Status md = DecodeMetadata(reply.metadata.span(), &context_->server_metadata_);
    if (!md.ok()) return absl::InternalError(absl::StrCat("malformed response metadata: ", md.message()));
  }
  auto code = static_cast<StatusCode>(reply.header.status_code);
  if (code != StatusCode::kOk) {
    return Status(code, absl::string_view(reinterpret_cast<const char*>(reply.message.data()), reply.message.size()));
  }
  if (!response_->ParseFromArray(reply.message.data(), static_cast<int>(reply.message.size()))) {
    return absl::InternalError(absl::StrCat("cannot parse the response as ", response_->GetTypeName()));
  }
  return absl::OkStatus();
}

void BlockingCall::Complete(Status status, Frame reply) {
  status_ = std::move(status);
  reply_ = std::move(reply);
  done_.store(1, std::memory_order_release);
  done_.notify_one();
}

Status BlockingCall::Wait(std::chrono::nanoseconds spin) {
  if (done_.load(std::memory_order_acquire) == 0 && spin.count() > 0) {
    int64_t until = Clock::Real().NowNanos() + spin.count();
    while (done_.load(std::memory_order_acquire) == 0 && Clock::Real().NowNanos() < until) CpuRelax();
  }
  while (done_.load(std::memory_order_acquire) == 0) done_.wait(0, std::memory_order_acquire);
  return Finish(std::move(status_), reply_);
}

void CallbackCall::Complete(Status status, Frame reply) {
  Status result = Finish(std::move(status), reply);
  if (ClientContext* ctx = context_) {
    ctx->call_id_.store(0, std::memory_order_release);
    ctx->channel_.store(nullptr, std::memory_order_release);
  }
  auto done = std::move(done_);
  delete this;
  done(std::move(result));
}

}  // namespace internal
}  // namespace zcrpc
