// Setup of the loopback transport: names, listeners, Connect, pollers,
// shutdown. The per-message path is in pipe_datapath.cc.
#include "zcrpc/transport/loopback/loopback_transport.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/transport/internal/delivery_scope.h"
#include "zcrpc/transport/loopback/pipe.h"
#include "zcrpc/transport/loopback/poller.h"

namespace zcrpc::transport::loopback {

// One Listen()'s state, shared by the Listener handle, the name table and
// pending connects.
struct ListenerState {
  // Fixed once published by Core::Bind.
  std::string name;
  ConnectionOptions options;
  Faults faults;
  AcceptCallback on_accept;

  std::mutex mu;
  std::condition_variable idle;
  bool closed ABSL_GUARDED_BY(mu) = false;
  int running ABSL_GUARDED_BY(mu) = 0;  // AcceptCallbacks in progress
  std::thread::id running_on ABSL_GUARDED_BY(mu);
};

// What the transport, its listeners and its connections share.
class Core : public std::enable_shared_from_this<Core> {
 public:
  explicit Core(int poller_threads) {
    for (int i = 0; i < std::max(1, poller_threads); ++i) pollers_.push_back(std::make_shared<Poller>());
  }

  std::shared_ptr<Poller> NextPoller() {
    return pollers_[next_poller_.fetch_add(1, std::memory_order_relaxed) % pollers_.size()];
  }

  // Claims `name` (expanding a trailing '*'). UNAVAILABLE if it is taken.
  // The state is complete before it is published: a connect on another
  // thread may find it at once.
  StatusOr<std::shared_ptr<ListenerState>> Bind(std::string name, const ConnectionOptions& options,
                                                const Faults& faults, AcceptCallback on_accept) {
    std::lock_guard lock(mu_);
    if (shut_down_) return absl::UnavailableError("loopback transport is shutting down");
    if (!name.empty() && name.back() == '*') {
      name.pop_back();
      std::string unique;
      do {
        unique = absl::StrCat(name, ++next_unique_);
      } while (listeners_.contains(unique));
      name = std::move(unique);
    } else if (listeners_.contains(name)) {
      return absl::UnavailableError(absl::StrCat("loopback://", name, " is already listened on"));
    }
    auto state = std::make_shared<ListenerState>();
    state->name = name;
    state->options = options;
    state->faults = faults;
    state->on_accept = std::move(on_accept);
    listeners_[name] = state;
    return state;
  }

  void Unbind(const ListenerState& state) {
    std::lock_guard lock(mu_);
    auto it = listeners_.find(state.name);
    if (it != listeners_.end() && it->second.get() == &state) listeners_.erase(it);
  }

  std::shared_ptr<ListenerState> Find(const std::string& name) {
    std::lock_guard lock(mu_);
    auto it = listeners_.find(name);
    return it == listeners_.end() ? nullptr : it->second;
  }

  // The faults an end accepted by `state` starts with.
  Faults AcceptedFaults(const ListenerState& state) {
    std::lock_guard lock(mu_);
    auto it = fault_overrides_.find(state.name);
    return it == fault_overrides_.end() ? state.faults : it->second;
  }
  void SetFaults(std::string_view name, const std::optional<Faults>& faults) {
    std::lock_guard lock(mu_);
    if (faults.has_value()) fault_overrides_[std::string(name)] = *faults;
    else fault_overrides_.erase(std::string(name));
  }

  // A new pipe, remembered so shutdown can close it. Null once shut down.
  std::shared_ptr<Pipe> NewPipe(EndpointSetup client, EndpointSetup server) {
    std::lock_guard lock(mu_);
    if (shut_down_) return nullptr;
    auto pipe = std::make_shared<Pipe>(std::move(client), std::move(server));
    // Forget dead pipes now and then, so the list stays proportional to
    // the live connections.
    if (pipes_.size() >= 2 * live_after_prune_ + 64) {
      std::erase_if(pipes_, [](const std::weak_ptr<Pipe>& p) { return p.expired(); });
      live_after_prune_ = pipes_.size();
    }
    pipes_.push_back(pipe);
    return pipe;
  }
  uint64_t NextConnectionId() { return next_connection_.fetch_add(1, std::memory_order_relaxed) + 1; }

