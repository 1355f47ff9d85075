// The transport contract, version 2. A transport turns a URI into
// connections (Listen, Connect); a connection allocates send buffers in its
// own memory, queues frames as scatter-gather lists without ever blocking
// its caller, delivers received frames in order, and reports its end
// exactly once.
//
// The runtime (zcrpc/rpc/) sees transports only through this header and
// registry.h. Each implementation lives in its own folder under
// zcrpc/transport/ and is built from the shared pieces in
// zcrpc/transport/internal/. docs/transports.md explains how to write one;
// the contract suite (tests/transport/contract/) holds every transport to
// what is written here.
//
// Threads and re-entrancy, for every transport:
//  - A connection's frames are delivered by whichever thread owns its reads
//    at that moment: one of the transport's poller threads, or a caller
//    inside PollUntil(). That thread is "delivering" (InDeliveryThread()).
//  - Inside OnFrame/OnWritable/OnClosed a handler may: Send() on any
//    connection, Allocate(), Close() any connection, read capabilities(),
//    and hand work to another thread. It may not wait: not WaitWritable(),
//    not a blocking RPC (the runtime fails those at once with
//    FAILED_PRECONDITION), not a lock that a thread waiting on this
//    connection holds. A handler that must wait posts the work elsewhere
//    (ServerOptions::worker_threads, the default).
//  - Destroying a Connection handle from inside its own handler is allowed;
//    OnClosed still follows exactly once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "zcrpc/base/buffer.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/base/memory_quota.h"
#include "zcrpc/base/status.h"
#include "zcrpc/transport/uri.h"

namespace zcrpc::transport {

// What a connection is set up with. Both ends choose their own.
struct ConnectionOptions {
  // What this side accepts; sent to the peer in the preface, which then
  // reports them as its capabilities().
  FrameLimits limits;
  // Bytes queued but not yet handed to the kernel or the peer above which
  // the connection is not writable() (see Send()).
  uint64_t send_budget_bytes = 16u << 20;
  // A send queue that makes no progress for this long closes the
  // connection with UNAVAILABLE: the peer stopped reading.
  std::chrono::nanoseconds send_stall_timeout = std::chrono::seconds(20);
  // Connect: give up (DEADLINE_EXCEEDED) once this much time has passed
  // without a connection whose preface arrived. Listen: the same bound on
  // each accepted connection's handshake, which is then closed.
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(20);
  // A frame that has begun arriving and then gets no byte for this long
  // (a header followed by silence: a stalled or slow-loris peer) closes
  // the connection with UNAVAILABLE. For transports that receive frames
  // in pieces (tcp); 0: never.
  std::chrono::nanoseconds receive_stall_timeout = std::chrono::seconds(20);
  // Bodies announced but not yet received are reserved from this budget
  // (memory_quota.h); null: MemoryQuota::Default(). For transports that
  // allocate a body when its header arrives (tcp).
  std::shared_ptr<MemoryQuota> memory_quota;
  // For transports whose own protocol pings and ages connections (grpc://:
  // HTTP/2 PING and GOAWAY, as gRPC's channel arguments); zcrpc's own
  // transports leave these to the runtime (rpc/connection_limits.h), which
  // sets them from the same options. 0: the protocol's default.
  std::chrono::nanoseconds keepalive_time{0};
  std::chrono::nanoseconds keepalive_timeout{0};
  // Listen only.
  std::chrono::nanoseconds max_connection_idle{0};
  std::chrono::nanoseconds max_connection_age{0};
  std::chrono::nanoseconds max_connection_age_grace{0};
  // Listen only: the full path and kind of every method the server serves,
  // for transports whose peers do not say whether a call streams, or that
  // name methods to a library ahead of time (grpc://: every gRPC call is a
  // stream of messages, and the unary methods are registered with gRPC,
  // whose registered unary path costs less than its generic one). Set by
  // the runtime's Server.
  std::vector<std::pair<std::string, MethodKind>> served_methods;
};

// What a connection can carry, known once the preface is exchanged (before
// Connect's callback runs or an accepted connection is handed over).
struct Capabilities {
  // The largest body (metadata + message + attachment section) a frame may
  // have: the smaller of the peer's announced limit and what this transport
  // can move at once (the shm slab, say). Send() refuses larger frames with
  // RESOURCE_EXHAUSTED.
  uint64_t max_body_bytes = 0;
  // The most attachments one frame may have: the peer's limit, or the
  // transport's if smaller (shm descriptors hold 9).
  uint32_t max_attachments = 0;
  // The peer's metadata limit.
  uint32_t max_metadata_bytes = 0;
  // Feature bits both ends announced (docs/wire.md, "Preface").
  uint64_t features = 0;
  // PollUntil() can read on the caller's thread.
  bool caller_can_poll = false;
  // How many bytes of received frames this side can hold, unread, before
  // the peer has no memory left to send in (shm: the peer's slab, which
  // the frames this side holds live in). 0: bounded by this process's
  // memory alone (tcp, loopback). The runtime keeps each stream's window
  // to an eighth of it (docs/streaming.md, "Flow control").
  uint64_t receive_memory_bytes = 0;
};

// The runtime's side of a connection. Called by the delivering thread of
// that connection, never two at a time for one connection.
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;
  // A complete frame arrived, in arrival order. The frame's buffers are the
  // handler's. If the body was over this side's limits, frame.body_discarded
  // is set and the parts are empty (the connection stays open).
  virtual void OnFrame(Frame frame) = 0;
  // The send queue fell back under the budget after Send() or writable()
  // had reported it full. Not called for a connection that is closing.
  virtual void OnWritable() {}
  // The connection is closed: by the peer, by an error (a malformed frame,
  // a socket error, a stalled send queue), or by Close(). Called exactly
  // once, after the last OnFrame and OnWritable; the connection drops its
  // reference to the handler afterwards.
  virtual void OnClosed(const Status& reason) = 0;
};

