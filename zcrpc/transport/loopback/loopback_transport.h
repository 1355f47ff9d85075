// The loopback transport, "loopback://NAME": connections inside one
// process, for tests of the runtime and of the transport contract. A
// connection is a pair of in-memory frame queues; a sent Frame is moved
// into the peer's queue and from there into its handler, so no payload
// byte is copied. It keeps every promise of transport.h (contract v2) the
// way a socket transport does: a fixed set of poller threads delivers
// frames in order, Send never blocks, the soft budget and its stall close,
// capabilities from the peer's options (the "preface" is the two sides'
// ConnectionOptions meeting in memory), asynchronous Connect, PollUntil
// for a caller that reads its own reply. Fault hooks (loopback_address.h)
// make the failure cases reachable on purpose.
//
// Ownership: the transport owns its pollers and its table of listener
// names; Listener and Connection handles share its internals, so a
// connection handle that outlives the transport only reports UNAVAILABLE.
// Destroying the transport closes every connection (their OnClosed runs
// before the destructor returns). Every method may be called from any
// thread, except that the destructor must not run on one of its pollers.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "zcrpc/transport/loopback/loopback_address.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::loopback {

class Core;
class Endpoint;

class LoopbackTransport final : public Transport {
 public:
  struct Options {
    // Poller threads; a connection's two ends are spread over them round
    // robin. One (the default) is what tcp and shm use by default too.
    int poller_threads = 1;
  };

  LoopbackTransport() : LoopbackTransport(Options{}) {}
  explicit LoopbackTransport(Options options);
  ~LoopbackTransport() override;

  Status ValidateAddress(const Uri& uri) const override;
  StatusOr<std::unique_ptr<Listener>> Listen(const Uri& uri, const ConnectionOptions& options,
                                             AcceptCallback on_accept) override;
  void Connect(const Uri& uri, const ConnectionOptions& options, ConnectCallback done) override;

  // Fault hook: the ends accepted from now on by the listener named `name`
  // (as Listener::uri() reports it, without "loopback://") get `faults`
  // instead of their listen URI's. ClearFaults goes back to the URI's.
  void SetFaults(std::string_view name, const Faults& faults);
  void ClearFaults(std::string_view name);

 private:
  std::shared_ptr<Core> core_;
};

// The loopback Connection; tests may static_cast a Connection from a
// LoopbackTransport to it to change a live connection's faults.
class LoopbackConnection final : public Connection {
 public:
  explicit LoopbackConnection(std::shared_ptr<Endpoint> end);
  ~LoopbackConnection() override;

  // From the process's BufferPool: the peer receives this very memory.
  Buffer Allocate(size_t size) override;
  Status Send(Frame frame) override;
  bool writable() override;
  Status WaitWritable(int64_t deadline_nanos) override;
  Capabilities capabilities() const override;
  void Start(std::shared_ptr<ConnectionHandler> handler) override;
  void Close(const Status& reason) override;
  // "loopback://NAME" on the client; "loopback://NAME#client-N" on the
  // server (for logs: it is not an address anyone can dial).
  std::string peer() const override;
  bool PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) override;

  // This end's fault hooks, changed while it runs (e.g. stall on, then
  // off). Applies to frames that arrive or are sent afterwards.
  Faults faults() const;
  void SetFaults(const Faults& faults);

 private:
  std::shared_ptr<Endpoint> end_;
};

}  // namespace zcrpc::transport::loopback
