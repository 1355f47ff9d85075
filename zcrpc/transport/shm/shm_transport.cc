#include "zcrpc/transport/shm/shm_transport.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/transport/internal/delivery_scope.h"
#include "zcrpc/transport/internal/errno_status.h"
#include "zcrpc/transport/shm/handshake.h"
#include "zcrpc/transport/shm/shm_address.h"
#include "zcrpc/transport/shm/shm_connection.h"
#include "zcrpc/transport/shm/shm_poller.h"

namespace zcrpc::transport::shm {
namespace {

int64_t Now() { return Clock::Real().NowNanos(); }

// A Connect that cannot get into the listener's backlog (EAGAIN) tries
// again this often until its connect_timeout.
constexpr int64_t kConnectRetryNanos = 1'000'000;

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

void Log(const std::string& what) { std::fprintf(stderr, "zcrpc shm: %s\n", what.c_str()); }

// One listening socket, on one poller. Accepted sockets become
// ServerHandshakes on the same poller, so AcceptCallback only ever runs
// there and the listener can stop it by a task on that thread.
class ListenerCore final : public Pollable, public std::enable_shared_from_this<ListenerCore> {
 public:
  ListenerCore(internal::UniqueFd socket, ShmAddress address, const ConnectionOptions& options,
               AcceptCallback on_accept, std::shared_ptr<Poller> poller, std::function<std::shared_ptr<Poller>()> pick)
      : socket_(std::move(socket)),
        address_(std::move(address)),
        options_(options),
        on_accept_(std::move(on_accept)),
        poller_(std::move(poller)),
        pick_(std::move(pick)) {}

  const ShmAddress& address() const { return address_; }
  const ConnectionOptions& options() const { return options_; }
  bool stopped() const { return stopped_; }
  std::shared_ptr<Poller> PickPoller() const { return pick_(); }
  // Poller thread only, and only while !stopped().
  // As a delivering thread: the callback must not wait (runtime-v2's
  // transport.h says so for accept and connect callbacks).
  void Accepted(std::unique_ptr<Connection> connection) {
    internal::DeliveryScope delivering;
    on_accept_(std::move(connection));
  }

  void Attach(Poller& poller) override { poller.Watch(socket_.get(), EPOLLIN, this, 0); }
  void OnEvent(int, uint32_t) override;
  bool Tend(int64_t) override { return !stopped_; }
  void Shutdown() override { Stop(); }
  // Poller thread: no accept and no AcceptCallback from now on.
  void Stop() {
    if (stopped_) return;
    stopped_ = true;
    poller_->Unwatch(socket_.get());
  }
  Poller& poller() { return *poller_; }

 private:
  internal::UniqueFd socket_;
  const ShmAddress address_;
  const ConnectionOptions options_;
  const AcceptCallback on_accept_;
  const std::shared_ptr<Poller> poller_;
  const std::function<std::shared_ptr<Poller>()> pick_;
  bool stopped_ = false;  // poller thread only
};

// The server side of one handshake, driven by the poller's epoll: a client
// that says nothing holds only its own socket until connect_timeout.
class ServerHandshake final : public Pollable {
 public:
  ServerHandshake(internal::UniqueFd socket, std::shared_ptr<ListenerCore> listener, const ucred& cred)
      : socket_(std::move(socket)),
        listener_(std::move(listener)),
        cred_(cred),
        mine_(MakePreface(PrefaceRole::kServer, listener_->options().limits)),
        deadline_(Now() + listener_->options().connect_timeout.count()) {}

  void Attach(Poller& poller) override {
    poller_ = &poller;
    poller.Watch(socket_.get(), EPOLLIN | EPOLLRDHUP, this, 0);
    watched_ = true;
  }
  void OnEvent(int, uint32_t) override;
  bool Tend(int64_t now) override {
    if (!done_ && (listener_->stopped() || now >= deadline_)) {
      if (!listener_->stopped()) {
        Log(absl::StrCat("shm://", listener_->address().name, ": a client (pid ", cred_.pid,
                         ") sent no preface within connect_timeout; closed"));
      }
      End();
    }
    return !done_;
  }
  int64_t deadline_nanos() const override { return done_ ? 0 : deadline_; }
  void Shutdown() override { End(); }

 private:
  void End() {
    if (watched_) poller_->Unwatch(socket_.get());
    watched_ = false;
    socket_.reset();
    done_ = true;
  }

