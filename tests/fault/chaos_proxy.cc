#include "tests/fault/chaos_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>

namespace zcrpc::testing {
namespace {

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

void NoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool SendAll(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Closes the socket under `fd` with a reset (SO_LINGER 0) while keeping the
// descriptor number taken (it now names /dev/null), so the other direction's
// thread, still using the number, fails cleanly instead of racing a reuse.
void ResetKeepingNumber(int fd) {
  linger abort{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, fd);
    ::close(null);
  }
}

}  // namespace

ChaosProxy::ChaosProxy(const std::string& upstream, ChaosFault fault) : fault_(std::move(fault)) {
  upstream_port_ = static_cast<uint16_t>(std::stoi(upstream.substr(upstream.rfind(':') + 1)));
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in where = Loopback(0);
  socklen_t len = sizeof where;
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&where), sizeof where) != 0 ||
      ::listen(listen_fd_, 64) != 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&where), &len) != 0) {
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    return;
  }
  port_ = ntohs(where.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

ChaosProxy::~ChaosProxy() {
  stopping_.store(true);
  if (acceptor_.joinable()) acceptor_.join();
  std::unique_lock lock(mu_);
  pumps_done_.wait(lock, [this] { return pumps_running_ == 0; });
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

ChaosProxy::Link::~Link() {
  ::close(client);
  ::close(server);
}

void ChaosProxy::RunPump(std::shared_ptr<Link> link, bool to_server, bool faulty) {
  if (to_server) {
    Pump(link->client, link->server, faulty);
  } else {
    Pump(link->server, link->client, faulty);
  }
  link.reset();  // the second thread to get here closes the sockets
  std::lock_guard lock(mu_);
  if (--pumps_running_ == 0) pumps_done_.notify_all();
}

void ChaosProxy::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in upstream = Loopback(upstream_port_);
    if (server < 0 || ::connect(server, reinterpret_cast<sockaddr*>(&upstream), sizeof upstream) != 0) {
      ::close(client);
      if (server >= 0) ::close(server);
      continue;
    }
    NoDelay(client);
    NoDelay(server);
    connections_.fetch_add(1);
    auto link = std::make_shared<Link>();
    link->client = client;
    link->server = server;
    {
      std::lock_guard lock(mu_);
      pumps_running_ += 2;
    }
    std::thread(&ChaosProxy::RunPump, this, link, true, fault_.direction != ChaosFault::Direction::kToClient).detach();
    std::thread(&ChaosProxy::RunPump, this, link, false, fault_.direction != ChaosFault::Direction::kToServer).detach();
  }
}

void ChaosProxy::Pump(int from, int to, bool faulty) {
  const ChaosFault::Kind kind = faulty ? fault_.kind : ChaosFault::Kind::kNone;
  std::array<uint8_t, 64 * 1024> buffer;
  uint64_t offset = 0;  // bytes of this direction seen so far
  while (!stopping_.load()) {
    pollfd p{from, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    ssize_t n = ::recv(from, buffer.data(), buffer.size(), 0);
    if (n <= 0) {
      ::shutdown(to, SHUT_WR);  // pass the end on
      return;
    }
    size_t size = static_cast<size_t>(n);
    const uint64_t at = offset;
    offset += size;
    switch (kind) {
      case ChaosFault::Kind::kNone:
        break;
      case ChaosFault::Kind::kDelay:
        std::this_thread::sleep_for(fault_.delay);
        break;
      case ChaosFault::Kind::kOneByteWrites:
        for (size_t i = 0; i < size; ++i) {
          if (!SendAll(to, buffer.data() + i, 1)) return;
        }
        continue;
      case ChaosFault::Kind::kCorrupt:
        if (fault_.after_bytes >= at && fault_.after_bytes < at + size) buffer[fault_.after_bytes - at] ^= 0xff;
        break;
      case ChaosFault::Kind::kTruncate:
      case ChaosFault::Kind::kStall:
      case ChaosFault::Kind::kReset:
        if (offset > fault_.after_bytes) {
          const size_t keep = static_cast<size_t>(std::max<int64_t>(0, static_cast<int64_t>(fault_.after_bytes - at)));
          SendAll(to, buffer.data(), keep);
          if (kind == ChaosFault::Kind::kTruncate) {
            ::shutdown(to, SHUT_RDWR);
            ::shutdown(from, SHUT_RDWR);
          } else if (kind == ChaosFault::Kind::kReset) {
            ResetKeepingNumber(to);
            ResetKeepingNumber(from);
          } else {
            while (!stopping_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
          return;
        }
        break;
    }
    if (!SendAll(to, buffer.data(), size)) return;
  }
}

}  // namespace zcrpc::testing