class Connection {
 public:
  // Closes the connection (as Close()) if it is still open. Buffers that
  // came from it stay valid: they keep the memory they live in alive.
  virtual ~Connection() = default;

  // A send buffer of `size` bytes in the transport's own memory (pages for
  // tcp, a slab block for shm, a registered region for RDMA). Any thread.
  // Never fails: when the transport's own memory is exhausted the buffer
  // comes from the process's BufferPool, and Send() copies it in (counted).
  virtual Buffer Allocate(size_t size) = 0;

  // Queues the frame (header and parts, one scatter-gather list; the
  // header's length fields are set from the parts) and returns without
  // waiting for the peer, on any thread. Takes the frame's buffers and
  // keeps them alive until the kernel or the peer is done with them.
  // Frames queued by one thread go out in that order; a frame queued after
  // another returned (on any thread) goes out after it.
  //
  // The byte budget is soft: Send() always queues, so a poller thread never
  // waits; callers that can wait check writable() first (WaitWritable()).
  // Errors, with the frame dropped: UNAVAILABLE once closed;
  // RESOURCE_EXHAUSTED or INVALID_ARGUMENT for a frame over capabilities().
  virtual Status Send(Frame frame) = 0;

  // Whether the bytes queued are under ConnectionOptions::send_budget_bytes.
  // A false answer arms one OnWritable() for when they are.
  virtual bool writable() = 0;

  // Blocks the calling thread until writable(), the connection closes
  // (UNAVAILABLE) or `deadline` on Clock::Real() passes
  // (DEADLINE_EXCEEDED; 0 = no deadline). FAILED_PRECONDITION at once on a
  // delivering thread (see the top of this file).
  virtual Status WaitWritable(int64_t deadline_nanos) = 0;

  // Fixed once the connection exists. Any thread.
  virtual Capabilities capabilities() const = 0;

  // Starts delivering received frames to `handler`, which the connection
  // keeps alive until after OnClosed. Call once.
  virtual void Start(std::shared_ptr<ConnectionHandler> handler) = 0;

  // Closes the connection; OnClosed(reason) follows on a delivering thread
  // (if Start was called). The first reason wins. Idempotent, any thread.
  virtual void Close(const Status& reason) = 0;

  // The peer's address as a URI, for logs and ServerContext::peer().
  virtual std::string peer() const = 0;

  // Leader/follower (docs/architecture.md, "Threads"): a thread about to
  // wait for a reply may drive the receive side itself instead of being
  // woken by the poller thread, which on these machines costs ~20 µs each
  // way. Delivers frames on the calling thread, exactly as the poller
  // would, until `done()` is true or about `budget` has passed (a transport
  // that can sleep on its own descriptor, tcp, may sleep there until
  // `done()`, so the kernel wakes this thread directly). Returns false at
  // once when the transport has no such mode or another thread is reading;
  // the caller then just waits.
  virtual bool PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) = 0;
};

class Listener {
 public:
  // Stops accepting; returns once no AcceptCallback is running or will
  // start. Connections already accepted stay open.
  virtual ~Listener() = default;
  // The bound address as a URI; a port of 0 in the request is resolved here.
  virtual std::string uri() const = 0;
};

