// Server: serves registered services on one or more listening URIs at once
// (tcp://127.0.0.1:50051, shm://orders, ...). A request names its method by
// full path (docs/wire.md, "Method identity"); an unknown path gets
// UNIMPLEMENTED naming it.
//
// Threads: a streaming method's handler runs on a thread of its own for the
// stream's life (it waits for messages). By default unary handlers run on a
// pool of worker threads, so a
// handler that blocks (on a lock, a disk, another RPC) never stalls the
// transport's poller or calls on other connections, and may make blocking
// calls itself. ServerOptions::worker_threads = 0 opts in to running
// handlers inline on the thread that read the request: no thread hand-off,
// the fastest path for short handlers that never block
// (docs/architecture.md has the figures); such a handler must not make a
// blocking call (it fails with FAILED_PRECONDITION).
//
// Every call in flight is in the server's CallTable; the process's
// DeadlineSweeper cancels a call's context when its deadline passes.
//
// Thread-safe. Register services before the first AddListener(). Do not
// call Shutdown() or Wait() from inside a handler.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "zcrpc/base/status.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/rpc/call_table.h"
#include "zcrpc/base/memory_quota.h"
#include "zcrpc/rpc/connection_limits.h"
#include "zcrpc/rpc/deadline_sweeper.h"
#include "zcrpc/rpc/service.h"
#include "zcrpc/transport/registry.h"

namespace boost::asio {
class thread_pool;
}

namespace zcrpc {

class ServerConnection;
namespace internal {
class RequestWaiter;
class ServerCall;
class ServerCallbackCall;
}

struct ServerOptions {
  // What a request may carry; a larger one fails with RESOURCE_EXHAUSTED
  // and the connection keeps serving. Announced to clients.
  FrameLimits limits;
  // Handlers run on this many worker threads (kAutoWorkerThreads: one per
  // core, at least 2). 0: handlers run inline on the thread that read the
  // request (see the top of this file).
  static constexpr int kAutoWorkerThreads = -1;
  int worker_threads = kAutoWorkerThreads;
  // Calls in flight on the whole server; one more is answered with
  // RESOURCE_EXHAUSTED.
  uint32_t max_calls_in_flight = 65536;
  // The send queue of each connection (transport.h, ConnectionOptions).
  uint64_t send_budget_bytes = 16u << 20;
  std::chrono::nanoseconds send_stall_timeout = std::chrono::seconds(20);
  // Connections (docs/reliability.md): a connection whose zcrpc handshake
  // has not completed this long after it was accepted is closed.
  std::chrono::nanoseconds handshake_timeout = std::chrono::seconds(20);
  // A frame begun and then not continued for this long (a header followed
  // by silence) closes its connection; transports that receive frames
  // whole (shm) have nothing to time. 0: never.
  std::chrono::nanoseconds receive_stall_timeout = std::chrono::seconds(20);
  // Connections each listener keeps at once; one more has its requests
  // answered RESOURCE_EXHAUSTED, and is closed 1 s after it was accepted
  // (once no reply is still going out).
  uint32_t max_connections_per_listener = 16384;
  // Bodies of requests still arriving are reserved from this budget, shared
  // with whatever else names it (memory_quota.h); one that does not fit is
  // discarded and answered RESOURCE_EXHAUSTED. nullptr: the process's
  // MemoryQuota::Default() (1 GiB).
  std::shared_ptr<MemoryQuota> memory_quota;
  // Keepalive pings both ways, and the idle and age limits of a connection
  // (connection_limits.h).
  KeepaliveOptions keepalive;
  ConnectionLifetime connection_lifetime;
  // Streams: bytes of messages a client may send ahead of the handler's
  // reads, per stream (docs/streaming.md, "Flow control"); at least 64 KiB.
  uint64_t stream_window_bytes = 1u << 20;
  // Streams: end a stream with DEADLINE_EXCEEDED, which the client gets
  // too, after this long without a frame either way (0: never).
  std::chrono::nanoseconds stream_idle_timeout{0};
  // Where schemes are looked up; nullptr means Registry::Default().
  transport::Registry* registry = nullptr;
  // Who cancels calls at their deadline; nullptr means the process's
  // DeadlineSweeper::Default(). Deadlines are on the sweeper's clock.
  DeadlineSweeper* sweeper = nullptr;
};

class Server final : private DeadlineSweeper::Client {
 public:
  explicit Server(ServerOptions options = {});
  // Shuts down at once (Shutdown(now)) if still running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Not owned; must outlive the server. ALREADY_EXISTS if a method path is
  // taken; FAILED_PRECONDITION after AddListener().
  Status RegisterService(Service* service);

