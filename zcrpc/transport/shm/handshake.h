// The shm handshake over the Unix socket. The server checks the client's
// credentials (SO_PEERCRED), creates the connection's region (a sealed
// memfd) and two eventfd doorbells, and sends one Hello with the three fds
// (SCM_RIGHTS). The client checks the Hello and maps the region. After
// that nothing more is sent on the socket; it stays open so that either
// side sees the other's death as a hang-up.
#pragma once

#include <chrono>

#include "zcrpc/base/status.h"
#include "zcrpc/transport/shm/shm_address.h"
#include "zcrpc/transport/shm/shm_connection.h"

namespace zcrpc::transport::shm {

// Server side, on a freshly accepted socket (taken). A client that is not
// allowed gets a refusal naming why, and the error comes back here.
StatusOr<ShmEndpoint> AcceptHandshake(internal::UniqueFd socket, const ShmAddress& address);

// Client side, on a connected socket (taken). Waits at most `timeout`.
StatusOr<ShmEndpoint> ConnectHandshake(internal::UniqueFd socket, const ShmAddress& address,
                                       std::chrono::milliseconds timeout);

}  // namespace zcrpc::transport::shm