  // Closes every connection, lets their OnClosed run, stops the pollers.
  void Shutdown() {
    std::vector<std::weak_ptr<Pipe>> pipes;
    {
      std::lock_guard lock(mu_);
      shut_down_ = true;
      pipes.swap(pipes_);
    }
    const Status reason = absl::UnavailableError("loopback transport destroyed");
    for (const std::weak_ptr<Pipe>& weak : pipes) {
      if (std::shared_ptr<Pipe> pipe = weak.lock()) {
        pipe->end(0).Close(reason);
        pipe->end(1).Close(reason);
      }
    }
    for (const std::shared_ptr<Poller>& poller : pollers_) poller->Stop();
  }

 private:
  std::vector<std::shared_ptr<Poller>> pollers_;
  std::atomic<uint64_t> next_poller_{0};
  std::atomic<uint64_t> next_connection_{0};
  std::mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_unique_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, std::shared_ptr<ListenerState>> listeners_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Faults> fault_overrides_ ABSL_GUARDED_BY(mu_);
  std::vector<std::weak_ptr<Pipe>> pipes_ ABSL_GUARDED_BY(mu_);
  size_t live_after_prune_ ABSL_GUARDED_BY(mu_) = 0;
};

namespace {

class LoopbackListener final : public Listener {
 public:
  LoopbackListener(std::shared_ptr<Core> core, std::shared_ptr<ListenerState> state)
      : core_(std::move(core)), state_(std::move(state)) {}

  ~LoopbackListener() override {
    core_->Unbind(*state_);  // no new connect finds it
    std::unique_lock lock(state_->mu);
    state_->closed = true;   // a connect that found it earlier is refused
    // Wait for a running AcceptCallback, unless it is this very thread
    // (a callback that drops its own listener).
    state_->idle.wait(lock, [&] {
      return state_->running == 0 || state_->running_on == std::this_thread::get_id();
    });
  }

  std::string uri() const override { return "loopback://" + state_->name; }

