// Bytes across the boundary between zcrpc and gRPC, with no copy the
// boundary can avoid (docs/grpc.md, "Buffers at the boundary"):
//  - outgoing, a zcrpc Buffer is lent to gRPC as a slice, and goes back to
//    its owner when gRPC releases the slice;
//  - incoming, a message gRPC holds in one slice becomes a Buffer that
//    holds a reference to that slice; one in several slices is gathered
//    into one pool buffer, through the copy counter (CountedCopy).
//
// Thread-safe (no shared state).
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include "zcrpc/base/buffer.h"

namespace zcrpc::transport::grpc_bridge {

// Makes `*message` `buffer` as a one-slice gRPC message, lent: gRPC
// releases it when done. Into the caller's ByteBuffer, because gRPC 1.51's
// ByteBuffer has no move assignment: assigning a returned one would copy it.
void LendToGrpc(Buffer buffer, ::grpc::ByteBuffer* message);

// The bytes of `message` as one Buffer (empty for an empty message).
Buffer TakeFromGrpc(const ::grpc::ByteBuffer& message);

}  // namespace zcrpc::transport::grpc_bridge
