#include "zcrpc/transport/tcp/frame_reader.h"

#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/copy_stats.h"
#include "zcrpc/transport/tcp/tcp_stats.h"

namespace zcrpc::transport::tcp {
namespace {
constexpr size_t kScratchBytes = 64 << 10;
// Below this much missing, waking per segment costs little; above it, the
// wake-up threshold is raised (to at most kMaxWakeThreshold, which the
// kernel's receive buffer always holds).
constexpr uint64_t kRaiseWakeThresholdAbove = 16 << 10;
constexpr uint64_t kMaxWakeThreshold = 256 << 10;
// The TCP_ZEROCOPY_RECEIVE try asks for this much (whole pages).
constexpr uint64_t kZeroCopyProbeBytes = 256 << 10;
}  // namespace

FrameReader::FrameReader(int fd, const FrameLimits& limits, std::string peer, bool probe_zerocopy_receive,
                         std::shared_ptr<MemoryQuota> quota)
    : fd_(fd),
      limits_(limits),
      peer_(std::move(peer)),
      quota_(std::move(quota)),
      pool_(ReceiveStagePool::New()),
      scratch_(new uint8_t[kScratchBytes]),
      probe_pending_(probe_zerocopy_receive) {
  stage_ = pool_->Take();
  pos_ = end_ = ReceiveStage::kHeaderOffset;
  window_end_ = ReceiveStage::kBytes;
}

FrameReader::~FrameReader() {
  ReleaseReservation();
  stage_->Unref();
  pool_->Close();
}

Status FrameReader::Malformed(std::string_view why) const {
  return absl::InvalidArgumentError(absl::StrCat("malformed frame from ", peer_, ": ", ToAbsl(why)));
}

void FrameReader::NewBoundary() {
  // Slices of the old stage may still be alive in the runtime; it returns
  // to the pool when the last one goes.
  if (!stage_->unshared()) {
    stage_->Unref();
    stage_ = pool_->Take();
  }
  pos_ = end_ = ReceiveStage::kHeaderOffset;
  window_end_ = ReceiveStage::kBytes;
}

void FrameReader::SetWakeThreshold(uint64_t bytes) {
  const int threshold = static_cast<int>(std::clamp<uint64_t>(bytes, 1, kMaxWakeThreshold));
  if (threshold == wake_threshold_) return;
  if (::setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &threshold, sizeof threshold) == 0) wake_threshold_ = threshold;
}

void FrameReader::MoveTailToNewStage() {
  ReceiveStage* next = pool_->Take();
  const size_t have = end_ - pos_;
  const size_t header_bytes = std::min(have, kWireHeaderSize);
  std::memcpy(next->data() + ReceiveStage::kHeaderOffset, stage_->data() + pos_, header_bytes);
  if (have > header_bytes) {
    CountedCopy(next->data() + ReceiveStage::kWindowOffset, stage_->data() + pos_ + header_bytes,
                have - header_bytes);
  }
  stage_->Unref();
  stage_ = next;
  pos_ = ReceiveStage::kHeaderOffset;
  end_ = pos_ + have;
  window_end_ = ReceiveStage::kBytes;
}

void FrameReader::AddSpill(uint64_t offset, uint8_t* dest, uint64_t len) {
  // Padding up to `offset` goes to the scratch page, in pieces it can hold.
  while (spill_cursor_ < offset) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(offset - spill_cursor_, kScratchBytes));
    spill_.push_back({scratch_.get(), n});
    spill_cursor_ += n;
  }
  if (len >= kZeroCopyProbeBytes && probe_pending_ && probe_iov_ == SIZE_MAX) probe_iov_ = spill_.size();
  if (len > 0) spill_.push_back({dest, static_cast<size_t>(len)});
  spill_cursor_ += len;
}

