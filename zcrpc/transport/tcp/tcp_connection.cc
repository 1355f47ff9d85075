#include "zcrpc/transport/tcp/tcp_connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>

#include "absl/container/flat_hash_set.h"
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

// What the loop watches a socket for (one epoll mask, one-shot):
constexpr uint32_t kRead = 1;    // EPOLLIN | EPOLLRDHUP: the loop reads what comes
constexpr uint32_t kWrite = 2;   // EPOLLOUT: the rest of a write
constexpr uint32_t kHangup = 4;  // EPOLLRDHUP alone: callers read, the loop hears the peer close

// A busy-poll spin (busy_poll_us) that has seen no bytes, or no chance to
// take the socket, for this long gives the CPU away once (sched_yield())
// and goes on spinning. When the peer that must answer shares this CPU
// (2 vCPUs here, shared by a client, a server and their loop threads) a
// spin that never yields keeps it off the CPU until the scheduler preempts
// the spinner: a 0-byte busy-poll call took ~2,100 us instead of ~11 us.
// 5 us is about half that 11 us round trip, so a spin whose peer runs on
// the other CPU yields about once per reply, at ~1 us a yield here (when
// nothing else wants the CPU it returns at once); and a peer sharing the
// CPU waits at most this long for it.
constexpr std::chrono::nanoseconds kYieldAfterQuiet = std::chrono::microseconds(5);

// A caller whose PollUntil() finds the loop thread reading waits up to this
// long for it to let go, instead of leaving its reply to the loop. The loop
// is usually finishing the very delivery that woke this caller (it lets go
// a few microseconds after its last OnFrame); a caller that gave up then
// would have its next reply delivered by the loop again, which wakes it
// early again: seen here as a run of calls, each read by the loop, that
// never handed the socket back to the callers.
constexpr std::chrono::nanoseconds kLoopHandOverWait = std::chrono::microseconds(50);

// Unpolled requests tracked per connection (see Await()); past this many in
// flight the connection stops tracking them and keeps its poller armed.
// The channel's default max_calls_in_flight is 4096.
constexpr size_t kMaxAwaited = 8192;

// The spin of a busy-poll loop: CpuRelax() between looks, and a
// sched_yield() after kYieldAfterQuiet without progress.
class QuietSpin {
 public:
  explicit QuietSpin(SteadyClock::time_point now) : quiet_since_(now) {}
  void Progress(SteadyClock::time_point now) { quiet_since_ = now; }
  void Idle(SteadyClock::time_point now) {
    if (now - quiet_since_ < kYieldAfterQuiet) {
      CpuRelax();
      return;
    }
    ::sched_yield();
    quiet_since_ = now;
  }

 private:
  SteadyClock::time_point quiet_since_;
};

// The request this thread last sent inside a PollsOwnReplyScope, and on
// which connection (State::serial_: never reused, unlike an address), so
// that its PollUntil() knows which reply it was going to read itself.
struct OwnRequest {
  uint64_t connection = 0;
  uint64_t call_id = 0;
};
thread_local OwnRequest own_request;

