#include "zcrpc/transport/tcp/tcp_connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/base/cpu_relax.h"
#include "zcrpc/transport/internal/close_once.h"
#include "zcrpc/transport/internal/delivery_scope.h"
#include "zcrpc/transport/internal/errno_status.h"
#include "zcrpc/transport/internal/capabilities.h"
#include "zcrpc/transport/internal/preface_exchange.h"
#include "zcrpc/transport/internal/read_ownership.h"
#include "zcrpc/transport/internal/send_budget.h"

namespace zcrpc::transport::tcp {
namespace {

using SteadyClock = std::chrono::steady_clock;

// A blocked reader looks at its done() condition at least this often, so a
// call ended by its deadline or a cancel is noticed.
constexpr int kBlockSliceMs = 1;

constexpr uint32_t kRead = 1;
constexpr uint32_t kWrite = 2;

std::string PeerUri(int fd) { return SocketUri(fd, /*peer=*/true); }

// "300 ms", "20 s": for messages.
std::string Duration(std::chrono::nanoseconds d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return ms % 1000 == 0 && ms != 0 ? absl::StrCat(ms / 1000, " s") : absl::StrCat(ms, " ms");
}

}  // namespace

class TcpConnection::State final : public EpollLoop::Watcher, public std::enable_shared_from_this<State> {
 public:
  enum class Phase : int { kConnecting, kPreface, kOpen };

  State(internal::UniqueFd fd, std::shared_ptr<EpollLoop> loop, const TcpOptions& tcp_options,
        const ConnectionOptions& options, std::string peer, PrefaceRole role, Phase phase, Ready ready)
      : fd_(std::move(fd)),
        loop_(std::move(loop)),
        options_(tcp_options),
        connect_timeout_(options.connect_timeout),
        stall_timeout_(options.send_stall_timeout),
        peer_(std::move(peer)),
        budget_(options.send_budget_bytes, options.send_stall_timeout),
        reader_(fd_.get(), options.limits, peer_, tcp_options.probe_zerocopy_receive),
        writer_(fd_.get(), tcp_options, peer_, &budget_),
        preface_(role, options),
        role_(role),
        phase_(phase),
        handshake_deadline_(Clock::Real().NowNanos() + options.connect_timeout.count()),
        ready_(std::move(ready)) {}

  ~State() {
    if (id_ != 0) loop_->Remove(fd_.get(), id_);
    // Pages the kernel may still read (MSG_ZEROCOPY) go back to the pool
    // when writer_ dies: reset the connection so the kernel drops them first.
    if (writer_.holds_frames()) {
      linger abort{1, 0};
      ::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    }
    fd_.reset();
  }

  // Registers with the loop and waits for the first event of the setup.
  void Begin() {
    StatusOr<uint64_t> id = loop_->Add(fd_.get(), weak_from_this());
    if (!id.ok()) {
      // Never inside Connect(): the result goes through the loop.
      loop_->Post([self = shared_from_this(), status = id.status()] { self->FailHandshake(status); });
      return;
    }
    id_ = *id;
    loop_->WatchTicks(id_);
    Arm(phase_.load() == Phase::kConnecting ? kWrite : kRead);
  }

  const std::string& peer() const { return peer_; }
  const FrameWriter& writer() const { return writer_; }
  const FrameReader& reader() const { return reader_; }
  const Capabilities& capabilities() const { return caps_; }

  void Start(std::shared_ptr<ConnectionHandler> handler) {
    // The reading thread is the only one that touches handler_; until now
    // nothing reads (the read side is not armed), but a posted OnWritable
    // may look: take the ownership for the store.
    while (!read_.TryAcquire()) CpuRelax();
    handler_ = std::move(handler);
    started_.store(true, std::memory_order_release);
    read_.Release();
    Arm(kRead);
  }

  Status Send(Frame frame) {
    if (close_.closed()) return absl::UnavailableError(absl::StrCat("connection to ", peer_, " is closed"));
    ZCRPC_RETURN_IF_ERROR(internal::CheckFrameFits(caps_, frame, peer_));
    frame.SetLengthsFromParts();
    FrameWriter::Result result = writer_.Send(std::move(frame));
    Apply(result);
    return result.status;
  }

  bool writable() { return budget_.writable(); }
  Status WaitWritable(int64_t deadline_nanos) { return budget_.WaitWritable(deadline_nanos, close_, peer_); }

