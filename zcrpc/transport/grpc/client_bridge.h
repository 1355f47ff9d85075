// Calling stock gRPC servers from zcrpc stubs (docs/grpc.md, "Calling").
// A connection is a gRPC channel (libgrpc++); each call the runtime sends
// on it becomes one gRPC call through the generic stub, as a bidirectional
// stream whatever its kind (gRPC's wire does not tell the kinds apart), and
// its messages, metadata, deadline, cancel and status map one to one.
//
// Threads: Connect waits for the channel on a thread of its own; gRPC's
// callback threads run the calls; each connection delivers its frames one
// at a time through a SerialDelivery.
#pragma once

#include "zcrpc/transport/grpc/grpc_address.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::grpc_bridge {

// Opens a gRPC channel to `address` and reports it once it is ready:
// UNAVAILABLE when the server cannot be reached, DEADLINE_EXCEEDED after
// options.connect_timeout. `done` runs on a thread of this transport.
void ConnectGrpc(const GrpcAddress& address, const ConnectionOptions& options, ConnectCallback done);

}  // namespace zcrpc::transport::grpc_bridge
