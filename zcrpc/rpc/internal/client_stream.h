// ClientStream: the client's record of one stream, in the channel's
// CallTable like any call, so the deadline sweep, TryCancel and a lost
// connection end it the way they end a unary call (Complete()). Its frames
// reach it through OnStreamFrame() while it is pinned in the table.
//
// Owned by the application (through ClientReader & co.). Destroying it
// while the call is in flight cancels the call, then waits for whoever
// removed it from the table to finish completing it.
#pragma once

#include <atomic>
#include <memory>

#include "zcrpc/rpc/internal/client_call.h"
#include "zcrpc/rpc/internal/stream_state.h"
#include "zcrpc/rpc/method.h"

namespace zcrpc {
class Channel;

namespace internal {

class ClientStream final : public ClientCall {
 public:
  // `response`: client streaming only (filled from the server's final
  // frame), else nullptr.
  ClientStream(std::shared_ptr<Channel> channel, ClientContext* context, google::protobuf::MessageLite* response,
               StreamState::Options options);
  ~ClientStream() override;

  // ClientCall: whoever removed the call from the table ends the stream.
  void Complete(Status status, Frame reply) override;
  Status OnStreamFrame(Frame frame, std::shared_ptr<StreamListener>* notify_later) override;
  bool is_stream() const override { return true; }
  std::shared_ptr<StreamListener> OnWritable() override { return state_.OnWritable(); }
  int64_t DueAt() const override { return state_.DueAt(); }
  Status ExpiredStatus(int64_t now) const override { return state_.ExpiredStatus(now); }

  StreamState& state() { return state_; }
  // Ends the stream before it reached the table (it could not open).
  void FailToOpen(Status status);
  // Called by the channel right before it puts the call in the table, and
  // with false again if that failed.
  void SetInTable(bool in_table) { released_.store(!in_table, std::memory_order_release); }
  // Called by the channel once the call is in the table as `id`, on `link`
  // (kept alive for the stream's frames).
  void Opened(CallId id, std::shared_ptr<void> link, transport::Connection* connection, int64_t deadline);

  // ClientStreamBase::Finish(): closes the writes, waits for the end.
  Status Finish();
  // The stream has ended and its context may go away before this object
  // does (a reactor's OnDone): the destructor leaves the context alone.
  void ForgetContext();

 private:
  const std::shared_ptr<Channel> channel_;
  StreamState state_;
  std::shared_ptr<void> link_;
  CallId id_ = 0;
  // False from the table insert until Complete() has let go of this object.
  std::atomic<bool> released_{true};
  bool finished_ = false;  // Finish() ran (the application's thread only)
  bool context_forgotten_ = false;
};

}  // namespace internal
}  // namespace zcrpc
