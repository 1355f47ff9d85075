#include "zcrpc/transport/tcp/tcp_transport.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <system_error>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/transport/internal/delivery_scope.h"
#include "zcrpc/transport/internal/errno_status.h"
#include "zcrpc/transport/internal/unique_fd.h"
#include "zcrpc/transport/tcp/tcp_address.h"
#include "zcrpc/transport/tcp/tcp_connection.h"

namespace zcrpc::transport::tcp {
namespace {

// accept() out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM)
// leaves the pending connection in the backlog, so the listening socket
// stays readable: re-arming at once would spin. Wait this long instead.
constexpr std::chrono::milliseconds kAcceptBackoff{100};

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t len = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

void SetNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// The address of a numeric host (IPv4 or IPv6), or nullopt for a name.
std::optional<SocketAddress> NumericAddress(const TcpAddress& address) {
  SocketAddress out;
  auto* in4 = reinterpret_cast<sockaddr_in*>(&out.storage);
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (::inet_pton(AF_INET, address.host.c_str(), &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons(address.port);
    out.len = sizeof *in4;
    return out;
  }
  if (::inet_pton(AF_INET6, address.host.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(address.port);
    out.len = sizeof *in6;
    return out;
  }
  return std::nullopt;
}

// Resolves `address`, waiting for a host name's lookup at most `timeout`
// (DEADLINE_EXCEEDED then). getaddrinfo takes no timeout, so a name is
// looked up on a thread of its own that this one waits for with one; after
// a timeout that thread finishes the lookup alone and drops the answer.
// (Not getaddrinfo_a: glibc starts its helper thread in a way sanitizers
// cannot see, and TSan then crashes in the lookup's first malloc.)
StatusOr<SocketAddress> Resolve(const Uri& uri, const TcpAddress& address,
                                std::chrono::nanoseconds timeout = std::chrono::hours(1)) {
  if (std::optional<SocketAddress> numeric = NumericAddress(address)) return *numeric;
  struct Lookup {
    std::mutex mu;
    std::condition_variable done_cv;
    bool done = false;
    int rc = 0;
    SocketAddress result;
  };
  auto lookup = std::make_shared<Lookup>();
  try {
    std::thread([lookup, host = address.host, port = std::to_string(address.port)] {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_NUMERICSERV;
      addrinfo* found = nullptr;
      const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
      std::lock_guard lock(lookup->mu);
      lookup->rc = rc != 0 ? rc : (found == nullptr ? EAI_NONAME : 0);
      if (lookup->rc == 0) {
        std::memcpy(&lookup->result.storage, found->ai_addr, found->ai_addrlen);
        lookup->result.len = found->ai_addrlen;
      }
      if (found != nullptr) ::freeaddrinfo(found);
      lookup->done = true;
      lookup->done_cv.notify_all();
    }).detach();
  } catch (const std::system_error& e) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", uri.ToString(), ": no thread for the lookup: ",
                                               e.what()));
  }
  std::unique_lock lock(lookup->mu);
  if (!lookup->done_cv.wait_for(lock, timeout, [&] { return lookup->done; })) {
    return absl::DeadlineExceededError(absl::StrCat("resolving ", uri.ToString(), " took longer than ",
                                                    timeout.count() / 1'000'000, " ms"));
  }
  if (lookup->rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", uri.ToString(), ": ", ::gai_strerror(lookup->rc)));
  }
  return lookup->result;
}

// Opens a socket to `where` and starts the non-blocking connect; every
// outcome reaches `done` on a loop thread.
void ConnectTo(const std::shared_ptr<EpollLoop>& loop, const Uri& uri, const TcpAddress& address,
               const SocketAddress& where, const ConnectionOptions& options, ConnectCallback done) {
  auto fail = [&](Status status) { loop->Post([done = std::move(done), status] { done(status); }); };
  internal::UniqueFd fd(::socket(where.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return fail(internal::ErrnoError(absl::StrCat("cannot connect to ", uri.ToString(), ": socket")));
  SetNoDelay(fd.get());
  if (::connect(fd.get(), where.get(), where.len) != 0 && errno != EINPROGRESS) {
    return fail(absl::UnavailableError(absl::StrCat("cannot connect to ", uri.ToString(), ": ", std::strerror(errno))));
  }
  // Connected or under way: EPOLLOUT on the loop says which, bounded by
  // connect_timeout together with the preface exchange.
  TcpConnection::StartConnect(std::move(fd), loop, address.options, options, FormatTcpUri(address.host, address.port),
                              std::move(done));
}

std::string BoundUri(int fd) { return SocketUri(fd, /*peer=*/false); }

// The listening socket on the epoll loop. Shared between the Listener
// handle and the loop: a wake-up under way keeps it alive, and the socket
// closes when the last reference goes.
class AcceptState final : public EpollLoop::Watcher, public std::enable_shared_from_this<AcceptState> {
 public:
  AcceptState(internal::UniqueFd fd, std::shared_ptr<EpollLoop> loop, TcpOptions tcp_options,
              ConnectionOptions options, AcceptCallback on_accept, std::function<void(const Status&)> on_error)
      : fd_(std::move(fd)),
        loop_(std::move(loop)),
        tcp_options_(tcp_options),
        options_(options),
        on_accept_(std::move(on_accept)),
        on_error_(std::move(on_error)) {}
  ~AcceptState() {
    if (id_ != 0) loop_->Remove(fd_.get(), id_);
  }

  Status Begin() {
    ZCRPC_ASSIGN_OR_RETURN(id_, loop_->Add(fd_.get(), weak_from_this()));
    Arm();
    return absl::OkStatus();
  }

  // The handle is going: no AcceptCallback starts after this returns, and
  // none is running (unless on this very thread, inside the callback).
  void Stop() {
    stopped_.store(true, std::memory_order_release);
    if (delivering_thread_.load(std::memory_order_acquire) != std::this_thread::get_id()) {
      std::lock_guard lock(deliver_mu_);  // waits for a callback under way
    }
    loop_->Modify(fd_.get(), id_, 0);
    std::lock_guard lock(arm_mu_);
    armed_self_.reset();
  }

  // A connection whose preface arrived (or why it failed).
  void Deliver(StatusOr<std::unique_ptr<Connection>> connection) {
    if (!connection.ok()) {
      if (on_error_) on_error_(connection.status());
      return;
    }
    std::lock_guard lock(deliver_mu_);
    if (stopped_.load(std::memory_order_acquire)) return;  // the connection closes as it goes
    delivering_thread_.store(std::this_thread::get_id(), std::memory_order_release);
    {
      internal::DeliveryScope scope;  // an accept callback must not wait (transport.h)
      on_accept_(*std::move(connection));
    }
    delivering_thread_.store(std::thread::id(), std::memory_order_release);
  }

  void OnReady(uint32_t) override {
    std::shared_ptr<AcceptState> self;
    {
      std::lock_guard lock(arm_mu_);
      self = std::move(armed_self_);
    }
    if (!self || stopped_.load(std::memory_order_acquire)) return;
    std::weak_ptr<AcceptState> weak = self;
    for (;;) {
      const int fd = ::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        SetNoDelay(fd);
        TcpConnection::StartAccepted(internal::UniqueFd(fd), loop_, tcp_options_, options_,
                                     [weak](StatusOr<std::unique_ptr<Connection>> connection) {
                                       // A listener gone meanwhile: the connection just closes.
                                       if (auto state = weak.lock()) state->Deliver(std::move(connection));
                                     });
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == EPERM) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        if (on_error_) on_error_(internal::ErrnoError(absl::StrCat("accept on ", BoundUri(fd_.get()))));
        backoff_until_.store(Clock::Real().NowNanos() + std::chrono::nanoseconds(kAcceptBackoff).count(),
                             std::memory_order_release);
        loop_->WatchTicks(id_);
        return;  // re-armed by OnTick
      }
      break;  // anything else: try again on the next wake-up
    }
    Arm();
  }

  void OnTick(int64_t now_nanos) override {
    const int64_t until = backoff_until_.load(std::memory_order_acquire);
    if (until == 0 || now_nanos < until) return;
    backoff_until_.store(0, std::memory_order_release);
    if (!stopped_.load(std::memory_order_acquire)) Arm();
  }
  bool WantsTicks() const override { return backoff_until_.load(std::memory_order_acquire) != 0; }

  void OnLoopStopped() override {
    std::lock_guard lock(arm_mu_);
    armed_self_.reset();
  }

 private:
  void Arm() {
    std::lock_guard lock(arm_mu_);
    armed_self_ = shared_from_this();
    loop_->Modify(fd_.get(), id_, EPOLLIN);
  }

  internal::UniqueFd fd_;
  const std::shared_ptr<EpollLoop> loop_;
  const TcpOptions tcp_options_;
  const ConnectionOptions options_;
  const AcceptCallback on_accept_;
  const std::function<void(const Status&)> on_error_;
  uint64_t id_ = 0;
  std::atomic<bool> stopped_{false};
  std::atomic<int64_t> backoff_until_{0};  // 0: not backing off
  std::mutex deliver_mu_;                  // held while on_accept_ runs
  std::atomic<std::thread::id> delivering_thread_{};
  std::mutex arm_mu_;
  std::shared_ptr<AcceptState> armed_self_;  // guarded by arm_mu_: alive while armed
};

class TcpListener final : public Listener {
 public:
  TcpListener(std::shared_ptr<AcceptState> state, std::string uri) : state_(std::move(state)), uri_(std::move(uri)) {}
  ~TcpListener() override { state_->Stop(); }
  std::string uri() const override { return uri_; }

