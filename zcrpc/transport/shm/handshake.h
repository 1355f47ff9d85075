// The shm handshake over the Unix socket, as pieces a non-blocking state
// machine (shm_transport.cc, driven by a poller) or a blocking tool can use.
//
//   client -> server   its 64-byte Preface (zcrpc/base/wire.h), role client
//   server -> client   ServerHello: the server's Preface, then either a
//                      refusal (a status and why) or the region parameters
//                      with three fds (SCM_RIGHTS): the region's memfd and
//                      one doorbell eventfd per direction
//
// The server checks the client's credentials (SO_PEERCRED) and its preface
// before it creates anything; the client checks the server's preface and
// the parameters before it maps anything. After that nothing more is sent
// on the socket; it stays open so that either side sees the other's death
// as a hang-up.
//
// No state beyond what the caller holds; any thread.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>

#include "zcrpc/base/status.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/transport/internal/unique_fd.h"
#include "zcrpc/transport/shm/shm_address.h"
#include "zcrpc/transport/shm/shm_connection.h"

namespace zcrpc::transport::shm {

// The handshake's own version: the region layout's (a v1 server sent no
// preface and a different hello; see docs/transports.md).
inline constexpr uint32_t kHandshakeVersion = kRegionVersion;
inline constexpr uint64_t kHelloMagic = 0x4f4c4c454850435aull;  // "ZCPHELLO"
inline constexpr int kHelloFds = 3;                            // memfd, doorbell[0], doorbell[1]

// What the server sends, in one message.
struct ServerHello {
  uint8_t preface[kPrefaceSize];
  uint64_t magic;
  uint32_t version;
  uint32_t status_code;  // 0: accepted; else an absl::StatusCode and `reason`
  uint64_t slab_bytes;
  uint32_t ring_depth;
  uint32_t server_pid;
  char reason[200];
};

// The preface this side sends.
Preface MakePreface(PrefaceRole role, const FrameLimits& limits);

// Writes the 64 bytes of `preface` to a fresh socket (it has room: nothing
// else was sent). UNAVAILABLE if the socket is gone.
Status SendPreface(int socket, const Preface& preface);

// Reads 64 preface bytes piecewise from a non-blocking socket.
class PrefaceReader {
 public:
  // OK while more may come or once complete (done()); UNAVAILABLE when
  // the peer closed first; a decode error (DecodePreface) once complete.
  Status ReadSome(int socket, PrefaceRole expected_role);
  bool done() const { return got_ == kPrefaceSize; }
  const Preface& preface() const { return preface_; }

 private:
  uint8_t bytes_[kPrefaceSize] = {};
  size_t got_ = 0;
  Preface preface_;
};

// Server side. The client's credentials, and whether `address` allows them
// (PERMISSION_DENIED naming both uids otherwise).
Status CheckPeerAllowed(int socket, const ShmAddress& address, ucred* peer);
// Tells the client why it is refused (best effort: it may be gone).
void SendRefusal(int socket, const Status& why, const Preface& mine);
// Creates the region and the doorbells and sends them with the server's
// preface. `peer` is the client's preface, already checked.
StatusOr<ShmEndpoint> AcceptClient(internal::UniqueFd socket, const ShmAddress& address, const ucred& peer_cred,
                                   const Preface& mine, const Preface& peer);

// Client side: reads the ServerHello piecewise from a non-blocking socket.
class HelloReader {
 public:
  // OK while more may come or once complete (done()). Errors: what the
  // server's preface says (INVALID_ARGUMENT: not zcrpc; FAILED_PRECONDITION:
  // another version), the server's refusal, UNAVAILABLE on a hang-up.
  Status ReadSome(int socket, const ShmAddress& address);
  bool done() const { return got_ == sizeof hello_; }
  // After done(): the endpoint, its parameters checked.
  StatusOr<ShmEndpoint> Finish(internal::UniqueFd socket, const ShmAddress& address, const Preface& mine);

 private:
  Status CheckPreface(const ShmAddress& address);

  ServerHello hello_{};
  size_t got_ = 0;
  Preface server_preface_;
  internal::UniqueFd fds_[kHelloFds];
  int fd_count_ = 0;
  bool truncated_ = false;
};

// For tools and tests: the client handshake on a connected blocking or
// non-blocking socket, waiting at most `timeout`.
StatusOr<ShmEndpoint> ConnectHandshakeBlocking(internal::UniqueFd socket, const ShmAddress& address,
                                               const Preface& mine, std::chrono::milliseconds timeout);

}  // namespace zcrpc::transport::shm
