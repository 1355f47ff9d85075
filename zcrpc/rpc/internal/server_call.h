// ServerCall: the server's record of one call, from its request frame to
// its reply, across any number of frames. It lives in the server's
// CallTable (where the deadline sweep finds it) and is reference counted:
// the table holds one reference and the code running the handler another,
// so whichever lets go last frees it. Removal from the table happens
// exactly once (reply, sweep, cancel or shutdown), and only the remover
// may send the call's status.
//
// Thread-safe: the reference count and the context's cancel flag are
// atomic; the rest is set before the call is shared.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "zcrpc/base/frame.h"
#include "zcrpc/rpc/call_table.h"
#include "zcrpc/rpc/internal/reactor_driver.h"
#include "zcrpc/rpc/internal/stream_state.h"
#include "zcrpc/rpc/server_context.h"
#include "zcrpc/rpc/service.h"

namespace zcrpc {
class ServerConnection;

namespace internal {

class ServerCall {
 public:
  ServerCall(std::shared_ptr<ServerConnection> connection, transport::Connection* transport_connection, const std::string& peer,
             const Service::Method& method, CallId client_call_id, int64_t deadline_nanos)
      : connection(std::move(connection)),
        method(method),
        client_call_id(client_call_id),
        context(transport_connection, peer, method.descriptor.path, deadline_nanos) {}
  ServerCall(const ServerCall&) = delete;
  ServerCall& operator=(const ServerCall&) = delete;

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  // The context turns IsCancelled(), a stream's reads and writes end, and
  // a reactor hears of it.
  void Cancel(const Status& why = absl::CancelledError("the call was cancelled")) {
    context.MarkCancelled();
    if (stream) stream->End(why);
    std::shared_ptr<ReactorDriver> driver;
    {
      std::lock_guard lock(reactor_mu_);
      driver = reactor_;
    }
    if (driver) driver->OnStreamChanged();
  }
  // Whether the client's deadline has passed at `now` (not, say, a
  // stream's idle timeout).
  bool DeadlinePassed(int64_t now) const { return context.deadline_nanos_ != 0 && context.deadline_nanos_ <= now; }
  // The reactor serving this call (callback methods), told of a cancel.
  void SetReactor(std::shared_ptr<ReactorDriver> driver) {
    std::lock_guard lock(reactor_mu_);
    reactor_ = std::move(driver);
  }

  const std::shared_ptr<ServerConnection> connection;  // kept alive while the call runs
  const Service::Method& method;
  const CallId client_call_id;  // the id the client's frames carry
  CallId server_call_id = 0;    // this call's slot in the server's table
  ServerContext context;
  Frame request;
  // Streaming methods only: set before the call is shared.
  std::unique_ptr<StreamState> stream;

 private:
  ~ServerCall() = default;
  std::atomic<int> refs_{1};
  std::mutex reactor_mu_;  // a cancel (any thread) against the reactor's binding
  std::shared_ptr<ReactorDriver> reactor_ ABSL_GUARDED_BY(reactor_mu_);
};

}  // namespace internal
}  // namespace zcrpc
