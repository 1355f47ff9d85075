// The address part of a grpc URI: "grpc://HOST:PORT[?unary_api=sync]",
// HOST a name, an IPv4 address or "[IPv6]". A listener's port may be 0
// (the bound one is in its uri(), without options). Any other option is
// INVALID_ARGUMENT.
//
// unary_api (listeners only): the gRPC server API that serves the server's
// unary methods. "callback" (the default): gRPC's callback API, the better
// for many calls in flight. "sync": gRPC's synchronous API, where a handler
// that answers inline (ServerOptions::worker_threads = 0) runs on the gRPC
// thread that read the request, the lower latency for one call at a time;
// a call waits on that thread for the answer, and a cancel is noticed
// within 20 ms.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "zcrpc/base/status.h"

namespace zcrpc::transport::grpc_bridge {

struct GrpcAddress {
  enum class UnaryApi { kCallback, kSync };
  std::string host;  // without the brackets of an IPv6 address
  uint16_t port = 0;
  UnaryApi unary_api = UnaryApi::kCallback;

  // "host:port", as gRPC's channel and listening-port APIs take it.
  std::string target() const;
  static StatusOr<GrpcAddress> Parse(std::string_view address);
};

}  // namespace zcrpc::transport::grpc_bridge