  internal::UniqueFd socket_;
  const std::shared_ptr<ListenerCore> listener_;
  const ucred cred_;
  const Preface mine_;
  const int64_t deadline_;
  Poller* poller_ = nullptr;
  bool watched_ = false;
  bool done_ = false;
  PrefaceReader reader_;
};

void ListenerCore::OnEvent(int, uint32_t) {
  if (stopped_) return;
  for (;;) {
    internal::UniqueFd client(accept4(socket_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!client.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // EAGAIN, or out of fds: epoll says when to try again
    }
    ucred cred{};
    if (Status allowed = CheckPeerAllowed(client.get(), address_, &cred); !allowed.ok()) {
      SendRefusal(client.get(), allowed, MakePreface(PrefaceRole::kServer, options_.limits));
      Log(absl::StrCat("refused a connection: ", allowed.ToString()));
      continue;
    }
    auto handshake = std::make_shared<ServerHandshake>(std::move(client), shared_from_this(), cred);
    poller_->Add(std::move(handshake));
  }
}

void ServerHandshake::OnEvent(int, uint32_t) {
  if (done_) return;
  if (listener_->stopped()) return End();
  const Status read = reader_.ReadSome(socket_.get(), PrefaceRole::kClient);
  if (!read.ok()) {
    const Status refusal(read.code(), absl::StrCat("shm://", listener_->address().name,
                                                   " refused the client's preface: ", read.message()));
    if (read.code() != absl::StatusCode::kUnavailable) SendRefusal(socket_.get(), refusal, mine_);
    Log(absl::StrCat("client pid ", cred_.pid, ": ", refusal.ToString()));
    return End();
  }
  if (!reader_.done()) return;
  poller_->Unwatch(socket_.get());
  watched_ = false;
  done_ = true;
  StatusOr<ShmEndpoint> endpoint =
      AcceptClient(std::move(socket_), listener_->address(), cred_, mine_, reader_.preface());
  if (!endpoint.ok()) return Log(absl::StrCat("accepting a client: ", endpoint.status().ToString()));
  StatusOr<std::unique_ptr<Connection>> connection = MakeShmConnection(
      *std::move(endpoint), listener_->address().options, listener_->options(), listener_->PickPoller());
  if (!connection.ok()) return Log(connection.status().ToString());
  listener_->Accepted(*std::move(connection));
}

class ShmListener final : public Listener {
 public:
  ShmListener(std::shared_ptr<ListenerCore> core) : core_(std::move(core)) {}

  ~ShmListener() override {
    Poller& poller = core_->poller();
    if (poller.OnThread()) {
      core_->Stop();
    } else {
      // Stop on the poller thread: once the task ran, no AcceptCallback
      // runs or will start (they run only there).
      std::promise<void> stopped;
      auto core = core_;
      if (poller.Post([core, &stopped] {
            core->Stop();
            stopped.set_value();
          })) {
        stopped.get_future().wait();
      }
    }
    if (core_->address().is_path()) unlink(core_->address().name.c_str());
  }

  std::string uri() const override { return core_->address().uri(); }

 private:
  std::shared_ptr<ListenerCore> core_;
};

// The client side of one Connect, on a poller: connect, send the preface,
// read the hello, map the region; `done` runs once, on the poller.
class ClientConnect final : public Pollable {
 public:
  ClientConnect(ShmAddress address, const ConnectionOptions& options, ConnectCallback done,
                std::shared_ptr<Poller> poller)
      : address_(std::move(address)),
        options_(options),
        done_(std::move(done)),
        poller_(std::move(poller)),
        mine_(MakePreface(PrefaceRole::kClient, options.limits)),
        deadline_(Now() + options.connect_timeout.count()) {}

  void Attach(Poller&) override { TryConnect(); }
  void OnEvent(int, uint32_t) override;
  bool Tend(int64_t now) override {
    if (finished_) return false;
    if (now >= deadline_) {
      Fail(absl::DeadlineExceededError(
          absl::StrCat("shm://", address_.name, ": no connection within connect_timeout (",
                       options_.connect_timeout.count() / 1'000'000, " ms)",
                       connected_ ? ": the server did not complete the handshake" : "")));
    } else if (!connected_) {
      TryConnect();
    }
    return !finished_;
  }
  int64_t deadline_nanos() const override {
    if (finished_) return 0;
    return connected_ ? deadline_ : std::min(deadline_, Now() + kConnectRetryNanos);
  }
  void Shutdown() override { Fail(absl::UnavailableError("the shm transport is shutting down")); }

 private:
  void TryConnect();
  void Fail(const Status& why) {
    if (finished_) return;
    Unwatch();
    socket_.reset();
    finished_ = true;
    internal::DeliveryScope delivering;
    done_(why);
  }
  void Unwatch() {
    if (watched_) poller_->Unwatch(socket_.get());
    watched_ = false;
  }

  const ShmAddress address_;
  const ConnectionOptions options_;
  const ConnectCallback done_;
  const std::shared_ptr<Poller> poller_;
  const Preface mine_;
  const int64_t deadline_;
  internal::UniqueFd socket_;
  bool connected_ = false;
  bool watched_ = false;
  bool finished_ = false;
  HelloReader reader_;
};

void ClientConnect::TryConnect() {
  if (finished_ || connected_) return;
  if (!socket_.valid()) {
    socket_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!socket_.valid()) return Fail(internal::ErrnoError("socket(AF_UNIX)"));
  }
  sockaddr_un addr;
  const socklen_t len = SocketAddress(address_.name, &addr);
  if (len > sizeof addr) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("shm name '", address_.name, "' is too long")));
  }
  int rc;
  do {
    rc = connect(socket_.get(), reinterpret_cast<sockaddr*>(&addr), len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    // The listener's backlog is full: not a refusal; try again shortly.
    if (errno == EAGAIN) return;
    return Fail(absl::UnavailableError(
        absl::StrCat("cannot connect to shm://", address_.name, ": ", std::strerror(errno))));
  }
  connected_ = true;
  if (Status sent = SendPreface(socket_.get(), mine_); !sent.ok()) {
    return Fail(absl::UnavailableError(absl::StrCat("shm://", address_.name, ": ", sent.message())));
  }
  poller_->Watch(socket_.get(), EPOLLIN | EPOLLRDHUP, this, 0);
  watched_ = true;
}

