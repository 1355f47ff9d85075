// Serving zcrpc services to stock gRPC clients (docs/grpc.md, "Serving").
// A listener is a gRPC server (libgrpc++) with the server's unary methods
// registered by path (gRPC's raw callback unary API) and one generic
// callback service for the rest. Each gRPC call it receives becomes a
// zcrpc connection of its own, carrying that one call, so the runtime
// serves it exactly as it serves tcp or shm: its method is looked up by
// full path, its deadline is swept, its stream has credit. The method's
// kind, which a gRPC call does not carry, comes from the server's registry
// (ConnectionOptions::served_methods).
//
// Threads: gRPC's callback threads run the calls; each bridged connection
// delivers its frames one at a time through a SerialDelivery. The listener
// may be destroyed on any thread but a gRPC callback thread.
#pragma once

#include <memory>
#include <string>

#include "zcrpc/base/status.h"
#include "zcrpc/transport/grpc/grpc_address.h"
#include "zcrpc/transport/transport.h"

namespace grpc {
class Server;
class Service;
}

namespace zcrpc::transport::grpc_bridge {

class BridgeService;

class GrpcListener final : public Listener {
 public:
  // UNAVAILABLE if the address cannot be bound.
  static StatusOr<std::unique_ptr<GrpcListener>> Start(const GrpcAddress& address, const ConnectionOptions& options,
                                                       AcceptCallback on_accept);
  // Stops taking calls (a new one gets UNAVAILABLE) and returns once no
  // accept callback runs. Calls already accepted go on: the gRPC server
  // shuts down on a thread of its own once they have ended (or after 30 s,
  // when gRPC cancels what is left).
  ~GrpcListener() override;
  std::string uri() const override { return uri_; }

 private:
  GrpcListener(std::shared_ptr<BridgeService> service, std::unique_ptr<::grpc::Service> unary_methods,
               std::unique_ptr<::grpc::Server> server, std::string uri);

  std::shared_ptr<BridgeService> service_;
  std::unique_ptr<::grpc::Service> unary_methods_;
  std::unique_ptr<::grpc::Server> server_;
  std::string uri_;
};

}  // namespace zcrpc::transport::grpc_bridge
