// The address part of a tcp URI: "tcp://HOST:PORT[?option=value&...]".
// Options apply to the side that names them (a server's listener, a
// client's channel); the peer never sees them.
//   busy_poll_us=0          spin this long on the non-blocking socket after
//                           the last frame before blocking (0: block at once)
//   zerocopy_send=auto|on|off
//                           MSG_ZEROCOPY for writes of zerocopy_min_bytes or
//                           more. auto: try it, and stop on this connection
//                           as soon as the kernel reports it copied anyway
//                           (always the case on loopback); on: keep using it
//   zerocopy_min_bytes=65536
//   zerocopy_receive=off|probe
//                           probe: on the first large part, try
//                           TCP_ZEROCOPY_RECEIVE once and record what the
//                           kernel mapped (TcpConnection::stats(), TcpStats);
//                           mapped bytes are copied into the part, counted,
//                           and the connection reads with recv from then
//                           on (docs/zero-copy.md says why it is off here)
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "zcrpc/base/status.h"

namespace zcrpc::transport::tcp {

enum class ZeroCopySend { kAuto, kOn, kOff };

struct TcpOptions {
  std::chrono::nanoseconds busy_poll{0};
  ZeroCopySend zerocopy_send = ZeroCopySend::kAuto;
  // The kernel's documentation puts the break-even of page pinning plus a
  // completion against one copy at about 10 KB; docs/zero-copy.md has what
  // was measured here.
  uint64_t zerocopy_min_bytes = 64 << 10;
  bool probe_zerocopy_receive = false;
};

// "tcp://host:port", with an IPv6 host in brackets.
std::string FormatTcpUri(std::string_view host, uint16_t port);

// The URI of a socket's own (`peer` false) or its peer's address, for logs
// and Listener::uri(); "tcp://?" if the socket has none.
std::string SocketUri(int fd, bool peer);

struct TcpAddress {
  std::string host;
  uint16_t port = 0;
  TcpOptions options;

  // INVALID_ARGUMENT for a malformed host:port, an unknown option or a bad value.
  static StatusOr<TcpAddress> Parse(std::string_view address);
};

}  // namespace zcrpc::transport::tcp
