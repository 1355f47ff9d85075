// ShmTransport: scheme shm://NAME, for processes on one host. Each
// connection gets its own shared region (no process sees another
// connection's buffers) set up over a Unix socket; after that, calls move
// through rings in shared memory with no system call while both sides are
// busy (docs/transports.md: layout, trust model, waiting). Options ride in
// the URI (shm_address.h).
//
// Thread-safe. Each listener has one accept thread; each connection one
// poller thread.
#pragma once

#include <memory>

#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::shm {

class ShmTransport final : public Transport {
 public:
  StatusOr<std::unique_ptr<Listener>> Listen(const Uri& uri, const ConnectionOptions& options,
                                             AcceptCallback on_accept) override;
  StatusOr<std::unique_ptr<Connection>> Connect(const Uri& uri, const ConnectionOptions& options) override;
};

}  // namespace zcrpc::transport::shm
