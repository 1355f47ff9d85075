// The address part of a grpc URI: "grpc://HOST:PORT", HOST a name, an IPv4
// address or "[IPv6]". A listener's port may be 0 (the bound one is in its
// uri()). No options yet: any "?key=value" is INVALID_ARGUMENT.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "zcrpc/base/status.h"

namespace zcrpc::transport::grpc_bridge {

struct GrpcAddress {
  std::string host;  // without the brackets of an IPv6 address
  uint16_t port = 0;

  // "host:port", as gRPC's channel and listening-port APIs take it.
  std::string target() const;
  static StatusOr<GrpcAddress> Parse(std::string_view address);
};

}  // namespace zcrpc::transport::grpc_bridge
