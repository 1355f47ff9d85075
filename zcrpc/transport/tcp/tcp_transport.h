// TcpTransport: scheme tcp://host:port[?options] (tcp_address.h).
//
// Threads: the transport's only threads are its epoll loop's
// (Options::poller_threads, default one). Listening sockets, connects in
// progress, the preface exchange and every connection's receive path and
// deferred writes all run there; callbacks (AcceptCallback,
// ConnectCallback, handler calls) come from those threads, or from a caller
// inside PollUntil. Connect() starts a non-blocking connect(), after a
// host name's lookup on a thread of its own; it never waits for the network.
// The per-frame path is in tcp_connection.h.
//
// Thread-safe. The transport must outlive its listeners; destroying it
// closes every connection (UNAVAILABLE) and fails connects in progress.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "zcrpc/transport/tcp/epoll_loop.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::tcp {

class TcpTransport final : public Transport {
 public:
  struct Options {
    // Threads of the epoll loop. One is the fast path for a client or a
    // server with few connections; handlers that block want a server worker
    // pool (ServerOptions) rather than more.
    int poller_threads = 1;
    // Told why an accepted socket was closed before it became a connection
    // (no preface within connect_timeout, not a zcrpc peer, another wire
    // version), with the peer's address in the message. For logs; on a
    // loop thread; must not block.
    std::function<void(const Status&)> on_handshake_error;
    // The loop's lazy tick (EpollLoop): a connection whose blocking callers
    // read their own replies leaves its loop unarmed between calls, and is
    // armed again once no caller took it for a whole tick, so a frame
    // nobody polls for (a server's go-away) waits at most about two ticks.
    // Replies to callback calls and a peer's close never wait for it. Tests
    // lengthen it to show that.
    std::chrono::nanoseconds lazy_tick = EpollLoop::kDefaultLazyTick;
  };

  TcpTransport() : TcpTransport(Options{}) {}
  explicit TcpTransport(Options options);
  ~TcpTransport() override;

  Status ValidateAddress(const Uri& uri) const override;
  StatusOr<std::unique_ptr<Listener>> Listen(const Uri& uri, const ConnectionOptions& options,
                                             AcceptCallback on_accept) override;
  // A numeric host starts connecting at once. A host name is resolved on a
  // short-lived thread of its own (/etc/hosts for "localhost", DNS
  // otherwise), never on the caller's or a loop thread; the lookup counts
  // against connect_timeout (DEADLINE_EXCEEDED past it).
  void Connect(const Uri& uri, const ConnectionOptions& options, ConnectCallback done) override;

 private:
  const Options options_;
  std::shared_ptr<EpollLoop> loop_;
};

}  // namespace zcrpc::transport::tcp
