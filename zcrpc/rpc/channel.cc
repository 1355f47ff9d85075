#include "zcrpc/rpc/channel.h"

#include <algorithm>
#include <random>
#include <thread>
#include <utility>

#include <google/protobuf/message_lite.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "zcrpc/base/cpu_relax.h"
#include "zcrpc/rpc/internal/client_call.h"
#include "zcrpc/rpc/internal/connection_keeper.h"
#include "zcrpc/rpc/internal/discarded_status.h"
#include "zcrpc/rpc/internal/client_stream.h"
#include "zcrpc/rpc/internal/method_bindings.h"

namespace zcrpc {
namespace {

std::string Millis(int64_t nanos) { return absl::StrCat(nanos / 1'000'000, " ms"); }

// The channels alive in the process, by id, for ClientContext::TryCancel:
// a context names its channel by id, so a cancel that races the channel's
// destruction finds nothing instead of a freed channel.
class LiveChannels {
 public:
  static LiveChannels& Get() {
    static LiveChannels* live = new LiveChannels();
    return *live;
  }
  uint64_t Add(std::weak_ptr<Channel> channel) {
    std::lock_guard lock(mu_);
    const uint64_t id = ++last_id_;
    channels_.emplace(id, std::move(channel));
    return id;
  }
  void Remove(uint64_t id) {
    std::lock_guard lock(mu_);
    channels_.erase(id);
  }
  std::shared_ptr<Channel> Find(uint64_t id) {
    std::lock_guard lock(mu_);
    auto it = channels_.find(id);
    return it == channels_.end() ? nullptr : it->second.lock();
  }

 private:
  std::mutex mu_;
  uint64_t last_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, std::weak_ptr<Channel>> channels_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

// One transport connection and the calls sent on it. The transport keeps it
// alive until OnClosed; it reaches the channel through a weak pointer, so a
// late frame after the channel is gone is dropped.
class Channel::Link final : public transport::ConnectionHandler, public std::enable_shared_from_this<Link> {
 public:
  Link(std::weak_ptr<Channel> channel, std::unique_ptr<transport::Connection> connection, uint64_t epoch,
       const KeepaliveOptions& keepalive, int64_t now_nanos)
      : channel_(std::move(channel)),
        connection_(std::move(connection)),
        epoch_(epoch),
        takes_streams_((connection_->capabilities().features & kFeatureStreams) != 0),
        keeper_(keepalive, /*lifetime=*/nullptr, (connection_->capabilities().features & kFeatureKeepalive) != 0,
                now_nanos) {}

  transport::Connection& connection() { return *connection_; }
  uint64_t epoch() const { return epoch_; }
  internal::ClientMethodBindings& bindings() { return bindings_; }
  // The server said go away: no new calls here; closed once the last ends.
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  bool takes_streams() const { return takes_streams_; }
  internal::ConnectionKeeper& keeper() { return keeper_; }

  void OnFrame(Frame frame) override {
    keeper_.NoteFrame();
    if (frame.header.type == FrameType::kPing || frame.header.type == FrameType::kPingAck) {
      if ((connection_->capabilities().features & kFeatureKeepalive) == 0) {
        return Fail("sent a ping on a connection without keepalive");
      }
      // Echoed unless the server is not reading what is queued already.
      if (frame.header.type == FrameType::kPing && connection_->writable()) {
        Frame ack;
        ack.header.type = FrameType::kPingAck;
        ack.header.call_id = frame.header.call_id;
        (void)connection_->Send(std::move(ack));
      }
      return;
    }
    if (frame.header.type == FrameType::kGoAway) {
      draining_.store(true, std::memory_order_release);
      if (auto channel = channel_.lock()) channel->OnGoAway(*this);
      return;
    }
    const FrameType type = frame.header.type;
    const bool stream_frame = type == FrameType::kStreamMessage || type == FrameType::kCredit;
    auto channel = channel_.lock();
    if (type == FrameType::kInitialMetadata) {
      if (channel) channel->OnInitialMetadata(std::move(frame));
      return;
    }
    if (type != FrameType::kResponse && !(stream_frame && takes_streams_)) {
      Fail(absl::StrCat("sent a ", FrameTypeName(type), " frame to a client"));
      return;
    }
    if (channel == nullptr) return;
    if (stream_frame) {
      channel->OnStreamFrame(*this, std::move(frame));
    } else {
      channel->OnResponse(*this, std::move(frame));
    }
  }
  void OnClosed(const Status& reason) override {
    if (auto channel = channel_.lock()) channel->OnLinkClosed(this, reason);
  }
  void OnWritable() override {
    if (auto channel = channel_.lock()) channel->OnLinkWritable(*this);
  }
  // The server broke the protocol: the connection closes, naming it.
  void Fail(std::string_view what) {
    connection_->Close(absl::InvalidArgumentError(absl::StrCat("server ", connection_->peer(), " ", ToAbsl(what))));
  }

