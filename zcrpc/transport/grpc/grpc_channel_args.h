// ConnectionOptions' keepalive and connection lifetimes as gRPC channel
// arguments, for both bridges: `set(name, value)` is
// ChannelArguments::SetInt or ServerBuilder::AddChannelArgument.
#pragma once

#include <grpc/impl/codegen/grpc_types.h>

#include <algorithm>
#include <chrono>
#include <climits>

#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::grpc_bridge {

template <typename Set>
void ApplyConnectionLifetime(const ConnectionOptions& options, bool server, Set set) {
  auto ms = [](std::chrono::nanoseconds d) {
    return static_cast<int>(std::min<int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count(), INT_MAX));
  };
  if (options.keepalive_time.count() > 0) {
    set(GRPC_ARG_KEEPALIVE_TIME_MS, ms(options.keepalive_time));
    // zcrpc pings whether or not calls are in flight (connection_limits.h).
    set(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    set(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  if (options.keepalive_timeout.count() > 0) set(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(options.keepalive_timeout));
  if (!server) return;
  if (options.max_connection_idle.count() > 0) set(GRPC_ARG_MAX_CONNECTION_IDLE_MS, ms(options.max_connection_idle));
  if (options.max_connection_age.count() > 0) set(GRPC_ARG_MAX_CONNECTION_AGE_MS, ms(options.max_connection_age));
  if (options.max_connection_age_grace.count() > 0) {
    set(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, ms(options.max_connection_age_grace));
  }
}

}  // namespace zcrpc::transport::grpc_bridge