// Receives each accepted connection whose preface arrived, on a poller
// thread, as a delivering thread (InDeliveryThread() is true): it must not
// wait, exactly like OnFrame.
using AcceptCallback = std::function<void(std::unique_ptr<Connection>)>;
// Receives the connection, or why there is none: UNAVAILABLE (refused,
// unreachable, reset during the preface), DEADLINE_EXCEEDED (connect_timeout
// passed), INVALID_ARGUMENT or FAILED_PRECONDITION (the peer is not a zcrpc
// peer, or speaks a wire version this side does not). Runs exactly once, on
// a transport thread, never inside Connect(), as a delivering thread: it
// must not wait (a ConnectAndWait there fails with FAILED_PRECONDITION).
// One exception: a transport that needs a thread to connect and cannot get
// one (the process is out of threads) calls back inside Connect() with
// RESOURCE_EXHAUSTED rather than never.
using ConnectCallback = std::function<void(StatusOr<std::unique_ptr<Connection>>)>;

class Transport {
 public:
  // Destroying a transport closes its connections; it must outlive its
  // listeners (the default registry's transports live until exit).
  virtual ~Transport() = default;

  // Checks a URI's address and options without touching the network:
  // INVALID_ARGUMENT, naming the bad part, for anything Listen or Connect
  // would refuse to parse. Channel::Create and Server::AddListener call it
  // first.
  virtual Status ValidateAddress(const Uri& uri) const = 0;

  // INVALID_ARGUMENT for an address this transport cannot parse,
  // UNAVAILABLE if it cannot bind. Any thread.
  virtual StatusOr<std::unique_ptr<Listener>> Listen(const Uri& uri, const ConnectionOptions& options,
                                                     AcceptCallback on_accept) = 0;

  // Starts connecting and returns at once; `done` gets the result (see
  // ConnectCallback). Never blocks the caller on the network. Any thread.
  virtual void Connect(const Uri& uri, const ConnectionOptions& options, ConnectCallback done) = 0;
};

// Opened by a thread that sends one request and then waits for its reply
// with PollUntil() on the same connection (a blocking call), around both
// (Channel::CallUnary). It tells the transport that nobody else needs to
// watch the connection for that reply: this thread reads it itself. A
// transport whose poller must be re-armed with a system call each time a
// caller hands the socket back (tcp) then leaves the poller off between
// such calls; it re-arms it for frames sent outside any scope (a callback
// call's request, a cancel), for a scoped caller whose PollUntil() returns
// false (it then relies on the poller), and soon after callers stop taking
// the socket (docs/transports.md, tcp, "Who reads"). A peer's close is
// never left waiting.
//
// Sending without the scope is always correct; it only costs the re-arm on
// every call. Inside the scope, send only the request whose reply this
// thread polls for, and poll on the connection it went out on: another
// frame sent there, or polling elsewhere, can leave a reply waiting up to
// the transport's idle re-arm (tcp: about 10 ms), never lost.
//
// Thread-local and lock-free; scopes nest. For threads that may wait (a
// delivering thread's blocking call fails anyway). Transports whose
// pollers need no re-arming (shm, loopback) ignore it.
class PollsOwnReplyScope {
 public:
  PollsOwnReplyScope() { ++Depth(); }
  ~PollsOwnReplyScope() { --Depth(); }
  PollsOwnReplyScope(const PollsOwnReplyScope&) = delete;
  PollsOwnReplyScope& operator=(const PollsOwnReplyScope&) = delete;

  // True inside such a scope on the calling thread. For transports.
  static bool Active() { return Depth() > 0; }

 private:
  static int& Depth() {
    static thread_local int depth = 0;
    return depth;
  }
};

// True while the calling thread delivers some connection's frames (inside
// OnFrame, OnWritable or OnClosed, on a poller or inside PollUntil). The
// runtime uses it to fail a blocking call that would wait for a reply only
// this thread could read. Transports mark delivery with
// internal::DeliveryScope (zcrpc/transport/internal/delivery_scope.h).
bool InDeliveryThread();

// Connect() for code that may block: tests, tools, setup paths. Waits for
// the callback on the calling thread. FAILED_PRECONDITION on a delivering
// thread.
StatusOr<std::unique_ptr<Connection>> ConnectAndWait(Transport& transport, const Uri& uri,
                                                     const ConnectionOptions& options);

}  // namespace zcrpc::transport