 private:
  std::shared_ptr<Core> core_;
  std::shared_ptr<ListenerState> state_;
};

int64_t Micros(uint64_t us) { return static_cast<int64_t>(us) * 1000; }

// The connect's second half, on the client end's poller once the preface
// "took" its connect_delay_us.
void FinishConnect(const std::shared_ptr<Core>& core, const std::string& name, const ConnectionOptions& options,
                   const Faults& client_faults, const std::shared_ptr<Poller>& client_poller,
                   const ConnectCallback& done) {
  std::shared_ptr<ListenerState> listener = core->Find(name);
  if (listener == nullptr) {
    done(absl::UnavailableError(absl::StrCat("nobody listens on loopback://", name)));
    return;
  }
  const uint64_t id = core->NextConnectionId();
  EndpointSetup client{client_poller, options, client_faults, "loopback://" + name};
  EndpointSetup server{core->NextPoller(), listener->options, core->AcceptedFaults(*listener),
                       absl::StrCat("loopback://", name, "#client-", id)};
  std::shared_ptr<Pipe> pipe = core->NewPipe(std::move(client), std::move(server));
  if (pipe == nullptr) {
    done(absl::UnavailableError("loopback transport is shutting down"));
    return;
  }
  auto client_connection = std::make_unique<LoopbackConnection>(pipe->shared_end(0));
  auto server_connection = std::make_unique<LoopbackConnection>(pipe->shared_end(1));
  bool refused = false;
  {
    std::lock_guard lock(listener->mu);
    refused = listener->closed;
    if (!refused) {
      ++listener->running;
      listener->running_on = std::this_thread::get_id();
    }
  }
  if (refused) {
    done(absl::UnavailableError(absl::StrCat("loopback://", name, " stopped listening")));
    return;  // both handles go: the pipe closes, nobody started it
  }
  {
    internal::DeliveryScope scope;  // an accept callback must not wait (transport.h)
    listener->on_accept(std::move(server_connection));
  }
  {
    std::lock_guard lock(listener->mu);
    --listener->running;
    listener->idle.notify_all();
  }
  done(std::move(client_connection));
}

}  // namespace

// ---- LoopbackTransport ----

LoopbackTransport::LoopbackTransport(Options options) : core_(std::make_shared<Core>(options.poller_threads)) {}

LoopbackTransport::~LoopbackTransport() { core_->Shutdown(); }

Status LoopbackTransport::ValidateAddress(const Uri& uri) const {
  if (uri.scheme != "loopback") {
    return absl::InvalidArgumentError(absl::StrCat("'", uri.ToString(), "' is not a loopback:// URI"));
  }
  return LoopbackAddress::Parse(uri.address).status();
}

StatusOr<std::unique_ptr<Listener>> LoopbackTransport::Listen(const Uri& uri, const ConnectionOptions& options,
                                                              AcceptCallback on_accept) {
  ZCRPC_RETURN_IF_ERROR(ValidateAddress(uri));
  StatusOr<LoopbackAddress> address = LoopbackAddress::Parse(uri.address);
  StatusOr<std::shared_ptr<ListenerState>> state =
      core_->Bind(address->name, options, address->faults, std::move(on_accept));
  if (!state.ok()) return state.status();
  return std::unique_ptr<Listener>(new LoopbackListener(core_, *std::move(state)));
}

void LoopbackTransport::Connect(const Uri& uri, const ConnectionOptions& options, ConnectCallback user_done) {
  // The callback runs as a delivering thread: it must not wait (transport.h).
  ConnectCallback done = [user_done = std::move(user_done)](StatusOr<std::unique_ptr<Connection>> c) {
    internal::DeliveryScope scope;
    user_done(std::move(c));
  };
  std::shared_ptr<Poller> poller = core_->NextPoller();
  Status valid = ValidateAddress(uri);
  StatusOr<LoopbackAddress> address = valid.ok() ? LoopbackAddress::Parse(uri.address) : valid;
  if (address.ok() && address->wants_unique_name()) {
    address = absl::InvalidArgumentError(absl::StrCat("cannot connect to '", uri.ToString(),
                                                      "': a trailing '*' is for listening"));
  }
  if (!address.ok()) {
    // Never inside Connect(): the answer comes from the poller.
    poller->Post([done = std::move(done), status = address.status()] { done(status); });
    return;
  }
  // The preface "takes" the client's connect_delay_us plus the listener's.
  uint64_t delay_us = address->faults.connect_delay_us;
  if (std::shared_ptr<ListenerState> listener = core_->Find(address->name)) {
    delay_us += core_->AcceptedFaults(*listener).connect_delay_us;
  }
  const int64_t now = Clock::Real().NowNanos();
  if (Micros(delay_us) >= options.connect_timeout.count()) {
    poller->PostAt(now + options.connect_timeout.count(), [done = std::move(done), uri] {
      done(absl::DeadlineExceededError(absl::StrCat("no connection to ", uri.ToString(), " within connect_timeout")));
    });
    return;
  }
  auto finish = [core = core_, name = address->name, options, faults = address->faults, poller,
                 done = std::move(done)] { FinishConnect(core, name, options, faults, poller, done); };
  if (delay_us == 0) {
    poller->Post(std::move(finish));
  } else {
    poller->PostAt(now + Micros(delay_us), std::move(finish));
  }
}

void LoopbackTransport::SetFaults(std::string_view name, const Faults& faults) { core_->SetFaults(name, faults); }
void LoopbackTransport::ClearFaults(std::string_view name) { core_->SetFaults(name, std::nullopt); }

// ---- LoopbackConnection ----

LoopbackConnection::LoopbackConnection(std::shared_ptr<Endpoint> end) : end_(std::move(end)) {}
LoopbackConnection::~LoopbackConnection() { end_->Close(absl::CancelledError("connection handle destroyed")); }

Buffer LoopbackConnection::Allocate(size_t size) { return BufferPool::Default().Allocate(size); }
Status LoopbackConnection::Send(Frame frame) { return end_->Send(std::move(frame)); }
bool LoopbackConnection::writable() { return end_->writable(); }
Status LoopbackConnection::WaitWritable(int64_t deadline_nanos) { return end_->WaitWritable(deadline_nanos); }
Capabilities LoopbackConnection::capabilities() const { return end_->capabilities(); }
void LoopbackConnection::Start(std::shared_ptr<ConnectionHandler> handler) { end_->Start(std::move(handler)); }
void LoopbackConnection::Close(const Status& reason) { end_->Close(reason); }
std::string LoopbackConnection::peer() const { return end_->peer_uri(); }
bool LoopbackConnection::PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) {
  return end_->PollUntil(done, budget);
}
Faults LoopbackConnection::faults() const { return end_->faults(); }
void LoopbackConnection::SetFaults(const Faults& faults) { end_->SetFaults(faults); }

}  // namespace zcrpc::transport::loopback