void ClientConnect::OnEvent(int, uint32_t) {
  if (finished_) return;
  if (Status read = reader_.ReadSome(socket_.get(), address_); !read.ok()) return Fail(read);
  if (!reader_.done()) return;
  Unwatch();
  StatusOr<ShmEndpoint> endpoint = reader_.Finish(std::move(socket_), address_, mine_);
  if (!endpoint.ok()) return Fail(endpoint.status());
  StatusOr<std::unique_ptr<Connection>> connection =
      MakeShmConnection(*std::move(endpoint), address_.options, options_, poller_);
  finished_ = true;
  internal::DeliveryScope delivering;
  done_(std::move(connection));
}

}  // namespace

ShmTransport::ShmTransport(Options options) {
  const int threads = options.poller_threads < 1 ? 1 : options.poller_threads;
  for (int i = 0; i < threads; ++i) {
    pollers_.push_back(std::make_shared<Poller>());
    pollers_.back()->Start();
  }
}

ShmTransport::~ShmTransport() {
  for (auto& poller : pollers_) poller->Stop();
}

std::shared_ptr<Poller> ShmTransport::NextPoller() {
  return pollers_[next_.fetch_add(1, std::memory_order_relaxed) % pollers_.size()];
}

Status ShmTransport::ValidateAddress(const Uri& uri) const { return ShmAddress::Parse(uri.address).status(); }

StatusOr<std::unique_ptr<Listener>> ShmTransport::Listen(const Uri& uri, const ConnectionOptions& options,
                                                         AcceptCallback on_accept) {
  ZCRPC_ASSIGN_OR_RETURN(ShmAddress address, ShmAddress::Parse(uri.address));
  if (address.name.back() == '*') {
    static std::atomic<uint64_t> counter{0};
    address.name.pop_back();
    address.name += absl::StrCat(getpid(), "-", counter.fetch_add(1));
  }
  internal::UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
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
  std::shared_ptr<Poller> poller = NextPoller();
  auto core = std::make_shared<ListenerCore>(std::move(socket), std::move(address), options, std::move(on_accept),
                                             poller, [this] { return NextPoller(); });
  if (!poller->Add(core)) return absl::UnavailableError("the shm transport is shutting down");
  return std::unique_ptr<Listener>(std::make_unique<ShmListener>(std::move(core)));
}

void ShmTransport::Connect(const Uri& uri, const ConnectionOptions& options, ConnectCallback done) {
  std::shared_ptr<Poller> poller = NextPoller();
  StatusOr<ShmAddress> address = ShmAddress::Parse(uri.address);
  if (!address.ok()) {
    // Even a bad address is answered on a transport thread, never inside
    // Connect() (transport.h).
    auto shared = std::make_shared<ConnectCallback>(std::move(done));
    if (!poller->Post([shared, status = address.status()] { (*shared)(status); })) {
      (*shared)(address.status());
    }
    return;
  }
  auto connect = std::make_shared<ClientConnect>(*std::move(address), options, std::move(done), poller);
  if (!poller->Add(connect)) connect->Shutdown();
}

}  // namespace zcrpc::transport::shm
