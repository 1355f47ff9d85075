#include "zcrpc/rpc/server.h"

#include <cstring>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "zcrpc/rpc/call_table.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/rpc/server_context.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc {

// One accepted connection: dispatches its requests and tracks the calls
// running on it so a cancel frame reaches the right ServerContext.
class ServerConnection final : public transport::ConnectionHandler,
                               public std::enable_shared_from_this<ServerConnection> {
 public:
  ServerConnection(Server* server, std::unique_ptr<transport::Connection> connection)
      : server_(server), connection_(std::move(connection)), peer_(connection_->peer()) {}

  transport::Connection& connection() { return *connection_; }

  void OnFrame(Frame frame) override {
    switch (frame.header.type) {
      case FrameType::kRequest:
        return OnRequest(std::move(frame));
      case FrameType::kCancel: {
        std::lock_guard lock(mu_);
        if (auto it = running_.find(frame.header.call_id); it != running_.end()) it->second->MarkCancelled();
        return;
      }
      default:
        connection_->Close(absl::InvalidArgumentError(absl::StrCat(
            "client ", peer_, " sent a frame of type ", static_cast<int>(frame.header.type), " to a server")));
    }
  }

  void OnClosed(const Status&) override {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      for (auto& [id, ctx] : running_) ctx->MarkCancelled();
    }
    server_->OnConnectionClosed(this);
  }

 private:
  void OnRequest(Frame frame) {
    const WireHeader& h = frame.header;
    if (frame.body_discarded) {
      return Reply(h.call_id,
                   absl::ResourceExhaustedError(absl::StrCat("request of ", h.body_len(),
                                                             " bytes exceeds the server's limit of ",
                                                             server_->options_.limits.max_body_bytes)),
                   nullptr, Buffer());
    }
    const Service::Method* method = server_->FindMethod(h.method_id);
    if (method == nullptr) {
      return Reply(h.call_id,
                   absl::UnimplementedError(absl::StrFormat(
                       "no service on this server has a method with id 0x%08x (unknown service or method)",
                       h.method_id)),
                   nullptr, Buffer());
    }
    if (server_->workers_) {
      boost::asio::post(*server_->workers_, [self = shared_from_this(), method, f = std::move(frame)]() mutable {
        self->Run(*method, std::move(f));
      });
    } else {
      Run(*method, std::move(frame));
    }
  }

  void Run(const Service::Method& method, Frame frame) {
    const CallId call_id = frame.header.call_id;
    const uint64_t timeout_us = frame.header.timeout_us;
    int64_t deadline = 0;
    if (timeout_us != 0) deadline = Clock::Real().NowNanos() + static_cast<int64_t>(timeout_us) * 1000;
    ServerContext ctx(connection_.get(), peer_, method.descriptor.path, deadline);
    if (Status md = DecodeMetadata(frame.metadata.span(), &ctx.client_metadata_); !md.ok()) {
      connection_->Close(absl::InvalidArgumentError(
          absl::StrCat("malformed request metadata from ", peer_, ": ", md.message())));
      return;
    }
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      running_[call_id] = &ctx;
    }
    ctx.request_attachments_ = std::move(frame.attachments);
    Buffer response;
    Status status = method.handler(&ctx, frame.message.span(), &response);
    frame = Frame{};  // the request's buffers go back to the pool before the reply goes out
    ctx.request_attachments_.clear();
    {
      std::lock_guard lock(mu_);
      running_.erase(call_id);
    }
    if (ctx.cancelled_.load(std::memory_order_acquire)) return;  // nobody waits for this reply
    // Past the deadline the caller is owed DEADLINE_EXCEEDED, whatever the
    // handler made of its IsCancelled() (gRPC does the same).
    if (deadline != 0 && Clock::Real().NowNanos() >= deadline) {
      status = absl::DeadlineExceededError("deadline exceeded while the server handled the call");
    }
    Reply(call_id, status, &ctx, std::move(response));
  }

  void Reply(CallId call_id, const Status& status, ServerContext* ctx, Buffer response) {
    Frame reply;
    reply.header.type = FrameType::kResponse;
    reply.header.call_id = call_id;
    reply.header.status_code = static_cast<uint32_t>(status.code());
    if (ctx != nullptr && !ctx->trailing_metadata().empty()) {
      reply.metadata = connection_->Allocate(EncodedMetadataSize(ctx->trailing_metadata()));
      EncodeMetadata(ctx->trailing_metadata(), reply.metadata.span());
    }
    if (status.ok()) {
      reply.message = std::move(response);
      if (ctx != nullptr) reply.attachments = std::move(ctx->response_attachments_);
    } else if (!status.message().empty()) {
      reply.message = connection_->Allocate(status.message().size());
      std::memcpy(reply.message.data(), status.message().data(), status.message().size());
    }
    const bool had_attachments = !reply.attachments.empty();
    Status sent = connection_->Send(std::move(reply));
    // A reply the transport refused (e.g. more attachments than it carries)
    // must still end the call; a closed connection has nobody to tell.
    if (!sent.ok() && had_attachments && sent.code() != StatusCode::kUnavailable) {
      Reply(call_id, absl::InternalError(absl::StrCat("the response could not be sent: ", sent.message())), nullptr,
            Buffer());
    }
  }

  Server* const server_;
  std::unique_ptr<transport::Connection> connection_;
  const std::string peer_;
  std::mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<CallId, ServerContext*> running_ ABSL_GUARDED_BY(mu_);
};

