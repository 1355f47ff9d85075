#include "zcrpc/transport/tcp/frame_writer.h"

#include <linux/errqueue.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

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
StreamLayout Lay(const Frame& frame, const std::vector<uint64_t>& table, Emit emit) {
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
  stopping_.store(true, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  shut_down_ = true;
  queue_.clear();
  queued_bytes_ = 0;
  // A batch waiting for room has no writer to drop it: do it here. (A
  // writer in progress sees stopping_ and retires its own.)
  if (!writing_) {
    RetireBatch();
    blocked_ = false;
  }
}

FrameWriter::Result FrameWriter::Send(Frame frame) {
  frame.SetLengthsFromParts();
  Outgoing out;
  for (const Buffer& a : frame.attachments) out.table.push_back(a.size());
  StreamLayout layout = Lay(frame, out.table, [](const void*, uint64_t) {});
  frame.header.padding_len = layout.padding();
  EncodeWireHeader(frame.header, out.header);
  out.bytes = kWireHeaderSize + layout.end();
  out.frame = std::move(frame);

  std::unique_lock lock(mu_);
  if (shut_down_) return {Closed()};
  budget_->Queued(out.bytes);
  if (corked_writer == this && queued_bytes_ < kMaxCorkedBytes && queue_.size() + 1 < kMaxCorkedFrames) {
    queued_bytes_ += out.bytes;
    queue_.push_back(std::move(out));
    corked_queued_ = true;
    return {};
  }
  if (writing_ || blocked_) {
    // Another thread is writing, or the socket is full: the frame goes out
    // with the next batch, after everything before it.
    queued_bytes_ += out.bytes;
    queue_.push_back(std::move(out));
    return {};
  }
  // This thread writes: first whatever a corked delivery left queued, so
  // frames keep their order, then its own.
  writing_ = true;
  queued_bytes_ += out.bytes;
  queue_.push_back(std::move(out));
  TakeQueue();
  return WriteAll(lock);
}

FrameWriter::Result FrameWriter::Resume() {
  if (awaits_completions()) ReapCompletions();
  std::unique_lock lock(mu_);
  if (!blocked_ || writing_ || shut_down_) return {};
  blocked_ = false;
  writing_ = true;
  return WriteAll(lock);
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
  if (writing_ || blocked_ || queue_.empty() || shut_down_) return {};
  writing_ = true;
  TakeQueue();
  return WriteAll(lock);
}

void FrameWriter::TakeQueue() {
  std::swap(batch_, queue_);
  queued_bytes_ = 0;
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

FrameWriter::Result FrameWriter::WriteAll(std::unique_lock<std::mutex>& lock) {
  Result result;
  for (;;) {
    lock.unlock();
    const Outcome outcome = WriteBatch(&result);
    lock.lock();
    if (outcome == Outcome::kFailed) {
      RetireBatch();
      writing_ = false;
      return result;  // the caller closes the connection; queued frames die with it
    }
    if (outcome == Outcome::kWouldBlock) {
      if (shut_down_) {
        RetireBatch();
        writing_ = false;
        return result;
      }
      // The rest waits for room; the loop resumes when EPOLLOUT says so.
      writing_ = false;
      blocked_ = true;
      result.wait_writable = true;
      return result;
    }
    if (queue_.empty()) break;
    TakeQueue();
  }
  writing_ = false;
  return result;
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
  batch_ = std::vector<Outgoing>();
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
