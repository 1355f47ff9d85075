#include "zcrpc/transport/shm/handshake.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "zcrpc/transport/internal/errno_status.h"
#include "zcrpc/transport/shm/region.h"

namespace zcrpc::transport::shm {
namespace {

constexpr uint64_t kHelloMagic = 0x4f4c4c454850435aull;  // "ZCPHELLO"
constexpr uint32_t kHelloVersion = 1;
constexpr int kHelloFds = 3;  // memfd, doorbell[0], doorbell[1]

struct Hello {
  uint64_t magic;
  uint32_t version;
  uint32_t status_code;  // 0: accepted; else an absl::StatusCode and `reason`
  uint64_t slab_bytes;
  uint32_t ring_depth;
  uint32_t server_pid;
  char reason[200];
};


Status SendHello(int socket, const Hello& hello, const int* fds, int fd_count) {
  iovec iov{const_cast<Hello*>(&hello), sizeof hello};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kHelloFds)] = {};
  if (fd_count > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<size_t>(fd_count));
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<size_t>(fd_count));
    std::memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * static_cast<size_t>(fd_count));
  }
  ssize_t sent;
  do {
    sent = sendmsg(socket, &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(sizeof hello)) return internal::ErrnoError("sending the shm hello");
  return absl::OkStatus();
}

}  // namespace

StatusOr<ShmEndpoint> AcceptHandshake(internal::UniqueFd socket, const ShmAddress& address) {
  ucred peer{};
  socklen_t len = sizeof peer;
  if (getsockopt(socket.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) return internal::ErrnoError("SO_PEERCRED");
  Hello hello{};
  hello.magic = kHelloMagic;
  hello.version = kHelloVersion;
  hello.server_pid = static_cast<uint32_t>(getpid());
  if (address.allow_uid && peer.uid != *address.allow_uid) {
    Status refused = absl::PermissionDeniedError(absl::StrCat("shm://", address.name, " refuses uid ", peer.uid,
                                                              " (pid ", peer.pid, "): only uid ", *address.allow_uid,
                                                              " may connect (server option allow_uid)"));
    hello.status_code = static_cast<uint32_t>(refused.code());
    std::snprintf(hello.reason, sizeof hello.reason, "%.*s", static_cast<int>(refused.message().size()),
                  refused.message().data());
    (void)SendHello(socket.get(), hello, nullptr, 0);
    return refused;
  }
  ShmEndpoint endpoint;
  ZCRPC_ASSIGN_OR_RETURN(int memfd, Region::CreateMemfd(address.params));
  endpoint.memfd.reset(memfd);
  for (internal::UniqueFd& doorbell : endpoint.doorbell) {
    doorbell.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!doorbell.valid()) return internal::ErrnoError("eventfd");
  }
  hello.slab_bytes = address.params.slab_bytes;
  hello.ring_depth = address.params.ring_depth;
  const int fds[kHelloFds] = {endpoint.memfd.get(), endpoint.doorbell[0].get(), endpoint.doorbell[1].get()};
  ZCRPC_RETURN_IF_ERROR(SendHello(socket.get(), hello, fds, kHelloFds));
  endpoint.socket = std::move(socket);
  endpoint.params = address.params;
  endpoint.is_server = true;
  endpoint.peer = absl::StrCat("shm://", address.name, " (client pid ", peer.pid, ", uid ", peer.uid, ")");
  return endpoint;
}

StatusOr<ShmEndpoint> ConnectHandshake(internal::UniqueFd socket, const ShmAddress& address,
                                       std::chrono::milliseconds timeout) {
  pollfd ready{socket.get(), POLLIN, 0};
  const int polled = poll(&ready, 1, static_cast<int>(timeout.count()));
  if (polled <= 0) {
    return absl::UnavailableError(absl::StrCat("shm://", address.name, " did not answer within ", timeout.count(), " ms"));
  }
  Hello hello{};
  iovec iov{&hello, sizeof hello};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kHelloFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t got;
  do {
    got = recvmsg(socket.get(), &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return internal::ErrnoError("receiving the shm hello");

  // Take every fd that came, whatever else is wrong, so none leaks.
  internal::UniqueFd fds[kHelloFds];
  int fd_count = 0;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    const size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
      if (fd_count < kHelloFds) fds[fd_count++].reset(fd);
      else close(fd);
    }
  }
  if (got != static_cast<ssize_t>(sizeof hello) || hello.magic != kHelloMagic || hello.version != kHelloVersion) {
    return absl::UnavailableError(absl::StrCat("shm://", address.name, " is not a zcrpc shm server (bad hello)"));
  }
  if (hello.status_code != 0) {
    hello.reason[sizeof hello.reason - 1] = '\0';
    return Status(static_cast<absl::StatusCode>(hello.status_code), hello.reason);
  }
  if (fd_count != kHelloFds || (msg.msg_flags & MSG_CTRUNC) != 0) {
    return absl::UnavailableError(absl::StrCat("shm://", address.name, " sent ", fd_count, " fds, not ", kHelloFds));
  }
  ShmEndpoint endpoint;
  endpoint.params = RegionParams{hello.slab_bytes, hello.ring_depth};
  ZCRPC_RETURN_IF_ERROR(ValidateParams(endpoint.params));
  endpoint.memfd = std::move(fds[0]);
  endpoint.doorbell[0] = std::move(fds[1]);
  endpoint.doorbell[1] = std::move(fds[2]);
  endpoint.socket = std::move(socket);
  endpoint.is_server = false;
  endpoint.peer = absl::StrCat("shm://", address.name, " (server pid ", hello.server_pid, ")");
  return endpoint;
}

}  // namespace zcrpc::transport::shm