  void Close(const Status& reason) {
    if (!close_.Close(reason)) return;
    writer_.Shutdown();
    budget_.WakeAll();
    // shutdown() rather than close(): the fd stays ours until the State
    // dies, so no other thread races on a reused descriptor number. The
    // reader then sees the end of the stream and reports OnClosed.
    ::shutdown(fd_.get(), SHUT_RDWR);
  }

  bool PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget);

  // EpollLoop::Watcher
  void OnReady(uint32_t events) override;
  void OnTick(int64_t now_nanos) override;
  bool WantsTicks() const override {
    if (!handshake_done_.load(std::memory_order_acquire)) return true;
    return !close_.closed() && budget_.queued() > 0;
  }
  void OnLoopStopped() override {
    std::shared_ptr<State> self;
    {
      std::lock_guard lock(arm_mu_);
      self = std::move(armed_self_);
      read_armed_ = write_armed_ = false;
    }
    const Status stopped = absl::UnavailableError("tcp transport shut down");
    FailHandshake(stopped);
    if (read_.TryAcquire()) {
      Fail(stopped);
      read_.Release();
    } else {
      Close(stopped);  // the thread reading sees the end and reports it
    }
  }

  TcpConnectionStats stats() const {
    TcpConnectionStats s;
    s.zerocopy = writer_.zerocopy_stats();
    s.frames_sent = writer_.frames_sent();
    s.write_calls = writer_.write_calls();
    s.zerocopy_receive = reader_.zerocopy_receive_probe();
    s.queued_bytes = budget_.queued();
    return s;
  }

 private:
  // --- epoll interest: read and write share one one-shot mask ---

  uint32_t Mask() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(arm_mu_) {
    return (read_armed_ ? uint32_t{EPOLLIN | EPOLLRDHUP} : 0u) | (write_armed_ ? uint32_t{EPOLLOUT} : 0u);
  }

  // Adds `what` to the interest. The kernel's mask is set under arm_mu_, so
  // it is always at least what the flags say; an interest already set is
  // already armed (or its wake-up is being handled, and the handler re-arms).
  void Arm(uint32_t what) {
    if (what == 0) return;
    std::lock_guard lock(arm_mu_);
    const bool add_read = (what & kRead) && !read_armed_;
    const bool add_write = (what & kWrite) && !write_armed_;
    if (!add_read && !add_write) return;
    read_armed_ = read_armed_ || add_read;
    write_armed_ = write_armed_ || add_write;
    // Keeps the state alive while the loop may wake it, even once the
    // handle is gone (a closing connection still reports OnClosed).
    if (!armed_self_) armed_self_ = shared_from_this();
    loop_->Modify(fd_.get(), id_, Mask());
  }

  void DisarmRead() {
    std::shared_ptr<State> self;
    std::lock_guard lock(arm_mu_);
    if (!read_armed_) return;
    read_armed_ = false;
    loop_->Modify(fd_.get(), id_, Mask());
    // The caller (PollUntil) holds a handle, so this is never the last one.
    if (!write_armed_) self = std::move(armed_self_);
  }

  // --- setup ---

