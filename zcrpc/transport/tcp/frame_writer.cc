#include "zcrpc/transport/tcp/frame_writer.h"

#include <linux/errqueue.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <span>

#include "absl/strings/str_cat.h"
#include "zcrpc/transport/tcp/stream_layout.h"
#include "zcrpc/transport/tcp/tcp_stats.h"

#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif

namespace zcrpc::transport::tcp {
namespace {

// Padding comes from here; no padding run is longer (stream_layout.h).
alignas(4096) const uint8_t kZeros[kInlineWindow + kSpillAlign] = {};

// A corked delivery sends what it has every this many frames, so the peer
// can start on the first replies while the rest are being handled.
constexpr size_t kMaxCorkedFrames = 8;

// A corked delivery holds back at most this many bytes of replies.
constexpr uint64_t kMaxCorkedBytes = 16 << 20;

// Process-wide sums behind TcpStats::Process().
struct ProcessCounters {
  std::atomic<uint64_t> frames_sent{0}, write_calls{0}, zerocopy_sends{0}, zerocopy_completions{0},
      zerocopy_copied_completions{0}, zerocopy_turned_off{0}, zerocopy_receive_probes{0},
      zerocopy_receive_probe_bytes{0}, zerocopy_receive_mapped_bytes{0};
};
ProcessCounters& Counters() {
  static ProcessCounters* counters = new ProcessCounters();
  return *counters;
}
void Add(std::atomic<uint64_t>& counter, uint64_t n) { counter.fetch_add(n, std::memory_order_relaxed); }

// The writer whose sends the current thread is holding back (Cork()).
thread_local const void* corked_writer = nullptr;

bool Before(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) < 0; }

// Lays the frame out as the receiver expects and calls emit(pointer, len)
// for each piece, padding included. Returns the stream layout.
template <typename Emit>
StreamLayout Lay(const Frame& frame, std::span<const uint64_t> table, Emit emit) {
  StreamLayout layout;
  uint64_t at = 0;
  auto pad_to = [&](uint64_t offset) {
    if (offset > at) emit(kZeros, offset - at);
    at = offset;
  };
  auto put = [&](const void* p, uint64_t len, PartKind kind) {
    if (len == 0) return;
    pad_to(layout.Next(len, kind).offset);
    emit(p, len);
    at += len;
  };
  put(frame.metadata.data(), frame.metadata.size(), PartKind::kBuffer);
  put(frame.message.data(), frame.message.size(), PartKind::kBuffer);
  put(table.data(), table.size() * kAttachmentLengthSize, PartKind::kTable);
  for (const Buffer& a : frame.attachments) put(a.data(), a.size(), PartKind::kBuffer);
  layout.Finish();
  pad_to(layout.end());
  return layout;
}

}  // namespace

FrameWriter::FrameWriter(int fd, const TcpOptions& options, std::string peer, internal::SendBudget* budget)
    : fd_(fd), options_(options), peer_(std::move(peer)), budget_(budget) {
  if (options_.zerocopy_send != ZeroCopySend::kOff) {
    int one = 1;
    // Without SO_ZEROCOPY the kernel ignores MSG_ZEROCOPY and would send no
    // completions, so only use the flag where this succeeded.
    if (::setsockopt(fd_, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one) == 0) {
      zerocopy_enabled_.store(true, std::memory_order_relaxed);
      stats_.enabled = true;
    }
  }
}

FrameWriter::~FrameWriter() = default;

Status FrameWriter::Closed() const {
  return absl::UnavailableError(absl::StrCat("connection to ", peer_, " is closed"));
}

void FrameWriter::Shutdown() {
  // Sequentially consistent, paired with WriteAll() handing a batch to
  // Resume(): either this sees kBlocked below, or that writer sees
  // stopping_ and drops its batch itself.
  stopping_.store(true, std::memory_order_seq_cst);
  std::lock_guard lock(mu_);
  shut_down_ = true;
  queue_.clear();
  queued_bytes_ = 0;
  state_.fetch_and(~kQueued, std::memory_order_acq_rel);
  // A batch waiting for room has no writer to drop it: take the role and do
  // it here. (A writer in progress sees stopping_ and retires its own.)
  uint32_t state = state_.load(std::memory_order_seq_cst);
  while ((state & kBlocked) != 0) {
    if (state_.compare_exchange_weak(state, (state & ~kBlocked) | kWriting, std::memory_order_acq_rel)) {
      RetireBatch();
      ReleaseRole();
      break;
    }
  }
}

