#include "zcrpc/rpc/reactor.h"

#include <system_error>
#include <thread>

#include <google/protobuf/message_lite.h>

#include "zcrpc/rpc/channel.h"
#include "zcrpc/rpc/internal/client_stream.h"
#include "zcrpc/rpc/internal/reactor_driver.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc {
namespace internal {

ReactorDriver& DriverOf(ReactorCore& reactor) { return *reactor.driver_; }

ReactorCore::ReactorCore() : driver_(std::make_shared<ReactorDriver>(static_cast<ReactorHooks*>(this))) {}
ReactorCore::~ReactorCore() = default;

void ReactorCore::StartReadUntyped(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments) {
  driver_->StartRead(message, attachments);
}

void ReactorCore::StartWriteUntyped(const google::protobuf::MessageLite* message, std::vector<Buffer> attachments) {
  driver_->StartWrite(message, std::move(attachments), ReactorDriver::AfterWrite::kNothing);
}

void ReactorCore::StartWriteLastUntyped(const google::protobuf::MessageLite* message,
                                        std::vector<Buffer> attachments) {
  driver_->StartWrite(message, std::move(attachments), ReactorDriver::AfterWrite::kWritesDone);
}

void ReactorCore::StartWriteAndFinishUntyped(const google::protobuf::MessageLite* message,
                                             std::vector<Buffer> attachments, Status status) {
  driver_->StartWrite(message, std::move(attachments), ReactorDriver::AfterWrite::kFinish, std::move(status));
}

void ReactorCore::StartWritesDoneUntyped() { driver_->StartWritesDone(); }

void ReactorCore::FinishUntyped(Status status) { driver_->Finish(std::move(status)); }

}  // namespace internal

void ClientReactor::Bind(std::shared_ptr<Channel> channel, const MethodDescriptor& method, ClientContext* context,
                         const google::protobuf::MessageLite* request, google::protobuf::MessageLite* response) {
  std::shared_ptr<internal::ReactorDriver> driver = internal::DriverOf(*this).shared_from_this();
  start_ = [driver, channel = std::move(channel), &method, context, request, response](bool may_wait) {
    std::shared_ptr<internal::ClientStream> stream = channel->OpenStream(method, context, response, may_wait);
    if (stream == nullptr) return false;  // it would wait for the connection
    internal::StreamState& state = stream->state();
    // Server streaming: the one request, then the writes are closed. A
    // stream that did not open has ended with why; these fail quietly.
    if (request != nullptr && state.Write(*request, {}, /*may_wait=*/may_wait,
                                          /*respect_send_queue=*/may_wait) == WriteStatus::kWritten) {
      state.CloseWrites();
    }
    state.SetListener(driver);
    internal::ReactorDriver::Binding binding;
    binding.stream = &state;
    binding.release = [stream]() mutable {
      // The application may free the context in OnDone, which follows.
      stream->ForgetContext();
      // Not here: this may run inside the stream's own completion, which
      // its destructor waits for.
      internal::PostReaction([stream = std::move(stream)]() mutable { stream.reset(); });
    };
    driver->Bind(std::move(binding));
    return true;
  };
}

void ClientReactor::StartCall() {
  if (call_started_) return;  // once: a second StartCall changes nothing
  call_started_ = true;
  internal::ReactorDriver& driver = internal::DriverOf(*this);
  if (!start_) {
    driver.FailToStart(absl::FailedPreconditionError("StartCall() on a reactor no stub has bound to a call"));
    return;
  }
  std::function<bool(bool)> start = std::move(start_);
  start_ = nullptr;
  // Opening may wait for the connection (bounded by the deadline), but
  // never on a thread that delivers frames (it would wait for itself) nor
  // inside a reaction (the reaction thread is everyone's): there a thread
  // of its own waits, if the connection is not up yet.
  const bool may_wait = !transport::InDeliveryThread() && !internal::InReaction();
  if (start(may_wait)) return;
  try {
    std::thread([start = std::move(start)] { start(/*may_wait=*/true); }).detach();
  } catch (const std::system_error&) {
    driver.FailToStart(absl::ResourceExhaustedError("no thread to wait for the channel's connection"));
  }
}

}  // namespace zcrpc