Status FrameReader::ReadAvailable(absl::FunctionRef<void(Frame)> deliver, uint64_t* bytes_read) {
  for (;;) {
    ssize_t n = 0;
    size_t asked = 0;
    const bool read_window = phase_ == Phase::kWindow;
    switch (phase_) {
      case Phase::kWindow:
        ZCRPC_RETURN_IF_ERROR(ParseWindow(deliver));
        if (phase_ != Phase::kWindow) continue;
        if (end_ >= window_end_) return absl::InternalError("tcp frame reader: window full with no frame");
        asked = window_end_ - end_;
        n = ::recv(fd_, stage_->data() + end_, asked, MSG_DONTWAIT);
        if (n > 0) end_ += static_cast<size_t>(n);
        break;
      case Phase::kSpill: {
        if (spill_next_ == probe_iov_) {
          int queued = 0;
          if (::ioctl(fd_, FIONREAD, &queued) == 0 && static_cast<uint64_t>(queued) >= kZeroCopyProbeBytes) {
            ProbeZeroCopyReceive();
            if (spill_next_ == spill_.size()) ZCRPC_RETURN_IF_ERROR(FinishSpill(deliver));
            continue;
          }
        }
        const int count = static_cast<int>(std::min<size_t>(spill_.size() - spill_next_, IOV_MAX));
        n = ::readv(fd_, &spill_[spill_next_], count);
        if (n <= 0) break;
        size_t left = static_cast<size_t>(n);
        while (left > 0 && left >= spill_[spill_next_].iov_len) left -= spill_[spill_next_++].iov_len;
        if (left > 0) {
          spill_[spill_next_].iov_base = static_cast<uint8_t*>(spill_[spill_next_].iov_base) + left;
          spill_[spill_next_].iov_len -= left;
        }
        if (spill_next_ == spill_.size()) ZCRPC_RETURN_IF_ERROR(FinishSpill(deliver));
        break;
      }
      case Phase::kDiscard:
        n = ::recv(fd_, scratch_.get(), static_cast<size_t>(std::min<uint64_t>(discard_left_, kScratchBytes)),
                   MSG_DONTWAIT);
        if (n > 0) {
          discard_left_ -= static_cast<uint64_t>(n);
          if (discard_left_ == 0) {
            deliver(std::move(frame_));
            frame_ = Frame{};
            phase_ = Phase::kWindow;
            NewBoundary();
          }
        }
        break;
    }
    if (n > 0) {
      *bytes_read += static_cast<uint64_t>(n);
      // A short read of the window took all the socket had: stop here
      // rather than pay a system call to hear EAGAIN. Whoever waits next (a
      // level-triggered epoll arm, poll()) sees bytes that arrive meanwhile
      // at once. (Not while a large part streams in: reading on is cheaper
      // than waking for each chunk.)
      if (read_window && static_cast<size_t>(n) < asked) {
        ZCRPC_RETURN_IF_ERROR(ParseWindow(deliver));
        SetWakeThreshold(MissingAfterThisRead());
        return absl::OkStatus();
      }
      continue;
    }
    if (n == 0) return absl::UnavailableError(absl::StrCat("connection closed by ", peer_));
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      SetWakeThreshold(MissingAfterThisRead());
      return absl::OkStatus();
    }
    return absl::UnavailableError(absl::StrCat("read from ", peer_, " failed: ", std::strerror(errno)));
  }
}

void FrameReader::ProbeZeroCopyReceive() {
  probe_pending_ = false;
  probe_iov_ = SIZE_MAX;
  iovec& part = spill_[spill_next_];
  probe_.asked = std::min<uint64_t>(kZeroCopyProbeBytes, part.iov_len / BufferPool::kPageSize * BufferPool::kPageSize);
  void* window = ::mmap(nullptr, probe_.asked, PROT_READ, MAP_SHARED, fd_, 0);
  if (window == MAP_FAILED) {
    probe_.error = errno;
  } else {
    tcp_zerocopy_receive zc{};
    zc.address = reinterpret_cast<uint64_t>(window);
    zc.length = static_cast<uint32_t>(probe_.asked);
    socklen_t zc_len = sizeof zc;
    if (::getsockopt(fd_, IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE, &zc, &zc_len) != 0) {
      probe_.error = errno;
    } else if (zc.length > 0) {
      // The bytes are consumed from the socket into the read-only mapping:
      // move them into the part, which the handler will own and may write.
      probe_.mapped = zc.length;
      CountedCopy(part.iov_base, window, zc.length);
      part.iov_base = static_cast<uint8_t*>(part.iov_base) + zc.length;
      part.iov_len -= zc.length;
      if (part.iov_len == 0) ++spill_next_;
    }
    ::munmap(window, probe_.asked);
  }
  TcpStats::CountZeroCopyReceiveProbe(probe_.asked, probe_.mapped);
  probe_.done = true;
  probe_done_.store(true, std::memory_order_release);
}

FrameReader::ZeroCopyReceiveProbe FrameReader::zerocopy_receive_probe() const {
  if (!probe_done_.load(std::memory_order_acquire)) return {};
  return probe_;
}