  void FinishConnect();
  // False while more preface bytes are needed (re-arm read).
  bool ReadPreface();
  void HandOver(const Preface& peer);
  void FailHandshake(const Status& status) {
    if (handshake_done_.exchange(true, std::memory_order_acq_rel)) return;
    Close(status);
    Ready ready = std::move(ready_);
    ready(status);
  }
  Status SendOwnPreface() {
    const std::span<const uint8_t> bytes = preface_.own();
    // The socket was just connected: its send buffer (16 KiB or more) is
    // empty, so 64 bytes always fit and this never needs a second try.
    const ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(bytes.size())) return absl::OkStatus();
    if (n < 0) return internal::ErrnoError(absl::StrCat("sending the preface to ", peer_));
    return absl::UnavailableError(absl::StrCat("sending the preface to ", peer_, ": short write"));
  }

  // --- send side ---

  // Does what a write in Send() asks of the connection.
  void Apply(const FrameWriter::Result& result) {
    if (!result.status.ok()) Close(result.status);
    // Posted even on a loop thread: the caller of Send() may be inside
    // another connection's handler, holding its own locks.
    if (result.owe_writable) OweWritable(/*here=*/false);
    if (result.wait_writable) {
      Arm(kWrite);
      loop_->WatchTicks(id_);  // the stall clock: WantsTicks() is true now
    }
  }

  // OnWritable is due. Only the reading thread calls handlers, so it is
  // delivered by whoever holds (or next takes) the read side, on a loop
  // thread or a PollUntil caller; never inside a caller's Send().
  void OweWritable(bool here) {
    writable_owed_.store(true, std::memory_order_release);
    if (here) {
      DeliverOwedWritable();
    } else {
      loop_->Post([weak = weak_from_this()] {
        if (auto self = weak.lock()) self->DeliverOwedWritable();
      });
    }
  }

  // Called after every release of the read side too, so an OnWritable owed
  // while another thread read is never lost.
  void DeliverOwedWritable() {
    while (writable_owed_.load(std::memory_order_acquire)) {
      if (!read_.TryAcquire()) return;  // the holder calls this after letting go
      if (writable_owed_.exchange(false, std::memory_order_acq_rel)) CallOnWritable();
      if (read_.Release()) Arm(kRead);
    }
  }

  // REQUIRES: the read side held.
  void CallOnWritable() {
    if (!handler_ || close_.closed()) return;
    internal::DeliveryScope scope;
    handler_->OnWritable();
  }

  // --- receive side (REQUIRES: the read side held) ---

  // Reads until the socket would block. False once the connection is over.
  bool ReadOnce(uint64_t* bytes) {
    if (writer_.awaits_completions()) writer_.ReapCompletions();
    internal::DeliveryScope scope;
    // Replies that handlers send while this batch is delivered go out
    // together after it (FrameWriter::Cork).
    writer_.Cork();
    Status status = reader_.ReadAvailable(
        [this](Frame frame) {
          if (handler_) handler_->OnFrame(std::move(frame));
        },
        bytes);
    const FrameWriter::Result flushed = writer_.Uncork();
    if (!flushed.status.ok()) Close(flushed.status);
    if (flushed.wait_writable) {
      Arm(kWrite);
      loop_->WatchTicks(id_);
    }
    if (flushed.owe_writable) writable_owed_.store(true, std::memory_order_release);
    if (writable_owed_.exchange(false, std::memory_order_acq_rel)) CallOnWritable();
    if (status.ok()) return true;
    Fail(status);
    return false;
  }

  // The reader's side of busy-poll: keep reading for `spin` after the last
  // bytes, or until a caller wants the socket.
  bool SpinRead(std::chrono::nanoseconds spin) {
    SteadyClock::time_point last = SteadyClock::now();
    while (SteadyClock::now() - last < spin) {
      if (callers_waiting_.load(std::memory_order_relaxed) > 0) break;
      uint64_t bytes = 0;
      if (!ReadOnce(&bytes)) return false;
      if (bytes > 0) last = SteadyClock::now();
      else CpuRelax();
    }
    return true;
  }

  // The connection is over: report it once, after the last frame.
  void Fail(const Status& status) {
    Close(status);
    if (auto handler = std::move(handler_)) {
      internal::DeliveryScope scope;
      handler->OnClosed(close_.reason());
    }
  }

  // True to re-arm reading.
  bool HandleReadable() {
    if (!read_.AcquireOrPark()) return false;  // a caller reads; it re-arms when it lets go
    uint64_t bytes = 0;
    bool open = ReadOnce(&bytes);
    if (open && options_.busy_poll.count() > 0) open = SpinRead(options_.busy_poll);
    read_.Release();  // parked meanwhile? this thread re-arms anyway when open
    DeliverOwedWritable();
    return open;
  }

  internal::UniqueFd fd_;
  const std::shared_ptr<EpollLoop> loop_;
  const TcpOptions options_;
  const std::chrono::nanoseconds connect_timeout_;
  const std::chrono::nanoseconds stall_timeout_;
  const std::string peer_;
  uint64_t id_ = 0;  // the loop registration; set before the first arm

  internal::CloseOnce close_;
  internal::ReadOwnership read_;
  internal::SendBudget budget_;
  std::atomic<int> callers_waiting_{0};
  std::atomic<bool> writable_owed_{false};
  std::atomic<bool> started_{false};

  // Touched only by the thread that owns reading.
  FrameReader reader_;
  std::shared_ptr<ConnectionHandler> handler_;

  FrameWriter writer_;

  // Setup, on loop threads until handshake_done_; then caps_ is fixed.
  internal::PrefaceExchange preface_;
  const PrefaceRole role_;
  std::atomic<Phase> phase_;
  const int64_t handshake_deadline_;
  std::atomic<bool> handshake_done_{false};  // Ready ran (or is running)
  Ready ready_;
  Capabilities caps_;

  std::mutex arm_mu_;
  bool read_armed_ ABSL_GUARDED_BY(arm_mu_) = false;
  bool write_armed_ ABSL_GUARDED_BY(arm_mu_) = false;
  std::shared_ptr<State> armed_self_ ABSL_GUARDED_BY(arm_mu_);
};

