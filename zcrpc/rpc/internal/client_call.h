// ClientCall: the client's record of one call in flight, as kept in the
// channel's CallTable. Whoever removes it from the table (the poller on a
// response, the sweeper at the deadline, a connection failure, a cancel)
// completes it, exactly once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "zcrpc/base/frame.h"
#include "zcrpc/base/status.h"

namespace google::protobuf {
class MessageLite;
}

namespace zcrpc {
class ClientContext;

namespace internal {
class StreamListener;

class ClientCall {
 public:
  ClientCall(ClientContext* context, google::protobuf::MessageLite* response)
      : context_(context), response_(response) {}
  virtual ~ClientCall() = default;

  // `status` is a local failure (deadline, connection lost, cancelled) or
  // OK with the server's reply in `reply` (for a stream: its status and
  // trailing metadata).
  virtual void Complete(Status status, Frame reply) = 0;

  // A stream message or credit frame for this call, delivered while the
  // call is pinned in the table (it must be quick). Non-OK: the peer broke
  // the stream's rules and the channel ends the call with that status. A
  // unary call has no stream: INTERNAL, and the connection closes. The
  // stream's listener to tell comes back in `*notify_later`: the caller
  // tells it once the call is no longer pinned.
  virtual Status OnStreamFrame(Frame frame, std::shared_ptr<StreamListener>* notify_later);
  virtual bool is_stream() const { return false; }
  // The server's initial metadata, delivered while the call is pinned in
  // the table, before its first message or response: into the context
  // (the caller reads it only after a Read() or the end, which follow).
  // Non-OK for a malformed block.
  Status OnInitialMetadata(const Frame& frame);
  // The connection's send queue drained (quick; the call is pinned): the
  // stream's listener to tell once unpinned, or nullptr.
  virtual std::shared_ptr<StreamListener> OnWritable() { return nullptr; }
  // Asked by the sweep when the call's slot comes due (call_table.h): when
  // the call is due now (0: at its deadline, as armed), and the status it
  // ends with then.
  virtual int64_t DueAt() const { return 0; }
  virtual Status ExpiredStatus(int64_t /*now*/) const { return absl::DeadlineExceededError("deadline exceeded"); }

  std::atomic<uint64_t> link_epoch{0};
  // The method binding this call's request announced (carried the path
  // of), or 0: its response confirms the binding.
  std::atomic<uint32_t> announced_binding{0};  // which connection the request went out on; 0 while it waits for one

 protected:
  // Turns a reply into the call's final status: the server's status and
  // message, its metadata into the context, the message into the response.
  Status Finish(Status status, Frame& reply);

  ClientContext* const context_;
  google::protobuf::MessageLite* const response_;
};

// The caller's thread waits on it: spins briefly, then sleeps on a futex.
class BlockingCall final : public ClientCall {
 public:
  using ClientCall::ClientCall;
  void Complete(Status status, Frame reply) override;
  // Returns the call's final status.
  Status Wait(std::chrono::nanoseconds spin);
  bool done() const { return done_.load(std::memory_order_acquire) != kPending; }

 private:
  enum : uint32_t { kPending = 0, kDone = 1, kReleased = 2 };
  std::atomic<uint32_t> done_{kPending};
  Status status_;
  Frame reply_;
};

// Runs a callback on the completing thread, then deletes itself.
class CallbackCall final : public ClientCall {
 public:
  CallbackCall(ClientContext* context, google::protobuf::MessageLite* response, std::function<void(Status)> done)
      : ClientCall(context, response), done_(std::move(done)) {}
  void Complete(Status status, Frame reply) override;

 private:
  std::function<void(Status)> done_;
};

}  // namespace internal
}  // namespace zcrpc