std::atomic<uint64_t> next_serial{1};

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
        receive_stall_timeout_(options.receive_stall_timeout),
        peer_(std::move(peer)),
        budget_(options.send_budget_bytes, options.send_stall_timeout),
        reader_(fd_.get(), options.limits, peer_, tcp_options.probe_zerocopy_receive,
                options.memory_quota != nullptr ? options.memory_quota : MemoryQuota::Default()),
        writer_(fd_.get(), tcp_options, peer_, &budget_),
        preface_(role, options),
        role_(role),
        phase_(phase),
        handshake_deadline_(Clock::Real().NowNanos() + options.connect_timeout.count()),
        ready_(std::move(ready)),
        serial_(next_serial.fetch_add(1, std::memory_order_relaxed)) {}

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
    const uint64_t call_id = frame.header.call_id;
    bool awaiting = false;
    if (frame.header.type == FrameType::kRequest && PollsOwnReplyScope::Active()) {
      // This thread reads the reply itself (PollUntil): the loop stays as
      // it is, off if callers have been reading.
      own_request = {serial_, call_id};
    } else {
      // Before the frame leaves, so its reply cannot come back first.
      if (frame.header.type == FrameType::kRequest) {
        awaiting = Await(call_id);
      } else if (frame.header.type == FrameType::kCancel) {
        Forget(call_id);  // no reply comes to a cancelled call
      }
      WatchForReplies();
    }
    FrameWriter::Result result = writer_.Send(std::move(frame));
    Apply(result);
    if (!result.status.ok() && awaiting) Forget(call_id);
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
    return !close_.closed() && (budget_.queued() > 0 || frame_begun_at_.load(std::memory_order_relaxed) != 0);
  }
  void OnLoopStopped() override {
    std::shared_ptr<State> self;
    {
      std::lock_guard lock(arm_mu_);
      self = std::move(armed_self_);
      read_armed_ = write_armed_ = hangup_armed_ = false;
      read_interest_.store(false, std::memory_order_release);
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
    s.interest_changes = interest_changes_.load(std::memory_order_relaxed);
    s.receive_stages_made = reader_.stages_made();
    return s;
  }

  // EpollLoop::Watcher, for the lazy list (LetGo()).
  bool OnLazyTick() override;

 private:
  // --- epoll interest: read and write share one one-shot mask ---

  uint32_t Mask() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(arm_mu_) {
    const uint32_t read = read_armed_ ? uint32_t{EPOLLIN | EPOLLRDHUP} : hangup_armed_ ? uint32_t{EPOLLRDHUP} : 0u;
    return read | (write_armed_ ? uint32_t{EPOLLOUT} : 0u);
  }

  void ModifyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(arm_mu_) {
    interest_changes_.fetch_add(1, std::memory_order_relaxed);
    loop_->Modify(fd_.get(), id_, Mask());
  }

  // Adds `what` to the interest. The kernel's mask is set under arm_mu_, so
  // it is always at least what the flags say; an interest already set is
  // already armed (or its wake-up is being handled, and the handler re-arms).
  void Arm(uint32_t what) {
    if (what == 0) return;
    std::lock_guard lock(arm_mu_);
    bool changed = false;
    if ((what & kRead) && !read_armed_) {
      read_armed_ = true;
      hangup_armed_ = false;  // EPOLLRDHUP comes with reading
      changed = true;
    } else if ((what & kHangup) && !read_armed_ && !hangup_armed_) {
      hangup_armed_ = true;
      changed = true;
    }
    if ((what & kWrite) && !write_armed_) {
      write_armed_ = true;
      changed = true;
    }
    if (!changed) return;
    read_interest_.store(read_armed_, std::memory_order_release);
    // Keeps the state alive while the loop may wake it, even once the
    // handle is gone (a closing connection still reports OnClosed).
    if (!armed_self_) armed_self_ = shared_from_this();
    ModifyLocked();
  }

  // A caller took the read side (PollUntil): the loop stops reading, so the
  // reply wakes only that caller, sleeping in poll() on the socket; the
  // loop keeps listening for the peer's close (kHangup). Left so when the
  // caller lets go, while callers keep coming (LetGo()).
  void TakeReadFromLoop() {
    std::lock_guard lock(arm_mu_);
    if (!read_armed_) return;
    read_armed_ = false;
    hangup_armed_ = true;
    read_interest_.store(false, std::memory_order_release);
    ModifyLocked();  // armed_self_ stays: kHangup is an interest too
  }

  // --- who watches for replies ---
  //
  // The socket's read interest is off while callers read their own replies
  // (PollUntil), and stays off after one lets go as long as callers keep
  // coming: no epoll_ctl per call. Every frame that can arrive is still
  // read promptly, by someone:
  //  - a reply a caller polls for: by that caller, who reads the socket
  //    itself until its call is done (poll() on the socket is
  //    level-triggered: bytes that came before it slept are seen at once);
  //  - a reply nobody polls for (a callback call's, or a scoped caller's
  //    whose PollUntil() could not take the socket): its call id is
  //    "awaited" (Await()) until it arrives or is cancelled. A caller that
  //    lets go while any is awaited re-arms the loop at once; one that
  //    records an awaited call while nobody reads arms it itself
  //    (WatchForReplies()). The recording and the letting go are each
  //    followed by a sequentially consistent fence and then a look at the
  //    other's variable (awaited_count_, the read ownership), so at least
  //    one of the two sees the other and arms: the caller cannot leave
  //    lazily unseen;
  //  - the peer's close: the loop keeps EPOLLRDHUP (kHangup) while reading
  //    is off, so OnClosed is never late;
  //  - anything else nobody waits for (a server's go-away, a late reply to
  //    a call that timed out): the next caller reads it, or, once callers
  //    stop, the loop's lazy tick re-arms reading after a whole tick
  //    without a caller (OnLazyTick()): two ticks at most (10 ms by
  //    default).
  // A loop woken while a caller reads parks (ReadOwnership), and the
  // caller re-arms when it lets go, as before.

  // Records `call_id` as a request whose reply the loop must deliver.
  // False if it was not recorded (already there, or not tracking).
  bool Await(uint64_t call_id) {
    std::lock_guard lock(awaited_mu_);
    if (awaited_untracked_ || call_id == 0) return false;
    if (awaited_.size() >= kMaxAwaited) {
      // Too many to be worth tracking: the loop stays armed for good.
      awaited_untracked_ = true;
      absl::flat_hash_set<uint64_t>().swap(awaited_);
      awaited_count_.store(kMaxAwaited + 1, std::memory_order_relaxed);
      return false;
    }
    if (!awaited_.insert(call_id).second) return false;
    awaited_count_.store(awaited_.size(), std::memory_order_relaxed);
    return true;
  }

  void Forget(uint64_t call_id) {
    std::lock_guard lock(awaited_mu_);
    if (awaited_untracked_ || awaited_.erase(call_id) == 0) return;
    awaited_count_.store(awaited_.size(), std::memory_order_relaxed);
  }

  // A frame went out (or a caller gave up polling) with a reply the loop
  // may have to deliver: make sure it watches the socket, unless someone
  // reads it now (ReleaseRead() then sees awaited_count_ when it lets go;
  // the loop re-arms after reading anyway).
  void WatchForReplies() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (read_interest_.load(std::memory_order_relaxed) || !started_.load(std::memory_order_acquire)) return;
    if (read_.held()) return;
    Arm(kRead);
  }

  // A scoped caller cannot read its reply itself (another thread reads, or
  // the connection has not started): the loop must deliver it.
  void RelyOnLoop(uint64_t own_call_id, absl::FunctionRef<bool()> done) {
    if (own_call_id == 0) return;
    const bool awaiting = Await(own_call_id);
    WatchForReplies();
    // Delivered before it was recorded? Then nothing will forget it.
    // (The deliverer fences and looks at awaited_count_ after delivering.)
    if (awaiting && done()) Forget(own_call_id);
  }

  // Lets go of the read side taken by anyone but the loop's own read (a
  // caller, a posted OnWritable): re-arms the loop if it was woken meanwhile
  // (parked) or a reply nobody polls for is awaited. True if it did; false
  // leaves reading as it was (off, while callers read). The loop's read
  // re-arms after it lets go anyway.
  bool ReleaseRead() {
    const bool parked = read_.Release();
    // Pairs with WatchForReplies() (see "who watches for replies").
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!parked && awaited_count_.load(std::memory_order_relaxed) == 0) return false;
    if (started_.load(std::memory_order_acquire) && !close_.closed()) Arm(kRead);
    return true;
  }

  // A caller lets go of the read side: unless someone needs the loop,
  // reading stays off for the next caller, and the lazy tick re-arms it
  // once callers stop coming. Leaving it off relies on kHangup being armed:
  // every path that clears it either re-arms, leaves the re-arm to the
  // thread that holds the read side (a park), or is a close. `open`: false
  // once the connection failed (nothing left to read).
  void LetGo(bool open) {
    // A server's connection gets requests at any time, from nobody's call:
    // its loop always reads again once a caller (a stream handler reading
    // its messages) lets go.
    if (role_ == PrefaceRole::kServer) {
      read_.Release();
      if (open && started_.load(std::memory_order_acquire) && !close_.closed()) Arm(kRead);
      DeliverOwedWritable();
      return;
    }
    if (!ReleaseRead() && open) {
      polled_since_tick_.store(true, std::memory_order_relaxed);
      if (!lazy_listed_.load(std::memory_order_relaxed) && !lazy_listed_.exchange(true, std::memory_order_acq_rel)) {
        loop_->WatchLazily(weak_from_this());
      }
    }
    DeliverOwedWritable();
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
      ReleaseRead();
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
          const uint64_t call_id = frame.header.call_id;
          // Only a response ends a call; a stream keeps getting frames
          // until its final one, so it stays awaited until then.
          const bool ends_call = frame.header.type == FrameType::kResponse;
          // A frame is complete: the stall clock must not run while a
          // handler takes its time with it (NoteReceiveProgress restarts it
          // if the next frame has begun).
          if (frame_begun_at_.load(std::memory_order_relaxed) != 0) frame_begun_at_.store(0, std::memory_order_relaxed);
          if (handler_) handler_->OnFrame(std::move(frame));
          // After the handler (which ends the call): pairs with
          // RelyOnLoop(), which records the call and then asks whether it
          // ended.
          std::atomic_thread_fence(std::memory_order_seq_cst);
          if (ends_call && awaited_count_.load(std::memory_order_relaxed) > 0) Forget(call_id);
        },
        bytes);
    if (status.ok()) NoteReceiveProgress(*bytes);
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

  // The receive stall clock: runs while a frame is incomplete, restarted
  // by every byte of it.
  void NoteReceiveProgress(uint64_t bytes) {
    if (receive_stall_timeout_.count() <= 0) return;
    if (!reader_.mid_frame()) {
      if (frame_begun_at_.load(std::memory_order_relaxed) != 0) frame_begun_at_.store(0, std::memory_order_relaxed);
      return;
    }
    if (bytes == 0 && frame_begun_at_.load(std::memory_order_relaxed) != 0) return;
    const bool was_idle = frame_begun_at_.exchange(Clock::Real().NowNanos(), std::memory_order_relaxed) == 0;
    socket_queued_seen_.store(0, std::memory_order_relaxed);
    if (was_idle) loop_->WatchTicks(id_);  // WantsTicks() is true now
  }

  // The reader's side of busy-poll: keep reading for `spin` after the last
  // bytes, or until a caller wants the socket.
  bool SpinRead(std::chrono::nanoseconds spin) {
    SteadyClock::time_point now = SteadyClock::now();
    SteadyClock::time_point last = now;
    QuietSpin quiet(now);
    while (now - last < spin) {
      if (callers_waiting_.load(std::memory_order_relaxed) > 0) break;
      uint64_t bytes = 0;
      if (!ReadOnce(&bytes)) return false;
      now = SteadyClock::now();
      if (bytes > 0) {
        last = now;
        quiet.Progress(now);
      } else {
        quiet.Idle(now);
      }
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
    loop_reads_.store(true, std::memory_order_relaxed);
    uint64_t bytes = 0;
    bool open = ReadOnce(&bytes);
    if (open && options_.busy_poll.count() > 0) open = SpinRead(options_.busy_poll);
    loop_reads_.store(false, std::memory_order_relaxed);
    read_.Release();  // parked meanwhile? this thread re-arms anyway when open
    DeliverOwedWritable();
    return open;
  }

  internal::UniqueFd fd_;
  const std::shared_ptr<EpollLoop> loop_;
  const TcpOptions options_;
  const std::chrono::nanoseconds connect_timeout_;
  const std::chrono::nanoseconds stall_timeout_;
  const std::chrono::nanoseconds receive_stall_timeout_;
  // When the incomplete frame last got a byte (0: no frame incomplete).
  // Written by the reading thread, read by ticks.
  std::atomic<int64_t> frame_begun_at_{0};
  // What the socket held unread at the last tick that looked: bytes that
  // arrived but wait for SO_RCVLOWAT are progress too.
  std::atomic<int> socket_queued_seen_{0};
  const std::string peer_;
  uint64_t id_ = 0;  // the loop registration; set before the first arm

  internal::CloseOnce close_;
  internal::ReadOwnership read_;
  internal::SendBudget budget_;
  std::atomic<int> callers_waiting_{0};
  std::atomic<bool> loop_reads_{false};  // a loop thread holds the read side (a hint)
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

  const uint64_t serial_;  // this connection, for OwnRequest

  std::mutex arm_mu_;
  bool read_armed_ ABSL_GUARDED_BY(arm_mu_) = false;
  bool write_armed_ ABSL_GUARDED_BY(arm_mu_) = false;
  bool hangup_armed_ ABSL_GUARDED_BY(arm_mu_) = false;  // meaningful while !read_armed_
  std::shared_ptr<State> armed_self_ ABSL_GUARDED_BY(arm_mu_);
  // read_armed_, for lock-free looks that tolerate a stale answer (an
  // extra Arm() is a no-op; a missed one ends in a park and a re-arm).
  std::atomic<bool> read_interest_{false};
  std::atomic<uint64_t> interest_changes_{0};  // epoll_ctl(MOD) calls

  // Requests whose replies nobody polls for (Await()).
  std::mutex awaited_mu_;
  absl::flat_hash_set<uint64_t> awaited_ ABSL_GUARDED_BY(awaited_mu_);
  bool awaited_untracked_ ABSL_GUARDED_BY(awaited_mu_) = false;
  std::atomic<uint64_t> awaited_count_{0};  // awaited_.size(), or more once untracked

  // Reading left to callers (LetGo()): the loop's lazy list holds this
  // connection while lazy_listed_, and re-arms it after a tick in which
  // no caller took the socket (polled_since_tick_ stayed false).
  std::atomic<bool> lazy_listed_{false};
  std::atomic<bool> polled_since_tick_{false};
};

