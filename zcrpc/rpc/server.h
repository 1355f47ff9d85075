// Server: serves registered services on one or more listening URIs at once
// (tcp://127.0.0.1:50051, and the other schemes as they land). Requests are
// dispatched by method id; handlers run inline on the transport's poller
// thread (the fast path) or on a worker pool.
//
// Thread-safe. Register services before the first AddListener(). Do not
// call Shutdown() from inside a handler.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "zcrpc/rpc/service.h"
#include "zcrpc/base/status.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/transport/registry.h"

namespace boost::asio {
class thread_pool;
}

namespace zcrpc {

class ServerConnection;

struct ServerOptions {
  // What a request may carry; a larger one fails with RESOURCE_EXHAUSTED
  // and the connection keeps serving.
  FrameLimits limits;
  // 0: handlers run on the poller thread that read the request. N > 0:
  // handlers run on N worker threads, so a slow handler does not hold up the
  // connection (and cancels are seen while it runs).
  int worker_threads = 0;
  // Where schemes are looked up; nullptr means Registry::Default().
  transport::Registry* registry = nullptr;
};

class Server {
 public:
  explicit Server(ServerOptions options = {});
  // Shuts down if still running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Not owned; must outlive the server. ALREADY_EXISTS if a method path (or
  // its 32-bit id) is taken; FAILED_PRECONDITION after AddListener().
  Status RegisterService(Service* service);

  // Starts accepting on `uri` and returns the bound URI (port 0 is resolved:
  // "tcp://127.0.0.1:0" -> "tcp://127.0.0.1:41234").
  StatusOr<std::string> AddListener(std::string_view uri);

  // Stops accepting, closes every connection (calls in flight on them end
  // with UNAVAILABLE at the client), and waits for running handlers.
  void Shutdown();
  // Blocks until Shutdown() has been called and has finished.
  void Wait();

 private:
  friend class ServerConnection;
  const Service::Method* FindMethod(uint32_t id) const;
  void OnAccept(std::unique_ptr<transport::Connection> connection);
  void OnConnectionClosed(ServerConnection* connection);

  const ServerOptions options_;
  transport::Registry& registry_;
  // Written before the first listener, read-only after: lookups take no lock.
  absl::flat_hash_map<uint32_t, const Service::Method*> methods_;
  std::unique_ptr<boost::asio::thread_pool> workers_;

  std::mutex mu_;
  std::condition_variable changed_;  // a connection closed, or shutdown finished
  bool listening_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<transport::Listener>> listeners_ ABSL_GUARDED_BY(mu_);
  // Keyed by the raw pointer so a closing connection finds itself in one lookup.
  absl::flat_hash_map<ServerConnection*, std::shared_ptr<ServerConnection>> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace zcrpc
