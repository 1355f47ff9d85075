#include "zcrpc/transport/shm/shm_transport.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "zcrpc/transport/internal/errno_status.h"
#include "zcrpc/transport/shm/handshake.h"
#include "zcrpc/transport/shm/shm_address.h"
#include "zcrpc/transport/shm/shm_connection.h"

namespace zcrpc::transport::shm {
namespace {

constexpr auto kHandshakeTimeout = std::chrono::milliseconds(5000);


// The socket address for a name: a path, or the abstract name "\0zcrpc/NAME".
socklen_t SocketAddress(const std::string& name, sockaddr_un* addr) {
  *addr = {};
  addr->sun_family = AF_UNIX;
  if (name.front() == '/') {
    std::snprintf(addr->sun_path, sizeof addr->sun_path, "%s", name.c_str());
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
  }
  const std::string abstract = "zcrpc/" + name;
  std::memcpy(addr->sun_path + 1, abstract.data(), abstract.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + abstract.size());
}

class ShmListener final : public Listener {
 public:
  ShmListener(internal::UniqueFd socket, ShmAddress address, ConnectionOptions options, AcceptCallback on_accept)
      : socket_(std::move(socket)),
        stop_(eventfd(0, EFD_CLOEXEC)),
        address_(std::move(address)),
        options_(options),
        on_accept_(std::move(on_accept)) {
    thread_ = std::thread([this] { AcceptLoop(); });
  }

  ~ShmListener() override {
    const uint64_t one = 1;
    (void)!write(stop_.get(), &one, sizeof one);
    thread_.join();
    if (address_.is_path()) unlink(address_.name.c_str());
  }

  std::string uri() const override { return address_.uri(); }

 private:
  void AcceptLoop() {
    for (;;) {
      pollfd fds[2] = {{socket_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents != 0) return;
      internal::UniqueFd client(accept4(socket_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!client.valid()) continue;
      StatusOr<ShmEndpoint> endpoint = AcceptHandshake(std::move(client), address_);
      if (!endpoint.ok()) {
        std::fprintf(stderr, "zcrpc shm: refused a connection: %s\n", endpoint.status().ToString().c_str());
        continue;
      }
      StatusOr<std::unique_ptr<Connection>> connection =
          MakeShmConnection(*std::move(endpoint), address_.options, options_);
      if (!connection.ok()) {
        std::fprintf(stderr, "zcrpc shm: %s\n", connection.status().ToString().c_str());
        continue;
      }
      on_accept_(*std::move(connection));
    }
  }

  internal::UniqueFd socket_;
  internal::UniqueFd stop_;
  const ShmAddress address_;
  const ConnectionOptions options_;
  const AcceptCallback on_accept_;
  std::thread thread_;
};

}  // namespace

StatusOr<std::unique_ptr<Listener>> ShmTransport::Listen(const Uri& uri, const ConnectionOptions& options,
                                                         AcceptCallback on_accept) {
  ZCRPC_ASSIGN_OR_RETURN(ShmAddress address, ShmAddress::Parse(uri.address));
  if (address.name.back() == '*') {
    static std::atomic<uint64_t> counter{0};
    address.name.pop_back();
    address.name += absl::StrCat(getpid(), "-", counter.fetch_add(1));
  }
  internal::UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket.valid()) return internal::ErrnoError("socket(AF_UNIX)");
  sockaddr_un addr;
  const socklen_t len = SocketAddress(address.name, &addr);
  if (address.is_path() && len > sizeof addr) {
    return absl::InvalidArgumentError(absl::StrCat("shm socket path '", address.name, "' is too long"));
  }
  if (bind(socket.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on shm://", address.name, ": ", std::strerror(errno)));
  }
  if (address.is_path() && chmod(address.name.c_str(), address.mode) != 0) {
    Status error = internal::ErrnoError(absl::StrCat("chmod ", address.name));
    unlink(address.name.c_str());
    return error;
  }
  if (listen(socket.get(), SOMAXCONN) != 0) return internal::ErrnoError("listen on the shm socket");
  return std::unique_ptr<Listener>(
      std::make_unique<ShmListener>(std::move(socket), std::move(address), options, std::move(on_accept)));
}

StatusOr<std::unique_ptr<Connection>> ShmTransport::Connect(const Uri& uri, const ConnectionOptions& options) {
  ZCRPC_ASSIGN_OR_RETURN(ShmAddress address, ShmAddress::Parse(uri.address));
  internal::UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket.valid()) return internal::ErrnoError("socket(AF_UNIX)");
  sockaddr_un addr;
  const socklen_t len = SocketAddress(address.name, &addr);
  if (len > sizeof addr) return absl::InvalidArgumentError(absl::StrCat("shm name '", address.name, "' is too long"));
  int rc;
  do {
    rc = connect(socket.get(), reinterpret_cast<sockaddr*>(&addr), len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot connect to shm://", address.name, ": ", std::strerror(errno)));
  }
  ZCRPC_ASSIGN_OR_RETURN(ShmEndpoint endpoint, ConnectHandshake(std::move(socket), address, kHandshakeTimeout));
  return MakeShmConnection(std::move(endpoint), address.options, options);
}

}  // namespace zcrpc::transport::shm
