#include "zcrpc/rpc/internal/client_stream.h"

#include <thread>

#include "zcrpc/rpc/channel.h"
#include "zcrpc/rpc/client_context.h"

namespace zcrpc::internal {

ClientStream::ClientStream(std::shared_ptr<Channel> channel, ClientContext* context,
                           google::protobuf::MessageLite* response, StreamState::Options options)
    : ClientCall(context, response),
      channel_(std::move(channel)),
      // A broken stream found on this side (a write the transport refused, a
      // message that does not parse) ends the call and tells the server.
      state_(options, [this](Status status) {
        if (id_ != 0) channel_->CancelCall(id_, std::move(status));
      }) {}

ClientStream::~ClientStream() {
  if (!released_.load(std::memory_order_acquire)) {
    channel_->CancelCall(id_, absl::CancelledError("the stream was destroyed before Finish()"));
  }
  // Whoever removed the call (this cancel, the sweeper, the connection's
  // end) may still be completing it: a few instructions.
  while (!released_.load(std::memory_order_acquire)) std::this_thread::yield();
  if (!context_forgotten_) ForgetContext();
}

void ClientStream::ForgetContext() {
  context_->call_id_.store(0, std::memory_order_release);
  context_->channel_id_.store(0, std::memory_order_release);
  context_forgotten_ = true;
}

void ClientStream::FailToOpen(Status status) { state_.End(status); }

void ClientStream::Opened(CallId id, std::shared_ptr<void> link, transport::Connection* connection,
                          int64_t deadline) {
  id_ = id;
  link_ = std::move(link);
  state_.Attach(connection, id, deadline);
}

void ClientStream::Complete(Status status, Frame reply) {
  // OK here means the server's final frame came (its status is inside):
  // the messages it sent before it stay readable.
  const bool from_server = status.ok();
  state_.End(ClientCall::Finish(std::move(status), reply), /*keep_messages=*/from_server);
  released_.store(true, std::memory_order_release);  // the last touch
}

Status ClientStream::OnStreamFrame(Frame frame, std::shared_ptr<StreamListener>* notify_later) {
  return state_.OnFrame(std::move(frame), notify_later);
}

Status ClientStream::Finish() {
  if (finished_) return absl::FailedPreconditionError("Finish() was already called on this stream");
  finished_ = true;
  state_.CloseWrites();
  return state_.WaitEnded();
}

}  // namespace zcrpc::internal
