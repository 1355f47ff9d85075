// ServerCallbackCall: what a callback method's adapter (Service's
// AddCallback*Method) gets from the server for one call: a small handle,
// copyable, valid while the server runs the adapter and, once copied into
// AwaitRequest's continuation, until that runs.
//
// The adapter runs on the thread that delivered the request (it must not
// block); it parses what it needs, calls the user's method and binds the
// reactor it returns, or ends the call at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include "zcrpc/base/buffer.h"
#include "zcrpc/base/status.h"

namespace google::protobuf {
class MessageLite;
}

namespace zcrpc {
class ServerConnection;
class ServerContext;

namespace internal {
class ReactorCore;
class ServerCall;

// Why a server streaming call got no request: cancelled, or the client
// closed its writes without one.
Status MissingRequest(const ServerContext* ctx, std::string_view path);

class ServerCallbackCall {
 public:
  ServerContext* context() const;
  // A unary call's request message.
  std::span<const uint8_t> request() const;

  // Hands the call to `reactor`. `respond` (unary and client streaming):
  // serializes the response when the reactor finishes OK. `keep_alive` is
  // released after the reactor's OnDone.
  void Bind(ReactorCore* reactor, std::function<Status(Buffer*)> respond, std::shared_ptr<void> keep_alive) const;
  // No reactor: the call ends now with `status`.
  void EndNow(const Status& status) const;
  // Server streaming: waits, with no thread, for the client's one request,
  // parses it into `*request` and runs `then` on the thread that brought
  // it. If none comes (a cancel, the client closed its writes), the call
  // ends with why and `then` never runs. `request` must outlive that.
  void AwaitRequest(google::protobuf::MessageLite* request, std::function<void()> then) const;

 private:
  friend class zcrpc::ServerConnection;
  ServerCallbackCall(ServerConnection* connection, ServerCall* call) : connection_(connection), call_(call) {}

  ServerConnection* connection_;
  ServerCall* call_;
};

}  // namespace internal
}  // namespace zcrpc
