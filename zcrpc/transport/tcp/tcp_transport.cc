#include "zcrpc/transport/tcp/tcp_transport.h"

#include <mutex>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "zcrpc/transport/tcp/tcp_address.h"
#include "zcrpc/transport/tcp/tcp_connection.h"

namespace zcrpc::transport::tcp {
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// Shared between the Listener handle and the accept loop, so the loop can
// outlive the handle by one completion.
struct AcceptState : std::enable_shared_from_this<AcceptState> {
  AcceptState(asio::io_context& io, EpollLoop* loop, TcpOptions tcp_options, ConnectionOptions options,
              AcceptCallback on_accept)
      : acceptor(io),
        loop(loop),
        tcp_options(tcp_options),
        options(std::move(options)),
        on_accept(std::move(on_accept)) {}

  void AcceptNext() {
    acceptor.async_accept([self = shared_from_this()](const boost::system::error_code& ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      {
        std::lock_guard lock(self->mu);
        if (self->stopped) return;
        if (!ec) {
          auto connection = TcpConnection::Make(socket.release(), self->loop, self->tcp_options, self->options);
          if (connection.ok()) self->on_accept(*std::move(connection));
        }
      }
      // Errors such as EMFILE are transient: keep accepting.
      self->AcceptNext();
    });
  }

  tcp::acceptor acceptor;
  EpollLoop* const loop;
  const TcpOptions tcp_options;
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

StatusOr<tcp::resolver::results_type> Resolve(asio::io_context& io, const Uri& uri, const TcpAddress& address) {
  tcp::resolver resolver(io);
  boost::system::error_code ec;
  auto results = resolver.resolve(address.host, std::to_string(address.port), tcp::resolver::numeric_service, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot resolve ", uri.ToString(), ": ", ec.message()));
  return results;
}

}  // namespace

TcpTransport::TcpTransport(Options options)
    : work_(asio::make_work_guard(io_)), setup_thread_([this] { io_.run(); }), loop_(options.poller_threads) {}

TcpTransport::~TcpTransport() {
  work_.reset();
  io_.stop();
  setup_thread_.join();
}

StatusOr<std::unique_ptr<Listener>> TcpTransport::Listen(const Uri& uri, const ConnectionOptions& options,
                                                         AcceptCallback on_accept) {
  ZCRPC_ASSIGN_OR_RETURN(TcpAddress address, TcpAddress::Parse(uri.address));
  ZCRPC_ASSIGN_OR_RETURN(auto results, Resolve(io_, uri, address));
  auto state = std::make_shared<AcceptState>(io_, &loop_, address.options, options, std::move(on_accept));
  boost::system::error_code ec;
  tcp::endpoint ep = results.begin()->endpoint();
  state->acceptor.open(ep.protocol(), ec);
  if (!ec) state->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) state->acceptor.bind(ep, ec);
  if (!ec) state->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", uri.ToString(), ": ", ec.message()));
  const tcp::endpoint local = state->acceptor.local_endpoint();
  std::string bound = FormatTcpUri(local.address().to_string(), local.port());
  state->AcceptNext();
  return std::make_unique<TcpListener>(std::move(state), std::move(bound));
}

StatusOr<std::unique_ptr<Connection>> TcpTransport::Connect(const Uri& uri, const ConnectionOptions& options) {
  ZCRPC_ASSIGN_OR_RETURN(TcpAddress address, TcpAddress::Parse(uri.address));
  ZCRPC_ASSIGN_OR_RETURN(auto results, Resolve(io_, uri, address));
  tcp::socket socket(io_);
  boost::system::error_code ec;
  asio::connect(socket, results, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot connect to ", uri.ToString(), ": ", ec.message()));
  ZCRPC_ASSIGN_OR_RETURN(auto connection, TcpConnection::Make(socket.release(), &loop_, address.options, options));
  return std::unique_ptr<Connection>(std::move(connection));
}

}  // namespace zcrpc::transport::tcp
