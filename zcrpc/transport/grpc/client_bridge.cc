#include "zcrpc/transport/grpc/client_bridge.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

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
namespace {

Buffer TextBuffer(std::string_view text) {
  Buffer b = BufferPool::Default().Allocate(text.size());
  if (!text.empty()) std::memcpy(b.data(), text.data(), text.size());
  return b;
}

void AddAll(const std::multimap<::grpc::string_ref, ::grpc::string_ref>& from, Metadata* to) {
  for (const auto& [key, value] : from) {
    std::string k(key.data(), key.size()), v(value.data(), value.size());
    if (ValidateMetadataEntry(k, v).ok()) to->emplace_back(std::move(k), std::move(v));
  }
}

class OutgoingCall;

// The connection's state, shared by its handle and its calls in flight.
class ChannelBridge final : public std::enable_shared_from_this<ChannelBridge> {
 public:
  ChannelBridge(std::shared_ptr<::grpc::Channel> channel, std::string peer)
      : channel_(std::move(channel)),
        stub_(std::make_unique<::grpc::GenericStub>(channel_)),
        peer_(std::move(peer)),
        caps_(BridgedCapabilities()) {}
  // The last call's OnDone may drop the last reference, on a gRPC callback
  // thread: libgrpc++ 1.51 must not lose its last channel there (ASan saw
  // its callback queue freed twice), so the channel goes on a thread of
  // its own. With no thread to be had, it is kept (leaked) instead: one
  // idle channel costs less than the process.
  ~ChannelBridge() {
    struct Held {
      std::unique_ptr<::grpc::GenericStub> stub;
      std::shared_ptr<::grpc::Channel> channel;
    };
    auto* held = new Held{std::move(stub_), std::move(channel_)};
    (void)StartDetachedThread("to release a gRPC channel", [held] { delete held; });
  }

  Status Send(Frame frame);
  void Close(const Status& reason);
  void StartDelivery(std::shared_ptr<ConnectionHandler> handler) { delivery_.Start(std::move(handler)); }
  void Deliver(Frame frame) { delivery_.Deliver(std::move(frame)); }
  SerialDelivery& delivery() { return delivery_; }
  bool closed() const { return delivery_.closing(); }
  const Capabilities& capabilities() const { return caps_; }
  const std::string& peer() const { return peer_; }
  ::grpc::GenericStub& stub() { return *stub_; }
  // The call ends: it leaves the table (its OnDone holds it meanwhile).
  std::shared_ptr<OutgoingCall> Forget(uint64_t id);

 private:
  Status StartCall(Frame frame);

  std::shared_ptr<::grpc::Channel> channel_;
  std::unique_ptr<::grpc::GenericStub> stub_;
  const std::string peer_;
  const Capabilities caps_;
  SerialDelivery delivery_;
  std::mutex mu_;
  absl::flat_hash_map<uint32_t, std::string> paths_ ABSL_GUARDED_BY(mu_);  // method bindings announced
  absl::flat_hash_map<uint64_t, std::shared_ptr<OutgoingCall>> calls_ ABSL_GUARDED_BY(mu_);
};

// One zcrpc call as one gRPC call. Owned by its connection's table until
// gRPC's OnDone, the last reaction.
class OutgoingCall final : public ::grpc::ClientBidiReactor<::grpc::ByteBuffer, ::grpc::ByteBuffer> {
 public:
  OutgoingCall(std::shared_ptr<ChannelBridge> owner, uint64_t id, MethodKind kind)
      : owner_(std::move(owner)),
        id_(id),
        unary_(kind == MethodKind::kUnary),
        final_has_response_(kind == MethodKind::kUnary || kind == MethodKind::kClientStreaming) {}

  ::grpc::ClientContext& context() { return ctx_; }

  // Starts the call; a unary call's request goes with it.
  void Start(const std::string& path, Buffer request) {
    owner_->stub().PrepareBidiStreamingCall(&ctx_, path, ::grpc::StubOptions(), this);
    {
      std::lock_guard lock(mu_);
      read_in_flight_ = true;
    }
    std::lock_guard ops(ops_mu_);
    AddHold();
    holding_ = true;
    if (unary_) {
      LendToGrpc(std::move(request), &write_buffer_);
      StartWriteLast(&write_buffer_, ::grpc::WriteOptions());
    }
    StartRead(&read_buffer_);
    StartCall();
  }