 private:
  std::weak_ptr<Channel> channel_;
  std::unique_ptr<transport::Connection> connection_;
  const uint64_t epoch_;
  // Both prefaces announced streams (capabilities are fixed once connected).
  const bool takes_streams_;
  internal::ConnectionKeeper keeper_;
  internal::ClientMethodBindings bindings_;
  std::atomic<bool> draining_{false};
};

// A callback call that started while the connection was being made: it is
// in the call table (so its deadline and TryCancel work) and its request is
// serialized, waiting for a link.
struct Channel::PendingStart {
  Frame frame;  // path included (binding 0): the connection's bindings did not exist yet
  CallId id;
  int64_t deadline;
};

StatusOr<std::shared_ptr<Channel>> Channel::Create(std::string_view target, ChannelOptions options) {
  ZCRPC_ASSIGN_OR_RETURN(transport::Uri uri, transport::Uri::Parse(target));
  transport::Registry& registry = options.registry ? *options.registry : transport::Registry::Default();
  ZCRPC_ASSIGN_OR_RETURN(transport::Transport * transport, registry.Find(uri.scheme));
  ZCRPC_RETURN_IF_ERROR(transport->ValidateAddress(uri));
  if (options.max_calls_in_flight == 0) return absl::InvalidArgumentError("max_calls_in_flight must be > 0");
  if (options.backoff_multiplier < 1.0 || options.backoff_jitter < 0 || options.backoff_jitter >= 1) {
    return absl::InvalidArgumentError("backoff_multiplier must be >= 1 and backoff_jitter in [0, 1)");
  }
  std::shared_ptr<Channel> channel(new Channel(std::string(target), std::move(uri), transport, options));
  channel->id_ = LiveChannels::Get().Add(channel);
  return channel;
}

std::shared_ptr<Channel> Channel::FindLive(uint64_t id) { return LiveChannels::Get().Find(id); }

Channel::Channel(std::string target, transport::Uri uri, transport::Transport* transport, ChannelOptions options)
    : target_(std::move(target)),
      uri_(std::move(uri)),
      transport_(transport),
      options_(options),
      sweeper_(options.sweeper ? options.sweeper : &DeadlineSweeper::Default()),
      table_(options.max_calls_in_flight),
      timer_interval_(internal::ConnectionKeeper::CheckInterval(options.keepalive, /*lifetime=*/nullptr)),
      backoff_(options.initial_backoff) {
  sweeper_->Add(this);
}

Channel::~Channel() {
  LiveChannels::Get().Remove(id_);
  sweeper_->Remove(this);
  std::shared_ptr<Link> link;
  std::vector<PendingStart> pending;
  {
    std::lock_guard lock(mu_);
    link = ReplaceLinkLocked(nullptr);
    pending.swap(pending_);
  }
  if (link) link->connection().Close(absl::CancelledError("channel destroyed"));
  // Only callback calls can still be in flight (a blocking caller holds the
  // channel through its stub).
  table_.RemoveIf([](internal::ClientCall*) { return true; },
                  [](CallId, internal::ClientCall* call) {
                    call->Complete(absl::CancelledError("channel destroyed"), Frame{});
                  });
}

void Channel::StartConnectLocked(std::unique_lock<std::mutex>& lock) {
  connecting_ = true;
  const uint64_t attempt = ++connect_attempt_;
  transport::ConnectionOptions connection_options;
  connection_options.limits = options_.limits;
  connection_options.send_budget_bytes = options_.send_budget_bytes;
  connection_options.send_stall_timeout = options_.send_stall_timeout;
  connection_options.connect_timeout = options_.connect_timeout;
  connection_options.receive_stall_timeout = options_.receive_stall_timeout;
  connection_options.memory_quota = options_.memory_quota;
  connection_options.keepalive_time = options_.keepalive.time;
  connection_options.keepalive_timeout = options_.keepalive.timeout;
  // Connect() never blocks and never calls back inside; still, callers
  // must not queue behind it, so it runs without the lock.
  lock.unlock();
  transport_->Connect(uri_, connection_options,
                      [weak = weak_from_this(), attempt](StatusOr<std::unique_ptr<transport::Connection>> c) {
                        if (auto self = weak.lock()) self->OnConnected(attempt, std::move(c));
                      });
  lock.lock();
}

void Channel::OnConnected(uint64_t attempt, StatusOr<std::unique_ptr<transport::Connection>> connection) {
  std::shared_ptr<Link> link;
  std::shared_ptr<Link> replaced;  // none in practice: a connect starts only without a link
  std::vector<PendingStart> pending;
  Status failure;
  {
    std::lock_guard lock(mu_);
    if (attempt != connect_attempt_) return;  // superseded; dropping it closes it
    connecting_ = false;
    if (connection.ok()) {
      link = std::make_shared<Link>(weak_from_this(), *std::move(connection), ++link_epoch_, options_.keepalive, Now());
      if (timer_interval_.count() > 0) next_timer_nanos_.store(Now() + timer_interval_.count(), std::memory_order_relaxed);
      replaced = ReplaceLinkLocked(link);
      backoff_ = options_.initial_backoff;
      last_connect_error_ = absl::OkStatus();
      next_connect_nanos_ = 0;
    } else {
      failure = absl::UnavailableError(
          absl::StrCat("cannot connect to ", target_, ": ", connection.status().message()));
      if (connection.status().code() == StatusCode::kDeadlineExceeded ||
          connection.status().code() == StatusCode::kFailedPrecondition ||
          connection.status().code() == StatusCode::kInvalidArgument) {
        failure = Status(connection.status().code(), failure.message());
      }
      last_connect_error_ = failure;
      // Exponential backoff with jitter, as gRPC's connection backoff.
      thread_local std::minstd_rand random(std::random_device{}());
      std::uniform_real_distribution<double> jitter(1 - options_.backoff_jitter, 1 + options_.backoff_jitter);
      next_connect_nanos_ = Now() + static_cast<int64_t>(static_cast<double>(backoff_.count()) * jitter(random));
      backoff_ = std::min(options_.max_backoff, std::chrono::nanoseconds(static_cast<int64_t>(
                                                    static_cast<double>(backoff_.count()) * options_.backoff_multiplier)));
    }
    pending.swap(pending_);
  }
  // Started outside the lock: a transport may deliver OnClosed from inside.
  if (link) link->connection().Start(link);
  connect_done_.notify_all();
  for (PendingStart& p : pending) {
    Status sent = link ? SendRequest(*link, std::move(p.frame), internal::ClientMethodBindings::Binding{0, true}, p.id,
                                     p.deadline, false, nullptr)
                       : failure;
    if (!sent.ok()) {
      if (internal::ClientCall* call = table_.Remove(p.id)) call->Complete(sent, Frame{});
    }
  }
}

std::shared_ptr<Channel::Link> Channel::CurrentLink() {
  // The reader's side of ReplaceLinkLocked: while counted in link_readers_,
  // the link just loaded cannot lose its last reference.
  link_readers_.fetch_add(1, std::memory_order_seq_cst);
  Link* link = current_link_.load(std::memory_order_seq_cst);
  std::shared_ptr<Link> held = link != nullptr ? link->shared_from_this() : nullptr;
  link_readers_.fetch_sub(1, std::memory_order_release);
  return held;
}

std::shared_ptr<Channel::Link> Channel::ReplaceLinkLocked(std::shared_ptr<Link> next) {
  current_link_.store(next.get(), std::memory_order_seq_cst);
  std::shared_ptr<Link> old = std::exchange(link_, std::move(next));
  // A reader that loaded the old pointer before the store above is counted
  // (seq_cst on both sides: either it sees the new pointer, or this sees
  // it counted). Its window is a few instructions, unless it is preempted.
  for (int spins = 0; link_readers_.load(std::memory_order_seq_cst) != 0; ++spins) {
    if (spins < 64) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
  return old;
}

StatusOr<std::shared_ptr<Channel::Link>> Channel::GetLink(int64_t deadline, bool may_wait) {
  // Every call comes here: the connected case takes no lock.
  if (std::shared_ptr<Link> link = CurrentLink()) return link;
  std::unique_lock lock(mu_);
  const int64_t wait_until = deadline != 0 ? deadline : Now() + options_.connect_timeout.count();
  for (;;) {
    if (link_) return link_;
    if (!connecting_) {
      if (!last_connect_error_.ok() && Now() < next_connect_nanos_) {
        return Status(last_connect_error_.code(),
                      absl::StrCat(last_connect_error_.message(), " (next attempt in ",
                                   Millis(next_connect_nanos_ - Now()), ")"));
      }
      StartConnectLocked(lock);
      continue;  // the callback may have run already
    }
    if (!may_wait) return std::shared_ptr<Link>();
    if (Now() >= wait_until) {
      return absl::DeadlineExceededError(absl::StrCat("deadline passed while connecting to ", target_));
    }
    // Waits on the real clock in short slices: the deadline may be on an
    // injected one.
    connect_done_.wait_for(lock, std::chrono::milliseconds(5));
    if (!connecting_ && !link_ && !last_connect_error_.ok()) {
      return last_connect_error_;  // this attempt failed: report it, do not start another at once
    }
  }
}

Buffer Channel::AllocateBuffer(size_t size) {
  const bool may_wait = !transport::InDeliveryThread();
  StatusOr<std::shared_ptr<Link>> link = GetLink(0, may_wait);
  if (link.ok() && *link) return (*link)->connection().Allocate(size);
  return BufferPool::Default().Allocate(size);
}

// Everything a request takes from its context is taken here, before the
// call enters the table: once it is there a sweep or a cancel may complete
// it, and a callback call's context is then the caller's again.
Frame Channel::BuildRequest(Link* link, const MethodDescriptor& method, ClientContext* context,
                            const google::protobuf::MessageLite* request, size_t size,
                            internal::ClientMethodBindings::Binding* binding) {
  // Without a link yet (a callback call while connecting) the path goes
  // with this request only (binding 0), in pool memory.
  *binding = link ? link->bindings().Find(method) : internal::ClientMethodBindings::Binding{0, true};
  auto allocate = [link](size_t n) { return link ? link->connection().Allocate(n) : BufferPool::Default().Allocate(n); };
  Frame frame;
  frame.header.type = FrameType::kRequest;
  frame.header.method_id = binding->id;
  frame.kind = method.kind;
  frame.header.flags = (binding->send_path ? kFlagMethodPath : kFlagNone) | (request ? kFlagNone : kFlagStream);
  const size_t path_bytes = binding->send_path ? EncodedMethodPathSize(method.path) : 0;
  const size_t metadata_bytes = path_bytes + EncodedMetadataSize(context->metadata());
  if (metadata_bytes > 0) {
    frame.metadata = allocate(metadata_bytes);
    if (binding->send_path) EncodeMethodPath(method.path, frame.metadata.span());
    EncodeMetadata(context->metadata(), frame.metadata.span().subspan(path_bytes));
  }
  if (request != nullptr) {
    frame.message = allocate(size);
    request->SerializeWithCachedSizesToArray(frame.message.data());
    frame.attachments = std::move(context->attachments_);
  }
  context->attachments_.clear();
  context->response_attachments_.clear();
  return frame;
}

Status Channel::StartCall(const MethodDescriptor& method, ClientContext* context,
                          const google::protobuf::MessageLite& request, internal::ClientCall* call, bool may_wait,
                          std::shared_ptr<Link>* used_link, bool retried_after_go_away) {
  const int64_t deadline = context->deadline_nanos();
  if (deadline != 0 && deadline <= Now()) {
    return absl::DeadlineExceededError("deadline passed before the call started");
  }
  const size_t size = request.ByteSizeLong();
  if (size > options_.limits.max_body_bytes || size > UINT32_MAX) {
    return absl::ResourceExhaustedError(absl::StrCat("request of ", size, " bytes exceeds the channel's limit of ",
                                                     options_.limits.max_body_bytes));
  }
  ZCRPC_ASSIGN_OR_RETURN(std::shared_ptr<Link> link, GetLink(deadline, may_wait));
  internal::ClientMethodBindings::Binding binding;
  Frame frame = BuildRequest(link.get(), method, context, &request, size, &binding);

  ZCRPC_ASSIGN_OR_RETURN(CallId id, table_.Insert(call, deadline));
  if (deadline != 0) sweeper_->Wake();
  // For TryCancel. A blocking call's context is its caller's until
  // CallUnary returns; a callback call's only while the call is in the
  // table, so it is written under the table's lock, or not at all.
  auto publish_context = [&](internal::ClientCall*) {
    context->channel_id_.store(id_, std::memory_order_release);
    context->call_id_.store(id, std::memory_order_release);
  };
  if (may_wait) {
    publish_context(call);
  } else if (table_.Acquire(id, publish_context) == nullptr) {
    return absl::OkStatus();  // already ended (a sweep, a cancel): its callback has run
  }

  if (link == nullptr) {
    // Connecting (callback calls only): the frame waits for the connection.
    std::unique_lock lock(mu_);
    if (link_ == nullptr && connecting_) {
      pending_.push_back({std::move(frame), id, deadline});
      return absl::OkStatus();
    }
    link = link_;
    Status failure = last_connect_error_.ok()
                         ? absl::UnavailableError(absl::StrCat("connection to ", target_, " lost as the call started"))
                         : last_connect_error_;
    lock.unlock();
    if (link == nullptr) {
      if (internal::ClientCall* mine = table_.Remove(id)) mine->Complete(std::move(failure), Frame{});
      return absl::OkStatus();
    }
  }
  Status sent = SendRequest(*link, std::move(frame), binding, id, deadline, may_wait, may_wait ? call : nullptr);
  if (!sent.ok()) {
    // If the call is still ours, fail it here; otherwise whoever removed it
    // (a failing connection, the sweeper) completes it.
    if (internal::ClientCall* mine = table_.Remove(id)) {
      // The server told the connection to go away (idle, age) as the call
      // started, and it closed before the request left: nothing was sent,
      // so the call starts over on a new connection, once.
      if (sent.code() == StatusCode::kUnavailable && link->draining() && !retried_after_go_away) {
        return StartCall(method, context, request, call, may_wait, used_link, /*retried_after_go_away=*/true);
      }
      mine->Complete(sent, Frame{});
    }
  }
  if (used_link != nullptr) *used_link = std::move(link);
  return absl::OkStatus();
}

Status Channel::SendRequest(Link& link, Frame frame, internal::ClientMethodBindings::Binding binding, CallId id,
                            int64_t deadline, bool may_wait, internal::ClientCall* live_call) {
  // A frame over the connection's capabilities (the server's announced
  // limits) is refused by Send with RESOURCE_EXHAUSTED naming the limit.
  transport::Connection& connection = link.connection();
  frame.header.call_id = id;
  if (deadline != 0) {
    frame.header.timeout_us = static_cast<uint64_t>(std::max<int64_t>(1, (deadline - Now()) / 1000));
  }
  // Back-pressure: a caller that may wait does, for room in the send queue,
  // no longer than its deadline. Delivering threads never wait (transport.h).
  if (may_wait && !connection.writable()) ZCRPC_RETURN_IF_ERROR(connection.WaitWritable(deadline));
  // Read by the sweeper, OnLinkClosed and OnResponse once the call may be
  // on the wire. A blocking call's record outlives the call (it is on its
  // caller's stack): no need to pin it. A callback call may be completed
  // and freed meanwhile (sweep, cancel): pin it under the table's lock,
  // and send nothing for a call that has already ended.
  auto publish = [&](internal::ClientCall* c) {
    c->link_epoch.store(link.epoch(), std::memory_order_release);
    c->announced_binding.store(binding.send_path ? binding.id : 0, std::memory_order_release);
  };
  if (live_call != nullptr) {
    publish(live_call);
  } else if (table_.Acquire(id, publish) == nullptr) {
    return absl::OkStatus();
  }
  return connection.Send(std::move(frame));
}

Status Channel::CallUnary(const MethodDescriptor& method, ClientContext* context,
                          const google::protobuf::MessageLite& request, google::protobuf::MessageLite* response) {
  if (transport::InDeliveryThread()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "blocking call to ", ToAbsl(method.path),
        " on a thread that delivers a connection's frames (a callback, or a handler run inline): its reply could "
        "only be read by this same thread. Use the callback form, or run handlers on ServerOptions::worker_threads"));
  }
  internal::BlockingCall call(context, response);
  {
    // This thread reads its own reply (PollUntil below), so the transport
    // need not wake its poller for it (transport.h).
    transport::PollsOwnReplyScope polls_own_reply;
    std::shared_ptr<Link> link;
    Status started = StartCall(method, context, request, &call, /*may_wait=*/true, &link);
    if (!started.ok()) return started;
    // Where the transport can, read the reply on this thread rather than be
    // woken by its poller (docs/architecture.md, "Threads").
    if (link != nullptr) {
      link->connection().PollUntil([&call] { return call.done(); }, options_.spin_before_sleep);
    }
  }
  Status result = call.Wait(options_.spin_before_sleep);
  context->call_id_.store(0, std::memory_order_release);
  context->channel_id_.store(0, std::memory_order_release);
  return result;
}

void Channel::CallUnaryAsync(const MethodDescriptor& method, ClientContext* context,
                             const google::protobuf::MessageLite& request, google::protobuf::MessageLite* response,
                             std::function<void(Status)> done) {
  auto* call = new internal::CallbackCall(context, response, std::move(done));
  Status started = StartCall(method, context, request, call, /*may_wait=*/false, nullptr);
  if (!started.ok()) call->Complete(started, Frame{});  // deletes call
}

std::unique_ptr<internal::ClientStream> Channel::OpenStream(const MethodDescriptor& method, ClientContext* context,
                                                            google::protobuf::MessageLite* response, bool may_wait) {
  internal::StreamState::Options stream_options;
  stream_options.receive_window =
      context->stream_window_bytes() != 0 ? context->stream_window_bytes() : options_.stream_window_bytes;
  stream_options.poll_connection = true;
  stream_options.spin = options_.spin_before_sleep;
  stream_options.sends_half_close = true;
  stream_options.idle_timeout = context->stream_idle_timeout().count() != 0 ? context->stream_idle_timeout()
                                                                            : options_.stream_idle_timeout;
  stream_options.clock = &sweeper_->clock();
  auto stream =
      std::make_unique<internal::ClientStream>(shared_from_this(), context, response, stream_options);
  if (method.kind == MethodKind::kUnary) {
    stream->FailToOpen(absl::InvalidArgumentError(absl::StrCat(ToAbsl(method.path), " is a unary method, not a stream")));
    return stream;
  }
  if (may_wait && transport::InDeliveryThread()) {
    stream->FailToOpen(absl::FailedPreconditionError(absl::StrCat(
        "opening stream ", ToAbsl(method.path),
        " on a thread that delivers a connection's frames (a callback, or a handler run inline): it would wait for "
        "itself")));
    return stream;
  }
  const int64_t deadline = context->deadline_nanos();
  if (deadline != 0 && deadline <= Now()) {
    stream->FailToOpen(absl::DeadlineExceededError("deadline passed before the stream opened"));
    return stream;
  }
  StatusOr<std::shared_ptr<Link>> link = GetLink(deadline, may_wait);
  if (!link.ok()) {
    stream->FailToOpen(link.status());
    return stream;
  }
  if (*link == nullptr) return nullptr;  // connecting, and this caller may not wait
  if (!(*link)->takes_streams()) {
    stream->FailToOpen(absl::UnimplementedError(
        absl::StrCat("the server at ", target_, " does not take zcrpc streams (its preface did not announce them)")));
    return stream;
  }
  internal::ClientMethodBindings::Binding binding;
  Frame open = BuildRequest(link->get(), method, context, nullptr, 0, &binding);
  context->response_attachments_.clear();

  stream->SetInTable(true);
  StatusOr<CallId> id = table_.Insert(stream.get(), deadline);
  if (!id.ok()) {
    stream->SetInTable(false);
    stream->FailToOpen(id.status());
    return stream;
  }
  if (deadline != 0) sweeper_->Wake();
  context->channel_id_.store(id_, std::memory_order_release);
  context->call_id_.store(*id, std::memory_order_release);
  stream->Opened(*id, *link, &(*link)->connection(), deadline);
  if (stream_options.idle_timeout.count() > 0) {
    table_.Arm(*id, stream->state().DueAt());
    sweeper_->Wake();
  }
  Status sent = SendRequest(**link, std::move(open), binding, *id, deadline, may_wait, stream.get());
  if (!sent.ok()) {
    if (internal::ClientCall* mine = table_.Remove(*id)) mine->Complete(sent, Frame{});
    return stream;
  }
  stream->state().AnnounceWindow();
  return stream;
}

void Channel::OnStreamFrame(Link& link, Frame frame) {
  bool unary = false;
  Status verdict;
  const CallId id = frame.header.call_id;
  std::shared_ptr<internal::StreamListener> listener;
  internal::ClientCall* call = table_.Acquire(id, [&](internal::ClientCall* c) {
    if (!c->is_stream()) {
      unary = true;
      return;
    }
    verdict = c->OnStreamFrame(std::move(frame), &listener);
  });
  if (call == nullptr) return;  // the stream is over here (a deadline, a cancel): dropped
  // Unpinned first: a reactor's reactions may cancel the call, which
  // waits for pins to go.
  if (listener) listener->OnStreamChanged();
  if (unary) {
    link.Fail(absl::StrCat("sent a ", FrameTypeName(frame.header.type), " frame for a unary call"));
    return;
  }
  if (!verdict.ok()) CancelCall(id, std::move(verdict));
}

void Channel::OnInitialMetadata(Frame frame) {
  const CallId id = frame.header.call_id;
  Status verdict;
  if (table_.Acquire(id, [&](internal::ClientCall* c) { verdict = c->OnInitialMetadata(frame); }) == nullptr) return;
  if (!verdict.ok()) CancelCall(id, std::move(verdict));
}

void Channel::OnResponse(Link& link, Frame frame) {
  internal::ClientCall* call = table_.Remove(frame.header.call_id);
  if (call == nullptr) return;  // a reply to a call that already ended (deadline, cancel): dropped
  if (uint32_t binding = call->announced_binding.load();
      binding != 0 && frame.header.status_code != static_cast<uint32_t>(StatusCode::kResourceExhausted)) {
    link.bindings().MarkAnnounced(binding);
  }
  struct CloseWhenDrained {
    Channel* channel;
    Link& link;
    ~CloseWhenDrained() {
      if (link.draining()) channel->CloseIfDrained(link);
    }
  } close_when_drained{this, link};
  if (frame.body_discarded) {
    call->Complete(internal::DiscardedStatus(frame, "response", "channel", options_.limits), Frame{});
    return;
  }
  call->Complete(absl::OkStatus(), std::move(frame));
}

void Channel::OnLinkWritable(Link& link) {
  const uint64_t epoch = link.epoch();
  std::vector<std::shared_ptr<internal::StreamListener>> listeners;
  table_.ForEach([&](internal::ClientCall* call) {
    if (call->link_epoch.load() != epoch) return;
    if (std::shared_ptr<internal::StreamListener> listener = call->OnWritable()) listeners.push_back(std::move(listener));
  });
  // Unpinned first, as in OnStreamFrame.
  for (const std::shared_ptr<internal::StreamListener>& listener : listeners) listener->OnStreamChanged();
}

void Channel::OnGoAway(Link& link) {
  std::shared_ptr<Link> replaced;  // dropped outside the lock
  {
    std::lock_guard lock(mu_);
    if (link_.get() == &link) {
      replaced = ReplaceLinkLocked(nullptr);  // new calls go to a new connection
      draining_links_.push_back(replaced);    // its calls may still be cancelled
    }
  }
  CloseIfDrained(link);
}

void Channel::CloseIfDrained(Link& link) {
  const uint64_t epoch = link.epoch();
  if (table_.AnyOf([epoch](internal::ClientCall* call) { return call->link_epoch.load() == epoch; })) return;
  link.connection().Close(absl::UnavailableError(absl::StrCat("server ", target_, " went away (it is shutting down)")));
}

void Channel::OnLinkClosed(Link* link, const Status& reason) {
  std::shared_ptr<Link> replaced;  // dropped outside the lock
  {
    std::lock_guard lock(mu_);
    if (link_.get() == link) replaced = ReplaceLinkLocked(nullptr);  // the next call reconnects
    std::erase_if(draining_links_, [link](const std::shared_ptr<Link>& l) { return l.get() == link; });
  }
  uint64_t epoch = link->epoch();
  Status failure = absl::UnavailableError(absl::StrCat("connection to ", target_, " lost: ", reason.message()));
  table_.RemoveIf([epoch](internal::ClientCall* call) { return call->link_epoch.load() == epoch; },
                  [&failure](CallId, internal::ClientCall* call) { call->Complete(failure, Frame{}); });
}

void Channel::CheckKeepalive(int64_t now) {
  std::vector<std::shared_ptr<Link>> links;
  {
    std::lock_guard lock(mu_);
    if (link_) links.push_back(link_);
    links.insert(links.end(), draining_links_.begin(), draining_links_.end());
    // Armed again while a link remains (OnConnected arms it otherwise).
    next_timer_nanos_.store(links.empty() ? 0 : now + timer_interval_.count(), std::memory_order_relaxed);
  }
  for (const std::shared_ptr<Link>& link : links) {
    const internal::ConnectionKeeper::Action action =
        link->keeper().Check(now, /*has_calls=*/false, link->connection().peer());
    if (action.send_ping) {
      Frame ping;
      ping.header.type = FrameType::kPing;
      ping.header.call_id = static_cast<uint64_t>(now) | 1;  // any non-zero value names it
      (void)link->connection().Send(std::move(ping));
    }
    if (!action.close.ok()) link->connection().Close(action.close);
  }
}

void Channel::SendCancel(CallId id, uint64_t link_epoch) {
  std::shared_ptr<Link> link;
  {
    std::lock_guard lock(mu_);
    if (link_ && link_->epoch() == link_epoch) link = link_;
    for (const std::shared_ptr<Link>& draining : draining_links_) {
      if (draining->epoch() == link_epoch) link = draining;
    }
  }
  if (!link) return;  // that connection is gone, and the server's call with it
  Frame cancel;
  cancel.header.type = FrameType::kCancel;
  cancel.header.call_id = id;
  (void)link->connection().Send(std::move(cancel));  // never blocks (transport.h)
  // The server is going away: this may have been the link's last call.
  if (link->draining()) CloseIfDrained(*link);
}

void Channel::CancelCall(CallId id, Status why) {
  internal::ClientCall* call = table_.Remove(id);
  if (call == nullptr) return;
  // The cancel goes out first: completing the call may let its caller
  // drop the last reference to this channel.
  SendCancel(id, call->link_epoch.load());
  call->Complete(std::move(why), Frame{});
}

void Channel::SweepExpired(int64_t now_nanos) {
  // A completion callback may drop the last reference to this channel:
  // keep it alive until the sweep is over.
  std::shared_ptr<Channel> self = weak_from_this().lock();
  if (self == nullptr) return;  // being destroyed: its destructor ends the calls
  if (const int64_t timer = next_timer_nanos_.load(std::memory_order_relaxed); timer != 0 && timer <= now_nanos) {
    CheckKeepalive(now_nanos);
  }
  table_.SweepExpired(
      now_nanos, [](internal::ClientCall* call) { return call->DueAt(); },
      [this, now_nanos](CallId id, internal::ClientCall* call) {
        uint64_t epoch = call->link_epoch.load();
        call->Complete(call->ExpiredStatus(now_nanos), Frame{});
        SendCancel(id, epoch);
      });
}

namespace internal {

Status ClientCall::OnInitialMetadata(const Frame& frame) {
  context_->server_initial_metadata_.clear();
  Status md = DecodeMetadata(frame.metadata.span(), &context_->server_initial_metadata_);
  if (!md.ok()) return absl::InternalError(absl::StrCat("malformed initial metadata: ", md.message()));
  return absl::OkStatus();
}

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
  if (response_ == nullptr) {
    // A server or bidirectional stream ends with its status alone.
    if (!reply.message.empty()) return absl::InternalError("the stream's final frame carried a message");
    return absl::OkStatus();
  }
  if (!response_->ParseFromArray(reply.message.data(), static_cast<int>(reply.message.size()))) {
    return absl::InternalError(absl::StrCat("cannot parse the response as ", response_->GetTypeName()));
  }
  return absl::OkStatus();
}

// The call lives on its waiter's stack: the waiter may return only once the
// completing thread is done touching it, so completion is two steps
// (kDone: the result is there; kReleased: the completer let go).
void BlockingCall::Complete(Status status, Frame reply) {
  status_ = std::move(status);
  reply_ = std::move(reply);
  done_.store(kDone, std::memory_order_release);
  done_.notify_one();
  done_.store(kReleased, std::memory_order_release);
}

Status BlockingCall::Wait(std::chrono::nanoseconds spin) {
  if (done_.load(std::memory_order_acquire) == kPending && spin.count() > 0) {
    int64_t until = Clock::Real().NowNanos() + spin.count();
    while (done_.load(std::memory_order_acquire) == kPending && Clock::Real().NowNanos() < until) CpuRelax();
  }
  while (done_.load(std::memory_order_acquire) == kPending) done_.wait(kPending, std::memory_order_acquire);
  while (done_.load(std::memory_order_acquire) != kReleased) CpuRelax();  // a few instructions at most
  return Finish(std::move(status_), reply_);
}

Status ClientCall::OnStreamFrame(Frame, std::shared_ptr<StreamListener>*) { return absl::InternalError("not a stream"); }

void CallbackCall::Complete(Status status, Frame reply) {
  Status result = Finish(std::move(status), reply);
  if (ClientContext* ctx = context_) {
    ctx->call_id_.store(0, std::memory_order_release);
    ctx->channel_id_.store(0, std::memory_order_release);
  }
  auto done = std::move(done_);
  delete this;
  done(std::move(result));
}

}  // namespace internal
}  // namespace zcrpc
