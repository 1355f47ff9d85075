// The transport contract. A transport turns a URI into connections
// (Listen/Connect); a connection allocates send buffers in its own memory,
// sends frames as one scatter-gather list, delivers received frames as
// page-aligned Buffers, and reports its failure exactly once.
//
// The runtime (rpc/) sees transports only through this header and
// registry.h. Implementations live in one folder each (tcp/, and later shm/,
// rdma/, grpc/). docs/transports.md explains how to write one.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "zcrpc/base/buffer.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/base/status.h"
#include "zcrpc/transport/uri.h"

namespace zcrpc::transport {

// What a connection enforces on the frames it receives.
struct ConnectionOptions {
  FrameLimits limits;
};

// The runtime's side of a connection.
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;
  // A complete frame arrived. Called on the connection's poller thread (or
  // on a caller inside PollUntil), one frame at a time, in arrival order. The frame's buffers are the
  // handler's. If the body was over the limits, frame.body_discarded is set
  // and the parts are empty (the connection stays open).
  virtual void OnFrame(Frame frame) = 0;
  // The connection is closed: by the peer, by an error (a malformed frame,
  // a socket error), or by Close(). Called exactly once, after the last
  // OnFrame; the connection drops its reference to the handler afterwards.
  virtual void OnClosed(const Status& reason) = 0;
};

class Connection {
 public:
  // Closes the connection (as Close()) if it is still open.
  virtual ~Connection() = default;

  // A send buffer of `size` bytes in the transport's own memory (pages for
  // TCP, a slab slot for shm, a registered region for RDMA). Thread-safe.
  virtual Buffer Allocate(size_t size) = 0;

  // Sends header and parts as one scatter-gather list; the header's length
  // fields are set from the parts. Takes the frame's buffers and keeps them
  // alive until the kernel or hardware is done with them. Thread-safe;
  // frames from one thread go out in order. Blocks while the peer does not
  // read (backpressure). UNAVAILABLE once the connection is closed.
  virtual Status Send(Frame frame) = 0;

  // Starts delivering received frames to `handler`, which the connection
  // keeps alive until after OnClosed. Call once.
  virtual void Start(std::shared_ptr<ConnectionHandler> handler) = 0;

  // Closes the connection; OnClosed(reason) follows on the poller thread (if
  // Start was called). Idempotent, thread-safe.
  virtual void Close(const Status& reason) = 0;

  // The peer's address as a URI, for logs and ServerContext::peer().
  virtual std::string peer() const = 0;

  // Leader/follower (DESIGN.md, "Threads"): a thread about to wait for a
  // reply may drive the receive side itself instead of being woken by the
  // poller thread, which on these machines costs ~20 µs each way. Polls on
  // the calling thread, delivering frames to the handler exactly as the
  // poller would, until `done()` is true or about `budget` has passed; a
  // transport that can sleep on its own descriptor (tcp) spins for the
  // budget and then sleeps there until `done()`, so the kernel wakes this
  // thread directly. Returns false at once when the transport has no such
  // mode (the default) or another thread is polling; the caller then just
  // waits.
  virtual bool PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) {
    (void)done;
    (void)budget;
    return false;
  }
};

class Listener {
 public:
  // Stops accepting. Connections already accepted stay open.
  virtual ~Listener() = default;
  // The bound address as a URI; a port of 0 in the request is resolved here.
  virtual std::string uri() const = 0;
};

// Receives each accepted connection, on a poller thread.
using AcceptCallback = std::function<void(std::unique_ptr<Connection>)>;

class Transport {
 public:
  virtual ~Transport() = default;
  // INVALID_ARGUMENT for an address this transport cannot parse,
  // UNAVAILABLE if it cannot bind.
  virtual StatusOr<std::unique_ptr<Listener>> Listen(const Uri& uri, const ConnectionOptions& options,
                                                     AcceptCallback on_accept) = 0;
  // UNAVAILABLE if the peer cannot be reached.
  virtual StatusOr<std::unique_ptr<Connection>> Connect(const Uri& uri,
                                                        const ConnectionOptions& options) = 0;
};

}  // namespace zcrpc::transport
