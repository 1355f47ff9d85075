#include "zcrpc/transport/tcp/tcp_connection.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>

#include "zcrpc/base/cpu_relax.h"
#include "zcrpc/transport/tcp/frame_reader.h"

namespace zcrpc::transport::tcp {
namespace {

using Clock = std::chrono::steady_clock;

// A blocked reader looks at its done() condition at least this often, so a
// call ended by its deadline or a cancel is noticed.
constexpr int kBlockSliceMs = 1;

std::string PeerUri(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "tcp://?";
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    return FormatTcpUri(text, ntohs(in6->sin6_port));
  }
  auto* in = reinterpret_cast<sockaddr_in*>(&addr);
  ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
  return FormatTcpUri(text, ntohs(in->sin_port));
}


}  // namespace

class TcpConnection::State final : public EpollLoop::Watcher, public std::enable_shared_from_this<State> {
 public:
  State(int fd, EpollLoop* loop, const TcpOptions& tcp_options, const ConnectionOptions& options)
      : fd_(fd),
        loop_(loop),
        options_(tcp_options),
        peer_(PeerUri(fd)),
        reader_(fd, options.limits, peer_, tcp_options.probe_zerocopy_receive),
        writer_(fd, tcp_options, peer_) {}

  ~State() {
    if (registered_) loop_->Remove(fd_, this);
    // Pages the kernel may still read (MSG_ZEROCOPY) go back to the pool
    // when writer_ dies: reset the connection so the kernel drops them first.
    if (writer_.holds_frames()) {
      linger abort{1, 0};
      ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    }
    ::close(fd_);
  }

  Status Register() {
    ZCRPC_RETURN_IF_ERROR(loop_->Add(fd_, this));
    registered_ = true;
    return absl::OkStatus();
  }

  const std::string& peer() const { return peer_; }
  FrameWriter& writer() { return writer_; }
  const FrameReader& reader() const { return reader_; }

  void Start(std::shared_ptr<ConnectionHandler> handler) {
    handler_ = std::move(handler);
    Arm();
  }

  Status Send(Frame frame) {
    Status sent = writer_.Send(std::move(frame));
    if (!sent.ok()) Close(sent);
    return sent;
  }

  void Close(const Status& reason) {
    {
      std::lock_guard lock(close_mu_);
      if (!close_reason_) close_reason_ = reason;
    }
    writer_.Shutdown();
    // shutdown() rather than close(): the fd stays ours until the State
    // dies, so no other thread races on a reused descriptor number. The
    // reader then sees the end of the stream and reports OnClosed.
    if (!shut_down_.exchange(true)) ::shutdown(fd_, SHUT_RDWR);
  }

  bool PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget);

  // EpollLoop::Watcher
  void OnReady(uint32_t events) override;
  void OnLoopStopped() override {
    std::shared_ptr<State> self;
    {
      std::lock_guard lock(arm_mu_);
      self = std::move(armed_self_);
    }
    if (!failed_.load()) Fail(absl::UnavailableError("tcp transport shut down"));
  }

 private:
  // Read ownership: exactly one thread reads. kParked means the loop thread
  // was woken while a caller read; the caller re-arms when it lets go.
  enum : int { kFree = 0, kHeld = 1, kParked = 2 };
  bool TryAcquire() {
    int expected = kFree;
    return read_owner_.compare_exchange_strong(expected, kHeld, std::memory_order_acquire);
  }

  void Arm() {
    {
      std::lock_guard lock(arm_mu_);
      armed_self_ = shared_from_this();
    }
    loop_->Arm(fd_, this);
  }

  // Reads until the socket would block. False once the connection is over.
  bool ReadOnce(uint64_t* bytes) {
    if (writer_.holds_frames()) writer_.ReapCompletions();
    // Replies that handlers send while this batch is delivered go out
    // together after it (FrameWriter::Cork).
    writer_.Cork();
    Status status = reader_.ReadAvailable(
        [this](Frame frame) {
          if (handler_) handler_->OnFrame(std::move(frame));
        },
        bytes);
    Status flushed = writer_.Uncork();
    if (!flushed.ok()) Close(flushed);
    if (status.ok()) return true;
    Fail(status);
    return false;
  }

  // The reader's side of busy-poll: keep reading for `spin` after the last
  // bytes, or until a caller wants the socket.
  bool SpinRead(std::chrono::nanoseconds spin) {
    Clock::time_point last = Clock::now();
    while (Clock::now() - last < spin) {
      if (callers_waiting_.load(std::memory_order_relaxed) > 0) break;
      uint64_t bytes = 0;
      if (!ReadOnce(&bytes)) return false;
      if (bytes > 0) last = Clock::now();
      else CpuRelax();
    }
    return true;
  }

  void Fail(const Status& status) {
    if (failed_.exchange(true)) return;
    writer_.Shutdown();
    if (!shut_down_.exchange(true)) ::shutdown(fd_, SHUT_RDWR);
    Status reason = status;
    {
      std::lock_guard lock(close_mu_);
      if (close_reason_) reason = *close_reason_;
    }
    if (auto handler = std::move(handler_)) handler->OnClosed(reason);
  }

  const int fd_;
  EpollLoop* const loop_;
  const TcpOptions options_;
  const std::string peer_;
  bool registered_ = false;

  std::atomic<int> read_owner_{kFree};
  std::atomic<int> callers_waiting_{0};
  std::atomic<bool> failed_{false};
  // Touched only by the thread that owns reading.
  FrameReader reader_;
  std::shared_ptr<ConnectionHandler> handler_;

  FrameWriter writer_;

  std::mutex arm_mu_;
  std::shared_ptr<State> armed_self_;  // keeps the state alive while armed; guarded by arm_mu_

  std::atomic<bool> shut_down_{false};
  std::mutex close_mu_;
  std::optional<Status> close_reason_;  // guarded by close_mu_
};

