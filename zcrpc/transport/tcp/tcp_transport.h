// TcpTransport: scheme tcp://host:port[?options] (tcp_address.h).
// Connection setup (listen, accept, connect) runs on one Boost.Asio thread;
// the epoll loop threads drive every connection's receive path. The
// per-frame path is in tcp_connection.h.
//
// Thread-safe. The transport must outlive its listeners and connections
// (the default registry's transport lives until exit).
#pragma once

#include <memory>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "zcrpc/transport/tcp/epoll_loop.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::tcp {

class TcpTransport final : public Transport {
 public:
  struct Options {
    // Threads of the epoll loop that reads the sockets. One is the fast
    // path for a client or a server with few connections; handlers that
    // block want a server worker pool (ServerOptions) rather than more.
    int poller_threads = 1;
  };

  TcpTransport() : TcpTransport(Options{}) {}
  explicit TcpTransport(Options options);
  ~TcpTransport() override;

  StatusOr<std::unique_ptr<Listener>> Listen(const Uri& uri, const ConnectionOptions& options,
                                             AcceptCallback on_accept) override;
  StatusOr<std::unique_ptr<Connection>> Connect(const Uri& uri, const ConnectionOptions& options) override;

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread setup_thread_;
  EpollLoop loop_;
};

}  // namespace zcrpc::transport::tcp