uint64_t FrameReader::MissingAfterThisRead() const {
  // Wake for a chunk of a large part; for anything else, for any byte.
  uint64_t missing = 0;
  if (phase_ == Phase::kSpill) {
    for (size_t i = spill_next_; i < spill_.size() && missing < kMaxWakeThreshold; ++i) missing += spill_[i].iov_len;
  } else if (phase_ == Phase::kDiscard) {
    missing = discard_left_;
  }
  return missing > kRaiseWakeThresholdAbove ? missing : 1;
}

Status FrameReader::ParseWindow(absl::FunctionRef<void(Frame)> deliver) {
  while (phase_ == Phase::kWindow) {
    const size_t have = end_ - pos_;
    if (have == 0) {
      NewBoundary();
      return absl::OkStatus();
    }
    uint64_t need_body = 0;
    if (have >= kWireHeaderSize) {
      StatusOr<WireHeader> header =
          DecodeWireHeader(std::span<const uint8_t, kWireHeaderSize>(stage_->data() + pos_, kWireHeaderSize));
      if (!header.ok()) return Malformed(std::string(header.status().message()));
      bool need_more = false;
      ZCRPC_RETURN_IF_ERROR(StartFrame(*header, deliver, &need_more, &need_body));
      if (!need_more) continue;
    }
    // The frame is not complete. Its inline bytes fit one window from its
    // own start; if that runs past this stage's window, move it.
    if (pos_ + kWireHeaderSize + need_body > window_end_) {
      MoveTailToNewStage();
    }
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

Status FrameReader::CheckTable(const WireHeader& h) const {
  // Peer-given lengths: they must add up to exactly the section.
  uint64_t remaining = h.attachments_len - table_.size() * kAttachmentLengthSize;
  for (uint64_t len : table_) {
    if (len > remaining) return Malformed("attachment lengths exceed the attachment section");
    remaining -= len;
  }
  if (remaining != 0) return Malformed("attachment lengths do not fill the attachment section");
  return absl::OkStatus();
}

void FrameReader::Discard(const WireHeader& h, Frame::DiscardReason why, absl::FunctionRef<void(Frame)> deliver) {
  const size_t body = pos_ + kWireHeaderSize;
  const uint64_t here = std::min<uint64_t>(end_ - body, h.wire_body_len());
  pos_ = body + here;
  frame_ = Frame{};
  frame_.header = h;
  frame_.body_discarded = true;
  frame_.discard_reason = why;
  discard_left_ = h.wire_body_len() - here;
  if (discard_left_ > 0) {
    phase_ = Phase::kDiscard;
  } else {
    deliver(std::move(frame_));
    frame_ = Frame{};
  }
}

void FrameReader::ReleaseReservation() {
  if (reserved_ == 0) return;
  quota_->Release(reserved_);
  reserved_ = 0;
}

Status FrameReader::StartFrame(const WireHeader& h, absl::FunctionRef<void(Frame)> deliver, bool* need_more,
                               uint64_t* need_body) {
  const size_t body = pos_ + kWireHeaderSize;
  const uint64_t have_body = end_ - body;

  if (Status limit = CheckLimits(h, limits_); !limit.ok()) {
    if (h.wire_body_len() > kMaxDiscardBytes) {
      return absl::ResourceExhaustedError(absl::StrCat("frame from ", peer_, ": ", limit.message()));
    }
    // Drain the body and let the runtime fail just this call.
    Discard(h, Frame::DiscardReason::kOverLimits, deliver);
    return absl::OkStatus();
  }
  // A body that spills is allocated when its header is in: first it must
  // fit the quota (once per frame: this runs again while the inline part
  // is still arriving).
  if (quota_ != nullptr && reserved_ == 0 && h.wire_body_len() > kInlineWindow) {
    if (!quota_->TryReserve(h.body_len())) {
      Discard(h, Frame::DiscardReason::kOverQuota, deliver);
      return absl::OkStatus();
    }
    reserved_ = h.body_len();
  }

  // Where the parts are: known up to the table from the header alone, and
  // entirely once the table is in hand.
  StreamLayout layout;
  const PartPlacement metadata = layout.Next(h.metadata_len);
  const PartPlacement message = layout.Next(h.message_len);
  const uint64_t table_len = uint64_t{h.attachment_count} * kAttachmentLengthSize;
  const PartPlacement table = layout.Next(table_len, PartKind::kTable);
  const bool table_known = table_len == 0 || table.inline_part;
  if (table_len > 0 && table.inline_part && have_body < table.offset + table_len) {
    *need_more = true;
    *need_body = table.offset + table_len;
    return absl::OkStatus();
  }
  table_.resize(h.attachment_count);  // within limits: checked above
  StreamLayout full = layout;
  if (table_known) {
    if (table_len > 0) std::memcpy(table_.data(), stage_->data() + body + table.offset, table_len);
    ZCRPC_RETURN_IF_ERROR(CheckTable(h));
    for (uint64_t len : table_) full.Next(len);
    full.Finish();
    if (full.padding() != h.padding_len) return Malformed("padding does not match the stream layout");
  }
  const uint64_t need = !full.spilled() ? full.end() : full.inline_end();
  if (have_body < need) {
    *need_more = true;
    *need_body = need;
    return absl::OkStatus();
  }

  // Everything inline is here: hand it over as slices; give every spilled
  // part its own buffer and read list entry.
  frame_ = Frame{};
  frame_.header = h;
  spill_.clear();
  probe_iov_ = SIZE_MAX;
  spill_next_ = 0;
  spill_cursor_ = have_body;  // the rest of the stage is this frame's padding (stream_layout.h)
  bool out_of_memory = false;
  auto part = [&](PartPlacement placement, uint64_t len) {
    if (len == 0) return Buffer();
    if (placement.inline_part) return stage_->Slice(body + placement.offset, len);
    std::optional<Buffer> buffer = BufferPool::Default().TryAllocate(len);
    if (!buffer) {
      out_of_memory = true;
      return Buffer();
    }
    AddSpill(placement.offset, buffer->data(), len);
    return std::move(*buffer);
  };
  frame_.metadata = part(metadata, h.metadata_len);
  frame_.message = part(message, h.message_len);
  if (!full.spilled()) {
    StreamLayout attachments = layout;
    for (uint64_t len : table_) frame_.attachments.push_back(part(attachments.Next(len), len));
    pos_ = body + full.end();
    ReleaseReservation();
    deliver(std::move(frame_));
    frame_ = Frame{};
    return absl::OkStatus();
  }
  if (table_known) {
    StreamLayout attachments = layout;
    for (uint64_t len : table_) frame_.attachments.push_back(part(attachments.Next(len), len));
  }
  if (out_of_memory) {
    // Only this call fails: its body is read past like one over the limits.
    spill_.clear();
    ReleaseReservation();
    Discard(h, Frame::DiscardReason::kOutOfMemory, deliver);
    return absl::OkStatus();
  }
  pos_ = end_;
  if (table_known) {
    AddSpill(full.end(), nullptr, 0);
  } else {
    AddSpill(table.offset, reinterpret_cast<uint8_t*>(table_.data()), table_len);
    table_pending_ = true;
    pending_layout_ = layout;
  }
  phase_ = Phase::kSpill;
  if (spill_.empty()) return FinishSpill(deliver);
  return absl::OkStatus();
}

Status FrameReader::FinishSpill(absl::FunctionRef<void(Frame)> deliver) {
  if (table_pending_) {
    table_pending_ = false;
    ZCRPC_RETURN_IF_ERROR(CheckTable(frame_.header));
    spill_.clear();
    probe_iov_ = SIZE_MAX;
    spill_next_ = 0;
    StreamLayout layout = pending_layout_;
    for (uint64_t len : table_) {
      std::optional<Buffer> buffer = BufferPool::Default().TryAllocate(len);
      // Mid-frame, with no cheap way to read past the rest: the connection
      // ends instead of the process.
      if (!buffer) {
        return absl::ResourceExhaustedError(
            absl::StrCat("out of memory for a ", len, "-byte attachment from ", peer_, "; closing the connection"));
      }
      AddSpill(layout.Next(len).offset, buffer->data(), len);  // after a spilled table, everything spills
      frame_.attachments.push_back(std::move(*buffer));
    }
    layout.Finish();
    if (layout.padding() != frame_.header.padding_len) return Malformed("padding does not match the stream layout");
    AddSpill(layout.end(), nullptr, 0);
    if (!spill_.empty()) return absl::OkStatus();
  }
  ReleaseReservation();
  deliver(std::move(frame_));
  frame_ = Frame{};
  phase_ = Phase::kWindow;
  NewBoundary();
  return absl::OkStatus();
}

}  // namespace zcrpc::transport::tcp