void TcpConnection::State::OnReady(uint32_t events) {
  bool was_read, was_write;
  std::shared_ptr<State> self;
  {
    // The one-shot registration fired: the kernel armed nothing now. This
    // thread takes over every interest that was set, and re-arms those it
    // does not satisfy.
    std::lock_guard lock(arm_mu_);
    was_read = read_armed_;
    was_write = write_armed_;
    read_armed_ = write_armed_ = false;
    self = std::move(armed_self_);
  }
  if (!self) return;  // a wake-up from an arm already handled
  const bool failed = events & (EPOLLERR | EPOLLHUP);
  const bool can_read = was_read && (failed || (events & (EPOLLIN | EPOLLRDHUP)));
  const bool can_write = was_write && (failed || (events & EPOLLOUT));
  uint32_t rearm = (was_read && !can_read ? kRead : 0) | (was_write && !can_write ? kWrite : 0);

  switch (phase_.load(std::memory_order_acquire)) {
    case Phase::kConnecting:
      if (can_write) FinishConnect();
      break;
    case Phase::kPreface:
      if (can_read && !ReadPreface()) rearm |= kRead;
      break;
    case Phase::kOpen:
      if (can_write) {
        const FrameWriter::Result result = writer_.Resume();
        if (!result.status.ok()) Close(result.status);
        if (result.owe_writable) OweWritable(/*here=*/true);
        if (result.wait_writable) rearm |= kWrite;
      }
      if (can_read && HandleReadable()) rearm |= kRead;
      break;
  }
  if (handshake_done_.load(std::memory_order_acquire) && phase_.load() != Phase::kOpen) rearm = 0;
  Arm(rearm);
}

void TcpConnection::State::OnTick(int64_t now_nanos) {
  if (!handshake_done_.load(std::memory_order_acquire)) {
    if (now_nanos >= handshake_deadline_) {
      FailHandshake(absl::DeadlineExceededError(absl::StrCat(
          "no zcrpc connection with ", peer_, " within connect_timeout (", Duration(connect_timeout_), "): ",
          phase_.load() == Phase::kConnecting ? "the TCP connect did not complete"
                                              : absl::StrCat("got ", preface_.received(), " of the peer's ",
                                                             kPrefaceSize, " preface bytes"))));
    }
    return;
  }
  if (!close_.closed() && budget_.Stalled(now_nanos)) {
    Close(absl::UnavailableError(absl::StrCat("send queue to ", peer_, " (", budget_.queued(),
                                              " bytes) made no progress for ", Duration(stall_timeout_),
                                              " (send_stall_timeout): the peer stopped reading")));
  }
}

void TcpConnection::State::FinishConnect() {
  int error = 0;
  socklen_t len = sizeof error;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
  if (error != 0) {
    FailHandshake(absl::UnavailableError(absl::StrCat("cannot connect to ", peer_, ": ", std::strerror(error))));
    return;
  }
  if (Status sent = SendOwnPreface(); !sent.ok()) {
    FailHandshake(sent);
    return;
  }
  phase_.store(Phase::kPreface, std::memory_order_release);
  Arm(kRead);
}

