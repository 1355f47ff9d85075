// ShmConnection: one connection of the shm transport once the handshake
// (shm_transport.cc) is done: frames go out as descriptors on the send
// ring, their parts as blocks of this side's slab; frames come in from the
// receive ring, their parts handed to the runtime as Buffers into the
// peer's slab. No byte of a message is copied unless the runtime hands
// Send a buffer that is not in the region (then once, counted).
//
// A poller thread per connection drains the receive ring. It spins for
// `spin` after the last frame, then sleeps in poll() on the doorbell eventfd
// and the Unix socket, so a dead peer is noticed at once. A blocking caller
// polls the ring itself while it waits (PollUntil), and the poller stays
// asleep. With busy_poll the poller never sleeps.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "zcrpc/transport/shm/region_layout.h"
#include "zcrpc/transport/internal/unique_fd.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::shm {

struct ShmOptions {
  // How long a poller spins after its last frame before it sleeps.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  // The poller never sleeps: lowest latency, one core per connection.
  bool busy_poll = false;
};

// What the handshake hands over.
struct ShmEndpoint {
  internal::UniqueFd socket;       // kept open: its hang-up is how a dead peer shows
  internal::UniqueFd memfd;
  internal::UniqueFd doorbell[2];  // eventfd per direction, written by that direction's sender
  RegionParams params;
  bool is_server = false;
  std::string peer;      // for logs: "shm://name (pid 123, uid 1000)"
};

StatusOr<std::unique_ptr<Connection>> MakeShmConnection(ShmEndpoint endpoint, const ShmOptions& options,
                                                        const ConnectionOptions& connection_options);

}  // namespace zcrpc::transport::shm