  // Starts accepting on `uri` and returns the bound URI (port 0 is resolved:
  // "tcp://127.0.0.1:0" -> "tcp://127.0.0.1:41234"). INVALID_ARGUMENT for a
  // malformed URI, an unknown scheme or an option the transport refuses;
  // UNAVAILABLE if it cannot bind.
  StatusOr<std::string> AddListener(std::string_view uri);

  // Stops accepting at once and answers new requests with UNAVAILABLE; lets
  // the calls in flight finish until `deadline`, then cancels the rest
  // (their contexts turn IsCancelled() and their clients get CANCELLED);
  // then closes every connection and waits for running handlers to return.
  // Every call ends with exactly one status at its client. A second call
  // waits for the first to finish.
  void Shutdown(std::chrono::steady_clock::time_point deadline);
  // Shutdown with no deadline: waits for every call in flight to finish.
  void Shutdown() { Shutdown(std::chrono::steady_clock::time_point::max()); }
  // Blocks until Shutdown() has been called (by another thread, a signal
  // handler's helper thread, ...) and has finished.
  void Wait();

  // Calls in flight right now.
  uint32_t calls_in_flight() const { return calls_.size(); }

 private:
  friend class ServerConnection;
  friend class internal::ServerCallbackCall;
  friend class internal::RequestWaiter;
  const Service::Method* FindMethod(std::string_view path) const;
  // Connections a listener holds now, against max_connections_per_listener.
  struct ListenerLoad {
    std::atomic<uint32_t> connections{0};
  };
  void OnAccept(std::unique_ptr<transport::Connection> connection, const std::shared_ptr<ListenerLoad>& load);
  void OnConnectionClosed(ServerConnection* connection);
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  int64_t Now() const { return sweeper_->clock().NowNanos(); }

  // Takes `call` out of the table if it is still there (exactly once).
  bool RemoveCall(internal::ServerCall* call);
  // Runs `handler` on a thread of its own (a streaming method's handler);
  // Shutdown waits for it. False if no thread could be started.
  bool RunOnStreamThread(std::function<void()> handler);

  void SweepExpired(int64_t now_nanos) override;
  bool HasCallsInFlight() const override { return calls_.size() > 0; }
  int64_t NextTimerNanos() const override { return next_timer_nanos_.load(std::memory_order_relaxed); }
  // Keepalive, idle and age (ConnectionKeeper), for every connection.
  void CheckConnectionTimers(int64_t now_nanos);
  // Ends every call in flight on `connection` with `why`, at its client too.
  void EndCallsOn(ServerConnection* connection, const Status& why);
  // How often they are checked: with every timer off, only refused
  // connections need it (to close them).
  std::chrono::nanoseconds TimerInterval() const {
    return timer_interval_.count() > 0 ? timer_interval_ : std::chrono::milliseconds(100);
  }

  const ServerOptions options_;
  transport::Registry& registry_;
  DeadlineSweeper* const sweeper_;
  // Written before the first listener, read-only after: lookups take no lock.
  absl::flat_hash_map<std::string, const Service::Method*> methods_;
  std::unique_ptr<boost::asio::thread_pool> workers_;
  // Handlers still running that Shutdown waits for: streaming handlers'
  // threads and reactors not yet at OnDone. Shared with them, so the last
  // one may let go after the server is gone.
  struct Handlers {
    void Enter();
    void Leave();
    std::mutex mu;
    std::condition_variable none_left;
    int running ABSL_GUARDED_BY(mu) = 0;
  };
  std::shared_ptr<Handlers> handlers_;
  CallTable<internal::ServerCall> calls_;
  std::atomic<bool> draining_{false};
  // How often connections' timers are checked (0: never), and when next
  // (0: no connection to check).
  const std::chrono::nanoseconds timer_interval_;
  std::atomic<int64_t> next_timer_nanos_{0};

  std::mutex mu_;
  std::condition_variable changed_;  // a connection closed, a call ended, or shutdown finished
  bool listening_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<transport::Listener>> listeners_ ABSL_GUARDED_BY(mu_);
  // Keyed by the raw pointer so a closing connection finds itself in one lookup.
  absl::flat_hash_map<ServerConnection*, std::shared_ptr<ServerConnection>> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace zcrpc
