#include "zcrpc/transport/shm/handshake.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/transport/internal/errno_status.h"
#include "zcrpc/transport/shm/region.h"

namespace zcrpc::transport::shm {
namespace {

Status SendHello(int socket, const ServerHello& hello, const int* fds, int fd_count) {
  iovec iov{const_cast<ServerHello*>(&hello), sizeof hello};
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
    sent = sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  // A fresh socket's buffer holds the ~300 bytes whole; a short send means
  // the client is gone or misbehaving.
  if (sent != static_cast<ssize_t>(sizeof hello)) return internal::ErrnoError("sending the shm hello");
  return absl::OkStatus();
}

ServerHello HelloFrom(const Preface& mine) {
  ServerHello hello{};
  EncodePreface(mine, std::span<uint8_t, kPrefaceSize>(hello.preface));
  hello.magic = kHelloMagic;
  hello.version = kHandshakeVersion;
  hello.server_pid = static_cast<uint32_t>(getpid());
  return hello;
}

// A status code from the peer, which may say anything.
absl::StatusCode PeerCode(uint32_t code) {
  return code >= 1 && code <= 16 ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown;
}

}  // namespace

Preface MakePreface(PrefaceRole role, const FrameLimits& limits) {
  Preface preface;
  preface.role = role;
  preface.limits = limits;
  return preface;
}

Status SendPreface(int socket, const Preface& preface) {
  uint8_t bytes[kPrefaceSize];
  EncodePreface(preface, std::span<uint8_t, kPrefaceSize>(bytes));
  ssize_t sent;
  do {
    sent = send(socket, bytes, sizeof bytes, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(sizeof bytes)) return internal::ErrnoError("sending the shm preface");
  return absl::OkStatus();
}

Status PrefaceReader::ReadSome(int socket, PrefaceRole expected_role) {
  while (got_ < kPrefaceSize) {
    const ssize_t n = recv(socket, bytes_ + got_, kPrefaceSize - got_, MSG_DONTWAIT);
    if (n > 0) {
      got_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return absl::OkStatus();
    if (n == 0 && got_ > 0 && std::memcmp(bytes_, "ZCPF", std::min<size_t>(got_, 4)) != 0) {
      // A short answer that is not ours: say what it is (bytes_ is zero
      // past got_).
      return DecodePreface(std::span<const uint8_t, kPrefaceSize>(bytes_), expected_role).status();
    }
    return n == 0 ? absl::UnavailableError(absl::StrCat("the peer closed the socket after ", got_,
                                                        " of the 64 preface bytes"))
                  : internal::ErrnoError("reading the shm preface");
  }
  ZCRPC_ASSIGN_OR_RETURN(preface_, DecodePreface(std::span<const uint8_t, kPrefaceSize>(bytes_), expected_role));
  return absl::OkStatus();
}

Status CheckPeerAllowed(int socket, const ShmAddress& address, ucred* peer) {
  socklen_t len = sizeof *peer;
  if (getsockopt(socket, SOL_SOCKET, SO_PEERCRED, peer, &len) != 0) return internal::ErrnoError("SO_PEERCRED");
  if (address.allow_uid && peer->uid != *address.allow_uid) {
    return absl::PermissionDeniedError(absl::StrCat("shm://", address.name, " refuses uid ", peer->uid, " (pid ",
                                                    peer->pid, "): only uid ", *address.allow_uid,
                                                    " may connect (server option allow_uid)"));
  }
  return absl::OkStatus();
}

void SendRefusal(int socket, const Status& why, const Preface& mine) {
  ServerHello hello = HelloFrom(mine);
  hello.status_code = static_cast<uint32_t>(why.code());
  std::snprintf(hello.reason, sizeof hello.reason, "%.*s", static_cast<int>(why.message().size()),
                why.message().data());
  (void)SendHello(socket, hello, nullptr, 0);
}

StatusOr<ShmEndpoint> AcceptClient(internal::UniqueFd socket, const ShmAddress& address, const ucred& peer_cred,
                                   const Preface& mine, const Preface& peer) {
  ShmEndpoint endpoint;
  ZCRPC_ASSIGN_OR_RETURN(int memfd, Region::CreateMemfd(address.params));
  endpoint.memfd.reset(memfd);
  for (internal::UniqueFd& doorbell : endpoint.doorbell) {
    doorbell.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!doorbell.valid()) return internal::ErrnoError("eventfd");
  }
  ServerHello hello = HelloFrom(mine);
  hello.slab_bytes = address.params.slab_bytes;
  hello.ring_depth = address.params.ring_depth;
  const int fds[kHelloFds] = {endpoint.memfd.get(), endpoint.doorbell[0].get(), endpoint.doorbell[1].get()};
  ZCRPC_RETURN_IF_ERROR(SendHello(socket.get(), hello, fds, kHelloFds));
  endpoint.socket = std::move(socket);
  endpoint.params = address.params;
  endpoint.is_server = true;
  endpoint.mine = mine;
  endpoint.theirs = peer;
  endpoint.peer =
      absl::StrCat("shm://", address.name, " (client pid ", peer_cred.pid, ", uid ", peer_cred.uid, ")");
  return endpoint;
}

Status HelloReader::CheckPreface(const ShmAddress& address) {
  StatusOr<Preface> preface =
      DecodePreface(std::span<const uint8_t, kPrefaceSize>(hello_.preface), PrefaceRole::kServer);
  if (!preface.ok()) {
    return Status(preface.status().code(),
                  absl::StrCat("shm://", address.name, " is not a zcrpc shm server we can speak to: ",
                               preface.status().message()));
  }
  server_preface_ = *preface;
  return absl::OkStatus();
}

Status HelloReader::ReadSome(int socket, const ShmAddress& address) {
  auto* bytes = reinterpret_cast<uint8_t*>(&hello_);
  while (got_ < sizeof hello_) {
    iovec iov{bytes + got_, sizeof hello_ - got_};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kHelloFds)] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return absl::OkStatus();
    if (n < 0) return internal::ErrnoError(absl::StrCat("reading the hello of shm://", address.name));
    // Take every fd that came, whatever else is wrong, so none leaks.
    if ((msg.msg_flags & MSG_CTRUNC) != 0) truncated_ = true;
    for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
      if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
        if (fd_count_ < kHelloFds) fds_[fd_count_++].reset(fd);
        else close(fd);
      }
    }
    const size_t before = got_;
    got_ += static_cast<size_t>(n);
    // The preface first: a foreign or other-version server is named as such
    // as soon as its 64 bytes are here, without waiting for the rest.
    if (before < kPrefaceSize && got_ >= kPrefaceSize) ZCRPC_RETURN_IF_ERROR(CheckPreface(address));
    if (n == 0) {
      if (got_ > 0 && got_ < kPrefaceSize) {
        std::memset(bytes + got_, 0, kPrefaceSize - got_);
        if (std::memcmp(hello_.preface, "ZCPF", std::min<size_t>(got_, 4)) != 0) {
          ZCRPC_RETURN_IF_ERROR(CheckPreface(address));
        }
      }
      return absl::UnavailableError(
          absl::StrCat("shm://", address.name, " closed the socket during the handshake (after ", got_, " bytes)"));
    }
  }
  if (hello_.magic != kHelloMagic) {
    return absl::InvalidArgumentError(absl::StrCat("shm://", address.name, " is not a zcrpc shm server (bad hello)"));
  }
  if (hello_.version != kHandshakeVersion) {
    return absl::FailedPreconditionError(absl::StrCat("shm://", address.name, " speaks shm handshake version ",
                                                      hello_.version, ", this side speaks ", kHandshakeVersion));
  }
  if (hello_.status_code != 0) {
    hello_.reason[sizeof hello_.reason - 1] = '\0';
    return Status(PeerCode(hello_.status_code), hello_.reason);
  }
  return absl::OkStatus();
}