  // --- frames from the runtime ---
  void Write(Buffer message) {
    {
      std::lock_guard lock(mu_);
      writes_.push_back(std::move(message));
    }
    MaybeWrite();
  }
  void WritesDone() {
    {
      std::lock_guard lock(mu_);
      writes_done_wanted_ = true;
    }
    MaybeWrite();
  }
  void Credit(uint64_t bytes) {
    {
      std::lock_guard lock(mu_);
      read_credit_ += static_cast<int64_t>(std::min(bytes, kMaxStreamWindow));
    }
    MaybeRead();
  }
  // Nothing more goes out once the call is cancelled.
  void Cancel() {
    ctx_.TryCancel();
    std::lock_guard ops(ops_mu_);
    ReleaseHoldLocked();
  }

  // --- gRPC's reactions ---
  void OnReadDone(bool ok) override {
    if (!DeliverMessage(ok)) {
      // The server has answered or ended the call: what the runtime still
      // writes would be refused, so nothing more starts.
      std::lock_guard ops(ops_mu_);
      ReleaseHoldLocked();
      return;
    }
    owner_->delivery().Drain();
    MaybeRead();
  }

  void OnWriteDone(bool ok) override {
    uint64_t credit_bytes = 0;
    {
      std::lock_guard lock(mu_);
      write_in_flight_ = false;
      if (ok && !unary_) credit_bytes = CreditToReturn(&credit_owed_, write_cost_, writes_.empty());
    }
    if (credit_bytes > 0) {
      Frame credit;
      credit.header.type = FrameType::kCredit;
      credit.header.call_id = id_;
      credit.header.set_credit_bytes(credit_bytes);
      owner_->Deliver(std::move(credit));
    }
    MaybeWrite();
  }

  void OnDone(const ::grpc::Status& status) override {
    const std::shared_ptr<OutgoingCall> self = owner_->Forget(id_);  // freed when this returns
    Frame end;
    end.header.type = FrameType::kResponse;
    end.header.call_id = id_;
    Metadata md;
    AddAll(ctx_.GetServerTrailingMetadata(), &md);
    ::grpc::StatusCode code = status.error_code();
    std::string text = status.error_message();
    {
      std::lock_guard lock(mu_);
      EnqueueInitialMetadataLocked();
      if (code == ::grpc::StatusCode::OK && final_has_response_) {
        if (has_response_) {
          end.message = std::move(response_);
        } else {
          code = ::grpc::StatusCode::INTERNAL;
          text = "the gRPC server sent no response message";
        }
      }
    }
    end.header.status_code = static_cast<uint32_t>(FromGrpcCode(code));
    if (code != ::grpc::StatusCode::OK) end.message = TextBuffer(text);
    if (!md.empty()) {
      end.metadata = BufferPool::Default().Allocate(EncodedMetadataSize(md));
      EncodeMetadata(md, end.metadata.span());
    }
    end.SetLengthsFromParts();
    owner_->Deliver(std::move(end));
  }

 private:
  // The server's initial metadata, once, in line before the call's first
  // message or its end (gRPC has it by then).
  void EnqueueInitialMetadataLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (initial_delivered_) return;
    initial_delivered_ = true;
    Metadata initial;
    AddAll(ctx_.GetServerInitialMetadata(), &initial);
    if (initial.empty()) return;
    Frame frame;
    frame.header.type = FrameType::kInitialMetadata;
    frame.header.call_id = id_;
    frame.metadata = BufferPool::Default().Allocate(EncodedMetadataSize(initial));
    EncodeMetadata(initial, frame.metadata.span());
    frame.SetLengthsFromParts();
    owner_->delivery().Enqueue(std::move(frame));
  }

