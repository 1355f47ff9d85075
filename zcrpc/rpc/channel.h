// Channel: the client's end of a connection to one server, created from a
// URI ("tcp://127.0.0.1:50051"). It connects on the first call, reconnects
// on the next call after a failure, keeps a CallTable of the calls in flight,
// and fails them at their deadline by sweep. Generated stubs call
// CallUnary / CallUnaryAsync; users rarely need to.
//
// Thread-safe: any number of threads may call through one channel.
#pragma once

#include <mutex>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/synchronization/mutex.h"
#include "zcrpc/rpc/call_table.h"
#include "zcrpc/rpc/client_context.h"
#include "zcrpc/rpc/deadline_sweeper.h"
#include "zcrpc/rpc/method.h"
#include "zcrpc/base/status.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/transport/registry.h"
#include "zcrpc/transport/transport.h"

namespace google::protobuf {
class MessageLite;
}

namespace zcrpc {

namespace internal {
class ClientCall;
}

struct ChannelOptions {
  // Calls in flight at once; one more fails with RESOURCE_EXHAUSTED.
  uint32_t max_calls_in_flight = 4096;
  // What a response may carry (wire.h).
  FrameLimits limits;
  // The deadline sweep's period: a call ends at most about one tick after
  // its deadline.
  std::chrono::nanoseconds sweep_tick = DeadlineSweeper::kDefaultTick;
  // How long a blocking call spins on its completion before it sleeps.
  std::chrono::nanoseconds spin_before_sleep = std::chrono::microseconds(5);
  // Where the scheme is looked up; nullptr means Registry::Default().
  transport::Registry* registry = nullptr;
};

class Channel final : public std::enable_shared_from_this<Channel>, private DeadlineSweeper::Client {
 public:
  // INVALID_ARGUMENT for a malformed URI or an unknown scheme. Does not
  // connect: an unreachable server shows as UNAVAILABLE on the first call.
  static StatusOr<std::shared_ptr<Channel>> Create(std::string_view uri, ChannelOptions options = {});
  ~Channel();

  const std::string& target() const { return target_; }

  // A buffer in the memory of the channel's current connection (connecting
  // if needed), for ClientContext::AddAttachment: it goes out with no
  // framework copy. UNAVAILABLE if the server cannot be reached.
  StatusOr<Buffer> AllocateBuffer(size_t size);

  // Blocking unary call: serializes `request` straight into a transport
  // buffer, waits, parses the reply into `*response`.
  Status CallUnary(const MethodDescriptor& method, ClientContext* context,
                   const google::protobuf::MessageLite& request, google::protobuf::MessageLite* response);

  // Callback unary call: returns once the request is sent; `done` runs once,
  // on a transport thread (or on the calling thread if sending failed).
  // `context` and `response` must stay valid until then.
  void CallUnaryAsync(const MethodDescriptor& method, ClientContext* context,
                      const google::protobuf::MessageLite& request, google::protobuf::MessageLite* response,
                      std::function<void(Status)> done);

  // Ends call `id` with CANCELLED if it is still in flight, and tells the
  // server. For ClientContext::TryCancel.
  void CancelCall(CallId id);

 private:
  class Link;
  friend class Link;

  Channel(std::string target, transport::Uri uri, transport::Transport* transport, ChannelOptions options);

  // Starts a call: on OK it is in the table and its request is on the wire.
  // `used_link`, if given, receives the link the request went out on.
  Status StartCall(const MethodDescriptor& method, ClientContext* context,
                   const google::protobuf::MessageLite& request, internal::ClientCall* call,
                   std::shared_ptr<Link>* used_link = nullptr);
  StatusOr<std::shared_ptr<Link>> GetLink();
  void OnResponse(Frame frame);
  void OnLinkClosed(Link* link, const Status& reason);
  void SendCancel(CallId id, uint64_t link_epoch);

  void SweepExpired(int64_t now_nanos) override;
  bool HasCallsInFlight() const override { return table_.size() > 0; }

  const std::string target_;
  const transport::Uri uri_;
  transport::Transport* const transport_;
  const ChannelOptions options_;
  CallTable<internal::ClientCall> table_;

  std::mutex mu_;
  std::shared_ptr<Link> link_ ABSL_GUARDED_BY(mu_);
  uint64_t link_epoch_ ABSL_GUARDED_BY(mu_) = 0;

  // Last member: its thread sweeps this channel until it is destroyed.
  DeadlineSweeper sweeper_;
};

}  // namespace zcrpc