StatusOr<ShmEndpoint> HelloReader::Finish(internal::UniqueFd socket, const ShmAddress& address, const Preface& mine) {
  if (fd_count_ != kHelloFds || truncated_) {
    return absl::InvalidArgumentError(
        absl::StrCat("shm://", address.name, " sent ", fd_count_, " fds with its hello, not ", kHelloFds));
  }
  ShmEndpoint endpoint;
  endpoint.params = RegionParams{hello_.slab_bytes, hello_.ring_depth};
  ZCRPC_RETURN_IF_ERROR(ValidateParams(endpoint.params));
  endpoint.memfd = std::move(fds_[0]);
  endpoint.doorbell[0] = std::move(fds_[1]);
  endpoint.doorbell[1] = std::move(fds_[2]);
  endpoint.socket = std::move(socket);
  endpoint.is_server = false;
  endpoint.mine = mine;
  endpoint.theirs = server_preface_;
  endpoint.peer = absl::StrCat("shm://", address.name, " (server pid ", hello_.server_pid, ")");
  return endpoint;
}

StatusOr<ShmEndpoint> ConnectHandshakeBlocking(internal::UniqueFd socket, const ShmAddress& address,
                                               const Preface& mine, std::chrono::milliseconds timeout) {
  ZCRPC_RETURN_IF_ERROR(SendPreface(socket.get(), mine));
  const int64_t deadline = Clock::Real().NowNanos() + std::chrono::nanoseconds(timeout).count();
  HelloReader reader;
  while (!reader.done()) {
    const int64_t left = deadline - Clock::Real().NowNanos();
    pollfd ready{socket.get(), POLLIN, 0};
    if (left <= 0 || poll(&ready, 1, static_cast<int>(left / 1'000'000) + 1) == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("shm://", address.name, " did not answer within ", timeout.count(), " ms"));
    }
    ZCRPC_RETURN_IF_ERROR(reader.ReadSome(socket.get(), address));
  }
  return reader.Finish(std::move(socket), address, mine);
}

}  // namespace zcrpc::transport::shm