  // Hands gRPC's message read on to the runtime, or keeps it for the final
  // frame; false once reads are over (the call's one response arrived, or
  // the server ended the call).
  bool DeliverMessage(bool ok) {
    std::lock_guard lock(mu_);
    read_in_flight_ = false;
    if (!ok) {
      reads_done_ = true;
      return false;
    }
    EnqueueInitialMetadataLocked();
    if (final_has_response_) {  // the one response goes in the final frame
      response_ = TakeFromGrpc(read_buffer_);
      has_response_ = true;
      reads_done_ = true;
      return false;
    }
    Frame frame;
    frame.header.type = FrameType::kStreamMessage;
    frame.header.call_id = id_;
    frame.message = TakeFromGrpc(read_buffer_);
    frame.SetLengthsFromParts();
    read_credit_ -= static_cast<int64_t>(std::max(uint64_t{frame.header.message_len}, kStreamMessageMinCredit));
    // In line before the next read can start (a credit frame on another
    // thread may start it as soon as this lock goes).
    owner_->delivery().Enqueue(std::move(frame));
    return true;
  }

  // gRPC frees its side of the call (the stream operations start on) once
  // its last operation and the last hold are done, and only then runs
  // OnDone, while a frame from the runtime on another thread may still be
  // about to start one. The hold keeps that stream alive: operations start
  // only while it is held, under ops_mu_, and it goes once nothing more
  // will start (reads are over, or the call is cancelled).
  void ReleaseHoldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(ops_mu_) {
    if (!holding_) return;
    holding_ = false;
    RemoveHold();  // never runs OnDone inline: gRPC schedules it
  }

  void MaybeRead() {
    {
      std::lock_guard lock(mu_);
      if (final_has_response_ || read_in_flight_ || reads_done_ || read_credit_ <= 0) return;
      read_in_flight_ = true;
    }
    std::lock_guard ops(ops_mu_);
    if (holding_) StartRead(&read_buffer_);
  }

  void MaybeWrite() {
    Buffer next;
    bool writes_done = false;
    {
      std::lock_guard lock(mu_);
      if (write_in_flight_ || writes_done_sent_) return;
      if (writes_.empty()) {
        if (!writes_done_wanted_) return;
        writes_done_sent_ = writes_done = true;
      } else {
        write_in_flight_ = true;
        next = std::move(writes_.front());
        writes_.pop_front();
        write_cost_ = std::max(uint64_t{next.size()}, kStreamMessageMinCredit);
      }
    }
    std::lock_guard ops(ops_mu_);
    if (!holding_) return;  // over: dropped, as gRPC would refuse it
    if (writes_done) return StartWritesDone();
    LendToGrpc(std::move(next), &write_buffer_);
    StartWrite(&write_buffer_);
  }

  const std::shared_ptr<ChannelBridge> owner_;
  const uint64_t id_;
  const bool unary_;
  const bool final_has_response_;  // unary and client streaming
  ::grpc::ClientContext ctx_;
  // gRPC operations are started under this lock (one read and one write
  // in flight at most). Recursive: gRPC may run a reaction inline.
  std::recursive_mutex ops_mu_;
  bool holding_ ABSL_GUARDED_BY(ops_mu_) = false;  // see ReleaseHoldLocked
  ::grpc::ByteBuffer read_buffer_;
  ::grpc::ByteBuffer write_buffer_;

  std::mutex mu_;  // never held while ops_mu_ is taken
  bool read_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  int64_t read_credit_ ABSL_GUARDED_BY(mu_) = static_cast<int64_t>(kInitialStreamWindow);
  Buffer response_ ABSL_GUARDED_BY(mu_);
  bool has_response_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Buffer> writes_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t write_cost_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t credit_owed_ ABSL_GUARDED_BY(mu_) = 0;  // see CreditToReturn
  bool writes_done_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool initial_delivered_ ABSL_GUARDED_BY(mu_) = false;
};

std::shared_ptr<OutgoingCall> ChannelBridge::Forget(uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = calls_.find(id);
  if (it == calls_.end()) return nullptr;
  std::shared_ptr<OutgoingCall> call = std::move(it->second);
  calls_.erase(it);
  return call;
}