FrameWriter::Outgoing FrameWriter::Prepare(Frame frame) {
  frame.SetLengthsFromParts();
  Outgoing out;
  for (const Buffer& a : frame.attachments) out.table.push_back(a.size());
  StreamLayout layout = Lay(frame, out.table, [](const void*, uint64_t) {});
  frame.header.padding_len = layout.padding();
  EncodeWireHeader(frame.header, out.header);
  out.bytes = kWireHeaderSize + layout.end();
  out.frame = std::move(frame);
  return out;
}

FrameWriter::Result FrameWriter::Send(Frame frame) {
  Outgoing out = Prepare(std::move(frame));
  if (corked_writer != this) {
    // The fast path: nobody writes, nothing is queued, the socket is not
    // full. Taking the role from exactly 0 keeps every frame queued before
    // this one (by any thread, corked ones included) ahead of it.
    uint32_t idle = 0;
    if (state_.compare_exchange_strong(idle, kWriting, std::memory_order_acquire, std::memory_order_relaxed)) {
      if (stopping_.load(std::memory_order_acquire)) {
        ReleaseRole();
        return {Closed()};
      }
      budget_->Queued(out.bytes);
      batch_.push_back(std::move(out));  // batch_ is empty while the role is free
      LayBatch();
      return WriteAll();
    }
  }

  std::unique_lock lock(mu_);
  if (shut_down_) return {Closed()};
  budget_->Queued(out.bytes);
  const bool corked =
      corked_writer == this && queued_bytes_ < kMaxCorkedBytes && queue_.size() + 1 < kMaxCorkedFrames;
  queued_bytes_ += out.bytes;
  queue_.push_back(std::move(out));
  const uint32_t before = state_.fetch_or(kQueued, std::memory_order_acq_rel);
  if (corked) {
    corked_queued_ = true;
    return {};
  }
  if ((before & (kWriting | kBlocked)) != 0) {
    // Another thread is writing, or the socket is full: the frame goes out
    // with the next batch, after everything before it.
    return {};
  }
  // This thread writes: first whatever a corked delivery left queued, so
  // frames keep their order, then its own. Nobody else can change state_
  // now: the fast path needs it 0, the role is free, and the rest of its
  // writers hold mu_.
  state_.store(kWriting, std::memory_order_relaxed);
  TakeQueue();
  lock.unlock();
  return WriteAll();
}

FrameWriter::Result FrameWriter::Resume() {
  if (awaits_completions()) ReapCompletions();
  uint32_t state = state_.load(std::memory_order_acquire);
  do {
    if ((state & kBlocked) == 0) return {};
  } while (!state_.compare_exchange_weak(state, (state & ~kBlocked) | kWriting, std::memory_order_acq_rel));
  if (stopping_.load(std::memory_order_acquire)) {
    RetireBatch();
    ReleaseRole();
    return {};
  }
  return WriteAll();
}

void FrameWriter::Cork() {
  corked_writer = this;
  corked_queued_ = false;
}

FrameWriter::Result FrameWriter::Uncork() {
  corked_writer = nullptr;
  if (!corked_queued_) return {};  // nothing held back: no lock to take
  std::unique_lock lock(mu_);
  // A writer in progress, or the loop once the socket has room, takes them.
  if (shut_down_ || queue_.empty()) return {};
  if ((state_.load(std::memory_order_acquire) & (kWriting | kBlocked)) != 0) return {};
  state_.store(kWriting, std::memory_order_relaxed);  // was kQueued; see Send()
  TakeQueue();
  lock.unlock();
  return WriteAll();
}

void FrameWriter::TakeQueue() {
  std::swap(batch_, queue_);  // batch_ was empty: queue_ keeps its capacity
  queued_bytes_ = 0;
  state_.fetch_and(~kQueued, std::memory_order_acq_rel);
  LayBatch();
}

void FrameWriter::LayBatch() {
  iov_.clear();
  iov_first_ = 0;
  uint64_t total = 0;
  for (const Outgoing& out : batch_) {
    AppendIov(out);
    total += out.bytes;
  }
  batch_zerocopy_ = zerocopy_enabled_.load(std::memory_order_relaxed) && total >= options_.zerocopy_min_bytes;
  batch_used_zerocopy_ = false;
}

void FrameWriter::ReleaseRole() { state_.fetch_and(~kWriting, std::memory_order_release); }

