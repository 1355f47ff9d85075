// ShmTransport: scheme shm://NAME, for processes on one host. Each
// connection gets its own shared region (no process sees another
// connection's buffers) set up over a Unix socket; after that, calls move
// through rings in shared memory with no system call while both sides are
// busy (docs/transports.md: layout, trust model, waiting). Options ride in
// the URI (shm_address.h).
//
// Threads: a fixed set of poller threads (Options::poller_threads), made
// with the transport, serve everything: accepting, both sides of every
// handshake (non-blocking, so a silent client stalls nobody), and every
// connection's receive ring and pending sends. No thread is made per
// listener or connection. Connect()'s callback, AcceptCallback and the
// ConnectionHandler calls run on a poller (or on a PollUntil caller).
//
// Thread-safe. The transport must outlive its listeners; destroying it
// closes its connections (OnClosed follows on its pollers).
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::shm {

class Poller;

class ShmTransport final : public Transport {
 public:
  struct Options {
    // Threads that poll every connection. One spinning thread serves many
    // connections (it looks at each ring in turn, ~100 ns apiece); more
    // help only when handlers run long on the poller.
    int poller_threads = 1;
  };

  ShmTransport() : ShmTransport(Options{}) {}
  explicit ShmTransport(Options options);
  ~ShmTransport() override;

  Status ValidateAddress(const Uri& uri) const override;
  StatusOr<std::unique_ptr<Listener>> Listen(const Uri& uri, const ConnectionOptions& options,
                                             AcceptCallback on_accept) override;
  void Connect(const Uri& uri, const ConnectionOptions& options, ConnectCallback done) override;

 private:
  // Round robin over the pollers.
  std::shared_ptr<Poller> NextPoller();

  std::vector<std::shared_ptr<Poller>> pollers_;
  std::atomic<uint32_t> next_{0};
};

}  // namespace zcrpc::transport::shm