Status ChannelBridge::Send(Frame frame) {
  if (delivery_.closing()) return absl::UnavailableError(absl::StrCat("gRPC channel to ", peer_, " is closed"));
  frame.SetLengthsFromParts();
  ZCRPC_RETURN_IF_ERROR(internal::CheckFrameFits(caps_, frame, peer_));
  if (frame.header.type == FrameType::kRequest) return StartCall(std::move(frame));
  std::shared_ptr<OutgoingCall> call;
  {
    std::lock_guard lock(mu_);
    auto it = calls_.find(frame.header.call_id);
    if (it == calls_.end()) return absl::OkStatus();  // over already: dropped, as a late frame is
    call = it->second;
  }
  switch (frame.header.type) {
    case FrameType::kStreamMessage:
      call->Write(std::move(frame.message));
      break;
    case FrameType::kHalfClose:
      call->WritesDone();
      break;
    case FrameType::kCredit:
      call->Credit(frame.header.credit_bytes());
      break;
    case FrameType::kCancel:
      call->Cancel();
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

Status ChannelBridge::StartCall(Frame frame) {
  const WireHeader& h = frame.header;
  std::span<const uint8_t> metadata = frame.metadata.span();
  std::string path;
  {
    std::lock_guard lock(mu_);
    if (h.flags & kFlagMethodPath) {
      StatusOr<std::string_view> announced = TakeMethodPath(metadata);
      if (!announced.ok()) return absl::InvalidArgumentError(announced.status().message());
      path = std::string(*announced);
      paths_[h.method_id] = path;
    } else if (auto it = paths_.find(h.method_id); it != paths_.end()) {
      path = it->second;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("method binding ", h.method_id, " was never announced"));
    }
  }
  Metadata md;
  ZCRPC_RETURN_IF_ERROR(DecodeMetadata(metadata, &md));
  const MethodKind kind = (h.flags & kFlagStream) == 0 ? MethodKind::kUnary : frame.kind;
  auto call = std::make_shared<OutgoingCall>(shared_from_this(), h.call_id, kind);
  for (const auto& [key, value] : md) call->context().AddMetadata(key, value);
  if (h.timeout_us != 0) {
    call->context().set_deadline(std::chrono::system_clock::now() + std::chrono::microseconds(h.timeout_us));
  }
  {
    std::lock_guard lock(mu_);
    calls_[h.call_id] = call;
  }
  call->Start(path, std::move(frame.message));
  return absl::OkStatus();
}

void ChannelBridge::Close(const Status& reason) {
  std::vector<std::shared_ptr<OutgoingCall>> calls;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, call] : calls_) calls.push_back(call);
  }
  delivery_.Closed(reason);  // the runtime fails what is in flight; their OnDone finds nobody listening
  for (const auto& call : calls) call->Cancel();
}


}  // namespace

void ConnectGrpc(const GrpcAddress& address, const ConnectionOptions& options, ConnectCallback done) {
  ::grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(std::min<uint64_t>(options.limits.max_body_bytes, INT_MAX)));
  args.SetMaxSendMessageSize(-1);
  ApplyConnectionLifetime(options, /*server=*/false, [&args](const char* name, int value) { args.SetInt(name, value); });
  std::shared_ptr<::grpc::Channel> channel =
      ::grpc::CreateCustomChannel(address.target(), ::grpc::InsecureChannelCredentials(), args);
  const auto deadline = std::chrono::system_clock::now() + options.connect_timeout;
  std::string peer = absl::StrCat("grpc://", address.target());
  auto connect = std::make_shared<ConnectCallback>(std::move(done));
  Status started = StartDetachedThread(absl::StrCat("to connect to ", peer), [channel = std::move(channel), deadline,
                                                                              peer = std::move(peer), connect]() mutable {
    ConnectCallback& done = *connect;
    StatusOr<std::unique_ptr<Connection>> result = absl::DeadlineExceededError(
        absl::StrCat("gRPC server ", peer, " not ready within the connect timeout"));
    grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
    while (state != GRPC_CHANNEL_READY) {
      if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
        result = absl::UnavailableError(absl::StrCat("cannot reach gRPC server ", peer));
        break;
      }
      if (!channel->WaitForStateChange(state, deadline)) break;
      state = channel->GetState(/*try_to_connect=*/true);
    }
    if (state == GRPC_CHANNEL_READY) {
      result = std::unique_ptr<Connection>(
          new BridgedConnection<ChannelBridge>(std::make_shared<ChannelBridge>(std::move(channel), std::move(peer))));
    }
    internal::DeliveryScope delivering;  // as every transport's connect callback runs
    done(std::move(result));
  });
  if (!started.ok()) {
    // The one exception to "never inside Connect" (transport.h).
    internal::DeliveryScope delivering;
    (*connect)(std::move(started));
  }
}

}  // namespace zcrpc::transport::grpc_bridge