 private:
  std::shared_ptr<AcceptState> state_;
  std::string uri_;
};

}  // namespace

TcpTransport::TcpTransport(Options options)
    : options_(std::move(options)), loop_(std::make_shared<EpollLoop>(options_.poller_threads, options_.lazy_tick)) {}

TcpTransport::~TcpTransport() { loop_->Stop(); }

Status TcpTransport::ValidateAddress(const Uri& uri) const {
  StatusOr<TcpAddress> address = TcpAddress::Parse(uri.address);
  if (!address.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(uri.ToString(), ": ", address.status().message()));
  }
  return absl::OkStatus();
}

StatusOr<std::unique_ptr<Listener>> TcpTransport::Listen(const Uri& uri, const ConnectionOptions& options,
                                                         AcceptCallback on_accept) {
  ZCRPC_ASSIGN_OR_RETURN(TcpAddress address, TcpAddress::Parse(uri.address));
  ZCRPC_ASSIGN_OR_RETURN(SocketAddress where, Resolve(uri, address));
  internal::UniqueFd fd(::socket(where.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  auto fail = [&](std::string_view what) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", uri.ToString(), ": ", ToAbsl(what), ": ",
                                               std::strerror(errno)));
  };
  if (!fd.valid()) return fail("socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), where.get(), where.len) != 0) return fail("bind");
  if (::listen(fd.get(), SOMAXCONN) != 0) return fail("listen");
  std::string bound = BoundUri(fd.get());
  auto state = std::make_shared<AcceptState>(std::move(fd), loop_, address.options, options, std::move(on_accept),
                                             options_.on_handshake_error);
  ZCRPC_RETURN_IF_ERROR(state->Begin());
  return std::make_unique<TcpListener>(std::move(state), std::move(bound));
}

