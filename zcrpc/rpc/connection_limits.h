// What keeps a connection honest over time, on every transport: keepalive
// pings that find a dead or partitioned peer, and (server only) idle and
// age limits that make clients move to a fresh connection. Part of
// ChannelOptions and ServerOptions; docs/reliability.md lists every limit
// with its default and the test that shows it.
//
// The timers run on the DeadlineSweeper's thread, checked every eighth of
// the shortest of them (at least 1 ms, at most 1 s): no timer per
// connection, and nothing on the data path but one relaxed counter bump
// per frame received.
#pragma once

#include <chrono>

namespace zcrpc {

// Keepalive (docs/wire.md, "Keepalive"): after `time` without receiving any
// frame, a side sends a ping; if nothing at all arrives within `timeout`
// after it, the connection is dead: it closes, and every call on it ends
// with UNAVAILABLE naming keepalive. Pings go out with or without calls in
// flight. The defaults are gRPC's (2 hours, 20 seconds); 0 for `time`: no
// pings (a peer's pings are still answered). Only where both prefaces
// announced the keepalive feature (every zcrpc transport but grpc://,
// which has gRPC's own keepalive).
struct KeepaliveOptions {
  std::chrono::nanoseconds time = std::chrono::hours(2);
  std::chrono::nanoseconds timeout = std::chrono::seconds(20);
};

// A server's limits on one connection's life. A connection past one of
// them gets a go-away (docs/wire.md, "Frame types"): its client sends new
// calls on a new connection and closes this one once its calls end; the
// calls already sent, and requests that crossed the go-away, are served.
struct ConnectionLifetime {
  // No call running and none started for this long: go-away, and the
  // connection closes once its client lets go (at most 1 s later). 0:
  // never. Default 30 minutes (gRPC's max_connection_idle is off by
  // default; zcrpc bounds what idle clients hold).
  std::chrono::nanoseconds max_idle = std::chrono::minutes(30);
  // The connection's age, ±10 % so a fleet's clients do not reconnect in
  // step: go-away. 0: no limit (gRPC's default).
  std::chrono::nanoseconds max_age{0};
  // After the age's go-away, calls still running get this long; then they
  // end UNAVAILABLE at their clients, and 1 s later the connection closes
  // whatever still runs on it. 0: as long as they take (gRPC's default).
  std::chrono::nanoseconds max_age_grace{0};
};

}  // namespace zcrpc
