#include "zcrpc/transport/tcp/frame_writer.h"

#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
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

// More than this queued behind a write, and senders wait: backpressure.
constexpr uint64_t kMaxQueuedBytes = 16 << 20;

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

FrameWriter::FrameWriter(int fd, const TcpOptions& options, std::string peer)
    : fd_(fd), options_(options), peer_(std::move(peer)) {
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

void FrameWriter::Shutdown() {
  stopping_.store(true, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  shut_down_ = true;
  queue_.clear();
  queued_bytes_ = 0;
  room_.notify_all();
}

Status FrameWriter::Send(Frame frame) {
  frame.SetLengthsFromParts();
  Outgoing out;
  for (const Buffer& a : frame.attachments) out.table.push_back(a.size());
  StreamLayout layout = Lay(frame, out.table, [](const void*, uint64_t) {});
  frame.header.padding_len = layout.padding();
  EncodeWireHeader(frame.header, out.header);
  out.bytes = kWireHeaderSize + layout.end();
  out.frame = std::move(frame);

  std::unique_lock lock(mu_);
  if (shut_down_) return absl::UnavailableError(absl::StrCat("connection to ", peer_, " is closed"));
  if (corked_writer == this && queued_bytes_ < kMaxQueuedBytes && queue_.size() + 1 < kMaxCorkedFrames) {
    queued_bytes_ += out.bytes;
    queue_.push_back(std::move(out));
    corked_queued_ = true;
    return absl::OkStatus();
  }
  if (writing_) {
    // Another thread is writing: it takes this frame with its next batch.
    room_.wait(lock, [&] { return queued_bytes_ < kMaxQueuedBytes || shut_down_; });
    if (shut_down_) return absl::UnavailableError(absl::StrCat("connection to ", peer_, " is closed"));
    queued_bytes_ += out.bytes;
    queue_.push_back(std::move(out));
    return absl::OkStatus();
  }
  // This thread writes: first whatever a corked delivery left queued, so
  // frames keep their order, then its own.
  writing_ = true;
  std::swap(batch_, queue_);
  queued_bytes_ = 0;
  batch_.push_back(std::move(out));
  return WriteAll(lock);
}

void FrameWriter::Cork() {
  corked_writer = this;
  corked_queued_ = false;
}

Status FrameWriter::Uncork() {
  corked_writer = nullptr;
  if (!corked_queued_) return absl::OkStatus();  // nothing held back: no lock to take
  std::unique_lock lock(mu_);
  if (writing_ || queue_.empty() || shut_down_) return absl::OkStatus();  // a writer in progress takes them
  writing_ = true;
  std::swap(batch_, queue_);
  queued_bytes_ = 0;
  room_.notify_all();
  return WriteAll(lock);
}

Status FrameWriter::WriteAll(std::unique_lock<std::mutex>& lock) {
  for (;;) {
    lock.unlock();
    Status written = WriteBatch(batch_);
    batch_.clear();
    lock.lock();
    if (!written.ok()) {
      writing_ = false;
      return written;  // the caller closes the connection; queued frames die with it
    }
    if (queue_.empty()) break;
    std::swap(batch_, queue_);
    queued_bytes_ = 0;
    room_.notify_all();
  }
  writing_ = false;
  return absl::OkStatus();
}

void FrameWriter::AppendIov(const Outgoing& out) {
  iov_.push_back({const_cast<uint8_t*>(out.header.data()), out.header.size()});
  Lay(out.frame, out.table, [this](const void* p, uint64_t n) {
    iov_.push_back({const_cast<void*>(p), static_cast<size_t>(n)});
  });
}

Status FrameWriter::WriteBatch(std::vector<Outgoing>& batch) {
  iov_.clear();
  uint64_t total = 0;
  for (const Outgoing& out : batch) {
    AppendIov(out);
    total += out.bytes;
  }
  bool zerocopy = zerocopy_enabled_.load(std::memory_order_relaxed) && total >= options_.zerocopy_min_bytes;
  bool used_zerocopy = false;
  uint32_t last_id = 0;
  size_t first = 0;
  while (first < iov_.size()) {
    if (stopping_.load(std::memory_order_relaxed)) {
      return absl::UnavailableError(absl::StrCat("connection to ", peer_, " is closed"));
    }
    msghdr msg{};
    msg.msg_iov = &iov_[first];
    msg.msg_iovlen = std::min<size_t>(iov_.size() - first, IOV_MAX);
    const int flags = MSG_NOSIGNAL | (zerocopy ? MSG_ZEROCOPY : 0);
    ssize_t n = ::sendmsg(fd_, &msg, flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // The peer is not reading: wait for room (backpressure), waking now
        // and then to notice a shutdown. Held frames are freed meanwhile.
        if (holds_frames()) ReapCompletions();
        pollfd p{fd_, POLLOUT, 0};
        ::poll(&p, 1, 100);
        continue;
      }
      if (errno == ENOBUFS && zerocopy) {
        // No room for another completion notification: send this one plainly.
        zerocopy = false;
        continue;
      }
      return absl::UnavailableError(absl::StrCat("send to ", peer_, " failed: ", std::strerror(errno)));
    }
    write_calls_.fetch_add(1, std::memory_order_relaxed);
    Add(Counters().write_calls, 1);
    if (zerocopy) {
      std::lock_guard lock(zc_mu_);
      last_id = next_id_++;
      ++stats_.sends;
      Add(Counters().zerocopy_sends, 1);
      used_zerocopy = true;
    }
    size_t left = static_cast<size_t>(n);
    while (first < iov_.size() && left >= iov_[first].iov_len) left -= iov_[first++].iov_len;
    if (left > 0) {
      iov_[first].iov_base = static_cast<uint8_t*>(iov_[first].iov_base) + left;
      iov_[first].iov_len -= left;
    }
  }
  frames_sent_.fetch_add(batch.size(), std::memory_order_relaxed);
  Add(Counters().frames_sent, batch.size());
  if (used_zerocopy) {
    // The kernel may still read these pages: keep the buffers until it says.
    std::lock_guard lock(zc_mu_);
    frames_held_.fetch_add(batch.size(), std::memory_order_release);
    held_.push_back({last_id, std::move(batch)});
    batch = std::vector<Outgoing>();
  }
  if (holds_frames()) ReapCompletions();
  return absl::OkStatus();
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
    if (held_.empty()) return;
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