void TcpTransport::Connect(const Uri& uri, const ConnectionOptions& options, ConnectCallback user_done) {
  // Every outcome reaches `done` on a loop thread, never inside Connect(),
  // as a delivering thread: it must not wait (transport.h).
  ConnectCallback done = [user_done = std::move(user_done)](StatusOr<std::unique_ptr<Connection>> c) {
    internal::DeliveryScope scope;
    user_done(std::move(c));
  };
  auto fail = [&](Status status) { loop_->Post([done = std::move(done), status] { done(status); }); };
  StatusOr<TcpAddress> address = TcpAddress::Parse(uri.address);
  if (!address.ok()) {
    return fail(absl::InvalidArgumentError(absl::StrCat(uri.ToString(), ": ", address.status().message())));
  }
  if (std::optional<SocketAddress> numeric = NumericAddress(*address)) {
    return ConnectTo(loop_, uri, *address, *numeric, options, std::move(done));
  }
  // A host name: looked up on a thread of its own, so the caller never
  // waits on DNS; the lookup counts against connect_timeout.
  auto resolve_and_connect = [loop = loop_, uri, address = *std::move(address), options,
                              done = done]() mutable {
    const int64_t start = Clock::Real().NowNanos();
    StatusOr<SocketAddress> where = Resolve(uri, address, options.connect_timeout);
    if (!where.ok()) {
      loop->Post([done = std::move(done), status = where.status()] { done(status); });
      return;
    }
    ConnectionOptions rest = options;
    rest.connect_timeout = std::max(std::chrono::nanoseconds(1),
                                    options.connect_timeout - std::chrono::nanoseconds(Clock::Real().NowNanos() - start));
    ConnectTo(loop, uri, address, *where, rest, std::move(done));
  };
  try {
    std::thread(std::move(resolve_and_connect)).detach();
  } catch (const std::system_error& e) {
    fail(absl::UnavailableError(absl::StrCat("cannot connect to ", uri.ToString(), ": no thread to resolve it: ",
                                             e.what())));
  }
}

}  // namespace zcrpc::transport::tcp