void TcpConnection::State::OnReady(uint32_t) {
  std::shared_ptr<State> self;
  {
    std::lock_guard lock(arm_mu_);
    self = std::move(armed_self_);
  }
  if (!self) return;
  for (;;) {
    if (TryAcquire()) break;
    int expected = kHeld;
    if (read_owner_.compare_exchange_strong(expected, kParked, std::memory_order_acq_rel)) return;
    // The caller let go in between: try again.
  }
  uint64_t bytes = 0;
  bool open = ReadOnce(&bytes);
  if (open && options_.busy_poll.count() > 0) open = SpinRead(options_.busy_poll);
  read_owner_.store(kFree, std::memory_order_release);
  if (open) Arm();
}

bool TcpConnection::State::PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) {
  if (failed_.load(std::memory_order_relaxed)) return false;
  // Spinning here costs a system call per look, unlike on shm's rings, so
  // only a connection with busy_poll spins; the caller's budget is for
  // transports whose polling is free.
  (void)budget;
  const Clock::time_point spin_end = Clock::now() + options_.busy_poll;
  // A loop thread spinning on the socket (busy-poll) sees the waiting
  // caller and lets go within one pass; wait that long for it.
  callers_waiting_.fetch_add(1, std::memory_order_relaxed);
  bool acquired = TryAcquire();
  while (!acquired && Clock::now() < spin_end && !done()) {
    CpuRelax();
    acquired = TryAcquire();
  }
  callers_waiting_.fetch_sub(1, std::memory_order_relaxed);
  if (!acquired) return false;

  bool open = true;
  bool disarmed = false;
  while (open) {
    uint64_t bytes = 0;
    open = ReadOnce(&bytes);
    if (!open || done()) break;
    if (Clock::now() < spin_end) {
      CpuRelax();
      continue;
    }
    if (!disarmed) {
      // About to sleep on the socket: take it from the loop first, or the
      // reply would wake the loop thread too, for nothing. Then read once
      // more, for bytes that came in before the loop let go.
      loop_->Disarm(fd_, this);
      disarmed = true;
      continue;
    }
    // Sleep on the socket itself: the kernel wakes this thread directly.
    pollfd p{fd_, POLLIN, 0};
    ::poll(&p, 1, kBlockSliceMs);
  }
  // Hand the socket back to the loop if it was taken from it (also after a
  // failure: the arm then wakes the loop at once, which lets go of the state).
  if (read_owner_.exchange(kFree, std::memory_order_acq_rel) == kParked || disarmed) Arm();
  return true;
}

StatusOr<std::unique_ptr<TcpConnection>> TcpConnection::Make(int fd, EpollLoop* loop,
                                                             const TcpOptions& tcp_options,
                                                             const ConnectionOptions& options) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  auto state = std::make_shared<State>(fd, loop, tcp_options, options);
  ZCRPC_RETURN_IF_ERROR(state->Register());
  return std::unique_ptr<TcpConnection>(new TcpConnection(std::move(state)));
}

TcpConnection::~TcpConnection() { state_->Close(absl::CancelledError("connection closed by its owner")); }

Buffer TcpConnection::Allocate(size_t size) { return BufferPool::Default().Allocate(size); }
Status TcpConnection::Send(Frame frame) { return state_->Send(std::move(frame)); }
void TcpConnection::Start(std::shared_ptr<ConnectionHandler> handler) { state_->Start(std::move(handler)); }
void TcpConnection::Close(const Status& reason) { state_->Close(reason); }
std::string TcpConnection::peer() const { return state_->peer(); }
bool TcpConnection::PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) {
  return state_->PollUntil(done, budget);
}

TcpConnectionStats TcpConnection::stats() const {
  TcpConnectionStats s;
  s.zerocopy = state_->writer().zerocopy_stats();
  s.frames_sent = state_->writer().frames_sent();
  s.write_calls = state_->writer().write_calls();
  s.zerocopy_receive = state_->reader().zerocopy_receive_probe();
  return s;
}

}  // namespace zcrpc::transport::tcp
