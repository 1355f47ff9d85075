// GrpcTransport: "grpc://HOST:PORT", wire interop with stock gRPC through
// libgrpc++ (docs/grpc.md). Listening serves every zcrpc service of the
// server to gRPC clients (server_bridge.h); connecting calls a gRPC server
// from zcrpc stubs (client_bridge.h). All four RPC kinds, metadata
// (-bin keys included), status codes and messages, deadlines and cancels
// map one to one. gRPC messages carry no attachments: a frame with any is
// refused (capabilities().max_attachments is 0).
//
// Thread-safe.
#pragma once

#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::grpc_bridge {

class GrpcTransport final : public Transport {
 public:
  Status ValidateAddress(const Uri& uri) const override;
  StatusOr<std::unique_ptr<Listener>> Listen(const Uri& uri, const ConnectionOptions& options,
                                             AcceptCallback on_accept) override;
  void Connect(const Uri& uri, const ConnectionOptions& options, ConnectCallback done) override;
};

}  // namespace zcrpc::transport::grpc_bridge