bool TcpConnection::State::ReadPreface() {
  while (!preface_.decidable()) {
    const std::span<uint8_t> missing = preface_.missing();
    // Exactly the preface's bytes: what follows is the FrameReader's.
    const ssize_t n = ::recv(fd_.get(), missing.data(), missing.size(), MSG_DONTWAIT);
    if (n > 0) {
      preface_.Advance(static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      FailHandshake(absl::UnavailableError(absl::StrCat(peer_, " closed the connection after ", preface_.received(),
                                                        " of ", kPrefaceSize, " preface bytes")));
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    FailHandshake(internal::ErrnoError(absl::StrCat("reading the preface from ", peer_)));
    return true;
  }
  StatusOr<Preface> peer = preface_.Decode(peer_);
  if (!peer.ok()) {
    FailHandshake(peer.status());
    return true;
  }
  if (role_ == PrefaceRole::kServer) {
    // The server answers only a peer that spoke zcrpc: an HTTP client or
    // a port scanner gets nothing but the close.
    if (Status sent = SendOwnPreface(); !sent.ok()) {
      FailHandshake(sent);
      return true;
    }
  }
  HandOver(*peer);
  return true;
}

void TcpConnection::State::HandOver(const Preface& peer) {
  caps_ = internal::NegotiateCapabilities(preface_.mine(), peer, internal::kNoTransportLimits,
                                         /*caller_can_poll=*/true);
  phase_.store(Phase::kOpen, std::memory_order_release);
  if (handshake_done_.exchange(true, std::memory_order_acq_rel)) return;  // timed out meanwhile
  Ready ready = std::move(ready_);
  // Reading stays disarmed until Start().
  ready(std::unique_ptr<Connection>(new TcpConnection(shared_from_this())));
}

bool TcpConnection::State::PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) {
  if (close_.closed() || !started_.load(std::memory_order_acquire)) return false;
  // Spinning here costs a system call per look, unlike on shm's rings, so
  // only a connection with busy_poll spins; the caller's budget is for
  // transports whose polling is free.
  (void)budget;
  const SteadyClock::time_point spin_end = SteadyClock::now() + options_.busy_poll;
  // A loop thread spinning on the socket (busy-poll) sees the waiting
  // caller and lets go within one pass; wait that long for it.
  callers_waiting_.fetch_add(1, std::memory_order_relaxed);
  bool acquired = read_.TryAcquire();
  while (!acquired && SteadyClock::now() < spin_end && !done()) {
    CpuRelax();
    acquired = read_.TryAcquire();
  }
  callers_waiting_.fetch_sub(1, std::memory_order_relaxed);
  if (!acquired) return false;

  bool open = true;
  bool disarmed = false;
  while (open) {
    uint64_t bytes = 0;
    open = ReadOnce(&bytes);
    if (!open || done()) break;
    if (SteadyClock::now() < spin_end) {
      CpuRelax();
      continue;
    }
    if (!disarmed) {
      // About to sleep on the socket: take it from the loop first, or the
      // reply would wake the loop thread too, for nothing. Then read once
      // more, for bytes that came in before the loop let go.
      DisarmRead();
      disarmed = true;
      continue;
    }
    // Sleep on the socket itself: the kernel wakes this thread directly.
    pollfd p{fd_.get(), POLLIN, 0};
    ::poll(&p, 1, kBlockSliceMs);
  }
  // Hand the socket back to the loop if it was taken from it or the loop
  // was woken meanwhile; after a failure there is nothing left to read.
  if ((read_.Release() || disarmed) && open) Arm(kRead);
  DeliverOwedWritable();
  return true;
}

void TcpConnection::StartConnect(internal::UniqueFd fd, std::shared_ptr<EpollLoop> loop,
                                 const TcpOptions& tcp_options, const ConnectionOptions& options, std::string peer,
                                 Ready ready) {
  auto state = std::make_shared<State>(std::move(fd), std::move(loop), tcp_options, options, std::move(peer),
                                       PrefaceRole::kClient, State::Phase::kConnecting, std::move(ready));
  state->Begin();
}

void TcpConnection::StartAccepted(internal::UniqueFd fd, std::shared_ptr<EpollLoop> loop,
                                  const TcpOptions& tcp_options, const ConnectionOptions& options, Ready ready) {
  std::string peer = PeerUri(fd.get());
  auto state = std::make_shared<State>(std::move(fd), std::move(loop), tcp_options, options, std::move(peer),
                                       PrefaceRole::kServer, State::Phase::kPreface, std::move(ready));
  state->Begin();
}

TcpConnection::~TcpConnection() { state_->Close(absl::CancelledError("connection closed by its owner")); }

Buffer TcpConnection::Allocate(size_t size) { return BufferPool::Default().Allocate(size); }
Status TcpConnection::Send(Frame frame) { return state_->Send(std::move(frame)); }
bool TcpConnection::writable() { return state_->writable(); }
Status TcpConnection::WaitWritable(int64_t deadline_nanos) { return state_->WaitWritable(deadline_nanos); }
Capabilities TcpConnection::capabilities() const { return state_->capabilities(); }
void TcpConnection::Start(std::shared_ptr<ConnectionHandler> handler) { state_->Start(std::move(handler)); }
void TcpConnection::Close(const Status& reason) { state_->Close(reason); }
std::string TcpConnection::peer() const { return state_->peer(); }
bool TcpConnection::PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) {
  return state_->PollUntil(done, budget);
}
TcpConnectionStats TcpConnection::stats() const { return state_->stats(); }

}  // namespace zcrpc::transport::tcp