Server::Server(ServerOptions options)
    : options_(options), registry_(options.registry ? *options.registry : transport::Registry::Default()) {
  if (options_.worker_threads > 0) {
    workers_ = std::make_unique<boost::asio::thread_pool>(static_cast<size_t>(options_.worker_threads));
  }
}

Server::~Server() { Shutdown(); }

Status Server::RegisterService(Service* service) {
  std::unique_lock lock(mu_);
  if (listening_) return absl::FailedPreconditionError("register services before the first AddListener()");
  for (const Service::Method& m : service->methods()) {
    if (auto it = methods_.find(m.descriptor.id); it != methods_.end()) {
      return absl::AlreadyExistsError(absl::StrCat("method ", ToAbsl(m.descriptor.path), " collides with ",
                                                   ToAbsl(it->second->descriptor.path), " (same path or id)"));
    }
  }
  for (const Service::Method& m : service->methods()) methods_[m.descriptor.id] = &m;
  return absl::OkStatus();
}

const Service::Method* Server::FindMethod(uint32_t id) const {
  auto it = methods_.find(id);
  return it == methods_.end() ? nullptr : it->second;
}

StatusOr<std::string> Server::AddListener(std::string_view uri_text) {
  ZCRPC_ASSIGN_OR_RETURN(transport::Uri uri, transport::Uri::Parse(uri_text));
  ZCRPC_ASSIGN_OR_RETURN(transport::Transport * transport, registry_.Find(uri.scheme));
  {
    std::unique_lock lock(mu_);
    if (shutting_down_) return absl::FailedPreconditionError("server is shut down");
    listening_ = true;
  }
  ZCRPC_ASSIGN_OR_RETURN(
      std::unique_ptr<transport::Listener> listener,
      transport->Listen(uri, transport::ConnectionOptions{options_.limits},
                        [this](std::unique_ptr<transport::Connection> c) { OnAccept(std::move(c)); }));
  std::string bound = listener->uri();
  std::unique_lock lock(mu_);
  listeners_.push_back(std::move(listener));
  return bound;
}

void Server::OnAccept(std::unique_ptr<transport::Connection> connection) {
  auto sc = std::make_shared<ServerConnection>(this, std::move(connection));
  {
    std::unique_lock lock(mu_);
    if (shutting_down_) return;  // dropping it closes it
    connections_.emplace(sc.get(), sc);
  }
  sc->connection().Start(sc);
}

void Server::OnConnectionClosed(ServerConnection* connection) {
  std::unique_lock lock(mu_);
  connections_.erase(connection);
  changed_.notify_all();
}

void Server::Shutdown() {
  std::vector<std::unique_ptr<transport::Listener>> listeners;
  std::vector<std::shared_ptr<ServerConnection>> connections;
  {
    std::unique_lock lock(mu_);
    if (shutting_down_) {
      changed_.wait(lock, [this] { return shut_down_; });
      return;
    }
    shutting_down_ = true;
    listeners.swap(listeners_);
    for (const auto& [raw, connection] : connections_) connections.push_back(connection);
  }
  listeners.clear();
  for (auto& c : connections) c->connection().Close(absl::UnavailableError("server shutting down"));
  connections.clear();
  if (workers_) workers_->join();
  std::unique_lock lock(mu_);
  // Every connection reports OnClosed on its poller thread, then leaves the set.
  changed_.wait(lock, [this] { return connections_.empty(); });
  shut_down_ = true;
  changed_.notify_all();
}

void Server::Wait() {
  std::unique_lock lock(mu_);
  changed_.wait(lock, [this] { return shut_down_; });
}

}  // namespace zcrpc