FrameWriter::Result FrameWriter::WriteAll() {
  Result result;
  for (;;) {
    const Outcome outcome = WriteBatch(&result);
    if (outcome == Outcome::kFailed) {
      RetireBatch();
      ReleaseRole();
      return result;  // the caller closes the connection; queued frames die with it
    }
    if (outcome == Outcome::kWouldBlock) {
      // The rest waits for room; the loop resumes when EPOLLOUT says so.
      // Handing over is one atomic step (the role bit becomes kBlocked), so
      // a sender either queued before it (Resume() writes its frame) or
      // finds kBlocked and queues.
      state_.fetch_xor(kWriting | kBlocked, std::memory_order_seq_cst);
      if (stopping_.load(std::memory_order_seq_cst)) {
        // Shut down meanwhile: drop the batch unless Shutdown() took it.
        uint32_t state = state_.load(std::memory_order_acquire);
        while ((state & kBlocked) != 0) {
          if (state_.compare_exchange_weak(state, (state & ~kBlocked) | kWriting, std::memory_order_acq_rel)) {
            RetireBatch();
            ReleaseRole();
            break;
          }
        }
        return result;
      }
      result.wait_writable = true;
      return result;
    }
    // Done (WriteBatch retired the batch): give the role up, unless frames
    // were queued meanwhile.
    uint32_t writing = kWriting;
    if (state_.compare_exchange_strong(writing, 0, std::memory_order_acq_rel, std::memory_order_acquire)) {
      return result;
    }
    std::lock_guard lock(mu_);
    if (queue_.empty()) {
      ReleaseRole();  // shut down meanwhile: Shutdown() cleared the queue
      return result;
    }
    TakeQueue();
  }
}

void FrameWriter::AppendIov(const Outgoing& out) {
  iov_.push_back({const_cast<uint8_t*>(out.header.data()), out.header.size()});
  Lay(out.frame, out.table, [this](const void* p, uint64_t n) {
    iov_.push_back({const_cast<void*>(p), static_cast<size_t>(n)});
  });
}

FrameWriter::Outcome FrameWriter::WriteBatch(Result* result) {
  while (iov_first_ < iov_.size()) {
    if (stopping_.load(std::memory_order_relaxed)) {
      if (result->status.ok()) result->status = Closed();
      return Outcome::kFailed;
    }
    msghdr msg{};
    msg.msg_iov = &iov_[iov_first_];
    msg.msg_iovlen = std::min<size_t>(iov_.size() - iov_first_, IOV_MAX);
    const int flags = MSG_NOSIGNAL | MSG_DONTWAIT | (batch_zerocopy_ ? MSG_ZEROCOPY : 0);
    ssize_t n = ::sendmsg(fd_, &msg, flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // The peer is not reading fast enough. Never wait here: the
        // connection arms EPOLLOUT and the loop thread goes on later.
        if (awaits_completions()) ReapCompletions();
        return Outcome::kWouldBlock;
      }
      if (errno == ENOBUFS && batch_zerocopy_) {
        // No room for another completion notification: send this one plainly.
        batch_zerocopy_ = false;
        continue;
      }
      result->status = absl::UnavailableError(absl::StrCat("send to ", peer_, " failed: ", std::strerror(errno)));
      return Outcome::kFailed;
    }
    write_calls_.fetch_add(1, std::memory_order_relaxed);
    Add(Counters().write_calls, 1);
    if (batch_zerocopy_) {
      std::lock_guard lock(zc_mu_);
      batch_last_id_ = next_id_++;
      ++stats_.sends;
      zc_outstanding_.fetch_add(1, std::memory_order_release);
      Add(Counters().zerocopy_sends, 1);
      batch_used_zerocopy_ = true;
    }
    if (budget_->Drained(static_cast<uint64_t>(n))) result->owe_writable = true;
    size_t left = static_cast<size_t>(n);
    while (iov_first_ < iov_.size() && left >= iov_[iov_first_].iov_len) left -= iov_[iov_first_++].iov_len;
    if (left > 0) {
      iov_[iov_first_].iov_base = static_cast<uint8_t*>(iov_[iov_first_].iov_base) + left;
      iov_[iov_first_].iov_len -= left;
    }
  }
  frames_sent_.fetch_add(batch_.size(), std::memory_order_relaxed);
  Add(Counters().frames_sent, batch_.size());
  RetireBatch();
  if (awaits_completions()) ReapCompletions();
  return Outcome::kDone;
}

void FrameWriter::RetireBatch() {
  if (batch_used_zerocopy_ && !batch_.empty()) {
    // The kernel may still read these pages: keep the buffers until it says.
    std::lock_guard lock(zc_mu_);
    frames_held_.fetch_add(batch_.size(), std::memory_order_release);
    held_.push_back({batch_last_id_, std::move(batch_)});
  }
  batch_.clear();  // keeps the capacity: the next batch allocates nothing
  iov_.clear();
  iov_first_ = 0;
  batch_used_zerocopy_ = false;
}

