// Status codes cross the bridge unchanged: zcrpc's codes are gRPC's
// (absl::StatusCode numbers them the same), and a message is bytes either
// way (gRPC percent-encodes it on the wire, so any text survives).
#pragma once

#include <span>
#include <string>

#include <grpcpp/support/status.h>

#include "zcrpc/base/status.h"

namespace zcrpc::transport::grpc_bridge {

inline ::grpc::Status ToGrpcStatus(StatusCode code, std::span<const uint8_t> message) {
  return ::grpc::Status(static_cast<::grpc::StatusCode>(code),
                        std::string(reinterpret_cast<const char*>(message.data()), message.size()));
}

inline StatusCode FromGrpcCode(::grpc::StatusCode code) { return static_cast<StatusCode>(code); }

}  // namespace zcrpc::transport::grpc_bridge
