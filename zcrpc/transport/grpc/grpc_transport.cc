#include "zcrpc/transport/grpc/grpc_transport.h"

#include <thread>

#include "zcrpc/base/detached_thread.h"
#include "zcrpc/transport/grpc/client_bridge.h"
#include "zcrpc/transport/grpc/grpc_address.h"
#include "zcrpc/transport/grpc/server_bridge.h"
#include "zcrpc/transport/internal/delivery_scope.h"

namespace zcrpc::transport::grpc_bridge {

Status GrpcTransport::ValidateAddress(const Uri& uri) const { return GrpcAddress::Parse(uri.address).status(); }

StatusOr<std::unique_ptr<Listener>> GrpcTransport::Listen(const Uri& uri, const ConnectionOptions& options,
                                                          AcceptCallback on_accept) {
  ZCRPC_ASSIGN_OR_RETURN(GrpcAddress address, GrpcAddress::Parse(uri.address));
  ZCRPC_ASSIGN_OR_RETURN(std::unique_ptr<GrpcListener> listener,
                         GrpcListener::Start(address, options, std::move(on_accept)));
  return std::unique_ptr<Listener>(std::move(listener));
}

void GrpcTransport::Connect(const Uri& uri, const ConnectionOptions& options, ConnectCallback done) {
  StatusOr<GrpcAddress> address = GrpcAddress::Parse(uri.address);
  if (!address.ok()) {
    // Never inside Connect (transport.h), unless no thread can be had.
    auto fail = std::make_shared<ConnectCallback>(std::move(done));
    Status started = StartDetachedThread("to report a bad gRPC address", [status = address.status(), fail] {
      internal::DeliveryScope delivering;
      (*fail)(status);
    });
    if (!started.ok()) {
      internal::DeliveryScope delivering;
      (*fail)(address.status());
    }
    return;
  }
  ConnectGrpc(*address, options, std::move(done));
}

}  // namespace zcrpc::transport::grpc_bridge
