#include "transport/tcp/tcp_transport.h"

#include <mutex>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "transport/tcp/tcp_connection.h"

namespace zcrpc::transport::tcp {
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

std::string EndpointUri(const tcp::endpoint& ep) {
  auto addr = ep.address();
  return addr.is_v6() ? absl::StrCat("tcp://[", addr.to_string(), "]:", ep.port())
                      : absl::StrCat("tcp://", addr.to_string(), ":", ep.port());
}

// Shared between the Listener handle and the accept loop, so the loop can
// outlive the handle by one completion.
struct AcceptState : std::enable_shared_from_this<AcceptState> {
  AcceptState(asio::io_context& io, ConnectionOptions options, AcceptCallback on_accept)
      : acceptor(io), options(std::move(options)), on_accept(std::move(on_accept)) {}

  void AcceptNext() {
    acceptor.async_accept([self = shared_from_this()](const boost::system::error_code& ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      {
        std::lock_guard lock(self->mu);
        if (self->stopped) return;
        if (!ec) self->on_accept(std::make_unique<TcpConnection>(std::move(socket), self->options));
      }
      // Errors such as EMFILE are transient: keep accepting.
      self->AcceptNext();
    });
  }

  tcp::acceptor acceptor;
  const ConnectionOptions options;
  std::mutex mu;
  bool stopped = false;  // guarded by mu
  AcceptCallback on_accept;
};

class TcpListener final : public Listener {
 public:
  TcpListener(std::shared_ptr<AcceptState> state, std::string uri) : state_(std::move(state)), uri_(std::move(uri)) {}
  ~TcpListener() override {
    {
      std::lock_guard lock(state_->mu);
      state_->stopped = true;
    }
    // The acceptor belongs to the poller threads: close it there.
    asio::post(state_->acceptor.get_executor(), [s = state_] {
      boost::system::error_code ignored;
      s->acceptor.close(ignored);
    });
  }
  std::string uri() const override { return uri_; }

 private:
  std::shared_ptr<AcceptState> state_;
  std::string uri_;
};

StatusOr<tcp::resolver::results_type> Resolve(asio::io_context& io, const Uri& uri) {
  std::string host;
  uint16_t port;
  ZCRPC_RETURN_IF_ERROR(SplitHostPort(uri.address, &host, &port));
  tcp::resolver resolver(io);
  boost::system::error_code ec;
  auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot resolve ", uri.ToString(), ": ", ec.message()));
  return results;
}

}  // namespace

TcpTransport::TcpTransport(Options options) : work_(asio::make_work_guard(io_)) {
  for (int i = 0; i < std::max(1, options.poller_threads); ++i) pollers_.emplace_back([this] { io_.run(); });
}

TcpTransport::~TcpTransport() {
  work_.reset();
  io_.stop();
  for (auto& t : pollers_) t.join();
}

StatusOr<std::unique_ptr<Listener>> TcpTransport::Listen(const Uri& uri, const ConnectionOptions& options,
                                                         AcceptCallback on_accept) {
  ZCRPC_ASSIGN_OR_RETURN(auto results, Resolve(io_, uri));
  auto state = std::make_shared<AcceptState>(io_, options, std::move(on_accept));
  boost::system::error_code ec;
  tcp::endpoint ep = results.begin()->endpoint();
  state->acceptor.open(ep.protocol(), ec);
  if (!ec) state->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) state->acceptor.bind(ep, ec);
  if (!ec) state->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", uri.ToString(), ": ", ec.message()));
  std::string bound = EndpointUri(state->acceptor.local_endpoint());
  state->AcceptNext();
  return std::make_unique<TcpListener>(std::move(state), std::move(bound));
}

StatusOr<std::unique_ptr<Connection>> TcpTransport::Connect(const Uri& uri, const ConnectionOptions& options) {
  ZCRPC_ASSIGN_OR_RETURN(auto results, Resolve(io_, uri));
  tcp::socket socket(io_);
  boost::system::error_code ec;
  asio::connect(socket, results, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot connect to ", uri.ToString(), ": ", ec.message()));
  return std::make_unique<TcpConnection>(std::move(socket), options);
}

}  // namespace zcrpc::transport::tcp