void TcpConnection::State::OnReady(uint32_t events) {
  bool was_read, was_hangup, was_write;
  std::shared_ptr<State> self;
  {
    // The one-shot registration fired: the kernel armed nothing now. This
    // thread takes over every interest that was set, and re-arms those it
    // does not satisfy.
    std::lock_guard lock(arm_mu_);
    was_read = read_armed_;
    was_hangup = hangup_armed_ && !read_armed_;
    was_write = write_armed_;
    read_armed_ = write_armed_ = hangup_armed_ = false;
    read_interest_.store(false, std::memory_order_release);
    self = std::move(armed_self_);
  }
  if (!self) return;  // a wake-up from an arm already handled
  const bool failed = events & (EPOLLERR | EPOLLHUP);
  // A hang-up (or an error, MSG_ZEROCOPY completions included) while
  // callers read is read like bytes: the reader sees the end or reaps.
  const bool can_read = (was_read || was_hangup) && (failed || (events & (EPOLLIN | EPOLLRDHUP)));
  const bool can_write = was_write && (failed || (events & EPOLLOUT));
  uint32_t rearm = (was_read && !can_read ? kRead : 0) | (was_hangup && !can_read ? kHangup : 0) |
                   (was_write && !can_write ? kWrite : 0);

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
  if (const int64_t begun = frame_begun_at_.load(std::memory_order_relaxed);
      begun != 0 && !close_.closed() && now_nanos - begun >= receive_stall_timeout_.count()) {
    // Bytes may be waiting in the socket for the reader's wake threshold
    // (SO_RCVLOWAT): a slow sender, not a stalled one.
    int queued = 0;
    if (::ioctl(fd_.get(), FIONREAD, &queued) == 0 && queued != socket_queued_seen_.load(std::memory_order_relaxed)) {
      socket_queued_seen_.store(queued, std::memory_order_relaxed);
      // Only if the reader has not moved on meanwhile.
      int64_t expected = begun;
      frame_begun_at_.compare_exchange_strong(expected, now_nanos, std::memory_order_relaxed);
    } else if (int64_t unchanged = begun; frame_begun_at_.compare_exchange_strong(unchanged, 0)) {
      // Claimed: the reader did not move the clock since this tick loaded
      // it (it would have, had it read a byte meanwhile).
      Close(absl::UnavailableError(absl::StrCat("a frame from ", peer_, " began and then got no byte for ",
                                                Duration(receive_stall_timeout_),
                                                " (receive_stall_timeout): the peer stalled mid-frame")));
    }
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
  // The request this thread sent in a PollsOwnReplyScope, if on this
  // connection: should this thread not read its reply after all, the loop
  // must be told to (RelyOnLoop()).
  const OwnRequest own = std::exchange(own_request, OwnRequest{});
  const uint64_t own_call_id = own.connection == serial_ ? own.call_id : 0;
  if (close_.closed()) return false;
  if (!started_.load(std::memory_order_acquire)) {
    RelyOnLoop(own_call_id, done);
    return false;
  }
  // Spinning here costs a system call per look, unlike on shm's rings, so
  // only a connection with busy_poll spins; the caller's budget is for
  // transports whose polling is free.
  (void)budget;
  SteadyClock::time_point now = SteadyClock::now();
  const SteadyClock::time_point spin_end = now + options_.busy_poll;
  // A loop thread spinning on the socket (busy-poll) sees the waiting
  // caller and lets go within one pass; wait that long for it.
  callers_waiting_.fetch_add(1, std::memory_order_relaxed);
  bool acquired = read_.TryAcquire();
  QuietSpin quiet(now);
  const SteadyClock::time_point handover_end = now + kLoopHandOverWait;
  while (!acquired && !done() &&
         (now < spin_end || (now < handover_end && loop_reads_.load(std::memory_order_relaxed)))) {
    quiet.Idle(now);
    acquired = read_.TryAcquire();
    now = SteadyClock::now();
  }
  callers_waiting_.fetch_sub(1, std::memory_order_relaxed);
  if (!acquired) {
    RelyOnLoop(own_call_id, done);
    return false;
  }

  // Take the socket from the loop before anything can arrive, or the reply
  // would wake the loop thread too, for nothing. Once callers read, it
  // stays theirs (LetGo()), so this is one epoll_ctl per spell of calls,
  // not per call.
  if (read_interest_.load(std::memory_order_acquire)) TakeReadFromLoop();
  bool open = true;
  quiet = QuietSpin(now);
  while (open) {
    uint64_t bytes = 0;
    open = ReadOnce(&bytes);
    if (!open || done()) break;
    now = SteadyClock::now();
    if (bytes > 0) quiet.Progress(now);
    if (now < spin_end) {
      quiet.Idle(now);
      continue;
    }
    // Sleep on the socket itself: the kernel wakes this thread directly.
    pollfd p{fd_.get(), POLLIN, 0};
    ::poll(&p, 1, kBlockSliceMs);
  }
  // After a failure there is nothing left to read or re-arm.
  LetGo(open);
  return true;
}

bool TcpConnection::State::OnLazyTick() {
  if (close_.closed()) {
    lazy_listed_.store(false, std::memory_order_relaxed);
    return false;
  }
  // A caller took the socket since the last tick, or holds it now: callers
  // are still reading; look again next tick.
  if (polled_since_tick_.exchange(false, std::memory_order_relaxed)) return true;
  if (read_.held()) return true;
  // A whole tick without callers: the loop reads again, so a frame nobody
  // polls for (a go-away) waits no longer. A caller that takes the socket
  // meanwhile either sees the interest and takes it back, or took it just
  // before: then a reply wakes the loop too, which parks, and the caller
  // re-arms as it lets go (one extra wake-up, nothing lost).
  lazy_listed_.store(false, std::memory_order_seq_cst);
  if (!read_interest_.load(std::memory_order_acquire)) Arm(kRead);
  return false;
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