void FrameWriter::MarkCompleted(uint32_t lo, uint32_t hi) {
  if (lo != completed_below_) {
    early_ranges_.emplace_back(lo, hi);
    return;
  }
  completed_below_ = hi + 1;
  for (bool merged = true; merged;) {
    merged = false;
    for (size_t i = 0; i < early_ranges_.size(); ++i) {
      if (early_ranges_[i].first == completed_below_) {
        completed_below_ = early_ranges_[i].second + 1;
        early_ranges_.erase(early_ranges_.begin() + static_cast<ptrdiff_t>(i));
        merged = true;
        break;
      }
    }
  }
}

void FrameWriter::ReapCompletions() {
  // The common case (no MSG_ZEROCOPY in use) costs no lock.
  if (!awaits_completions()) return;
  std::deque<Held> released;
  {
    std::lock_guard lock(zc_mu_);
    // Completions still owed sit on the error queue and keep the socket
    // reporting EPOLLERR: read them even when nothing is held any more.
    if (!awaits_completions()) return;
    for (;;) {
      alignas(cmsghdr) char control[128];
      msghdr msg{};
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      if (::recvmsg(fd_, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) break;  // EAGAIN: nothing more
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        const bool recverr = (c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                             (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR);
        if (!recverr) continue;
        sock_extended_err err;
        std::memcpy(&err, CMSG_DATA(c), sizeof err);
        if (err.ee_origin != SO_EE_ORIGIN_ZEROCOPY || err.ee_errno != 0) continue;
        const uint32_t lo = err.ee_info;
        const uint32_t hi = err.ee_data;
        const uint64_t count = uint64_t{hi - lo} + 1;
        stats_.completions += count;
        zc_outstanding_.fetch_sub(std::min<uint64_t>(count, zc_outstanding_.load()), std::memory_order_release);
        Add(Counters().zerocopy_completions, count);
        if (err.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) {
          stats_.copied_completions += count;
          Add(Counters().zerocopy_copied_completions, count);
          // The pages were copied after all, and pinning them bought nothing:
          // learn it (auto mode) and send plainly from now on.
          if (options_.zerocopy_send == ZeroCopySend::kAuto && stats_.enabled) {
            zerocopy_enabled_.store(false, std::memory_order_relaxed);
            stats_.enabled = false;
            Add(Counters().zerocopy_turned_off, 1);
          }
        }
        MarkCompleted(lo, hi);
      }
    }
    while (!held_.empty() && Before(held_.front().last_id, completed_below_)) {
      frames_held_.fetch_sub(held_.front().frames.size(), std::memory_order_release);
      released.push_back(std::move(held_.front()));
      held_.pop_front();
    }
  }
  // The buffers go back to their owners here, outside the lock.
}

TcpStats TcpStats::Process() {
  ProcessCounters& c = Counters();
  TcpStats s;
  s.frames_sent = c.frames_sent.load(std::memory_order_relaxed);
  s.write_calls = c.write_calls.load(std::memory_order_relaxed);
  s.zerocopy_sends = c.zerocopy_sends.load(std::memory_order_relaxed);
  s.zerocopy_completions = c.zerocopy_completions.load(std::memory_order_relaxed);
  s.zerocopy_copied_completions = c.zerocopy_copied_completions.load(std::memory_order_relaxed);
  s.zerocopy_turned_off = c.zerocopy_turned_off.load(std::memory_order_relaxed);
  s.zerocopy_receive_probes = c.zerocopy_receive_probes.load(std::memory_order_relaxed);
  s.zerocopy_receive_probe_bytes = c.zerocopy_receive_probe_bytes.load(std::memory_order_relaxed);
  s.zerocopy_receive_mapped_bytes = c.zerocopy_receive_mapped_bytes.load(std::memory_order_relaxed);
  return s;
}

void TcpStats::CountZeroCopyReceiveProbe(uint64_t asked, uint64_t mapped) {
  ProcessCounters& c = Counters();
  Add(c.zerocopy_receive_probes, 1);
  Add(c.zerocopy_receive_probe_bytes, asked);
  Add(c.zerocopy_receive_mapped_bytes, mapped);
}

ZeroCopyStats FrameWriter::zerocopy_stats() const {
  std::lock_guard lock(zc_mu_);
  ZeroCopyStats s = stats_;
  s.frames_held = frames_held_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace zcrpc::transport::tcp
