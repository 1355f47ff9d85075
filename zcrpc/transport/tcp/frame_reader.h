// FrameReader: turns the bytes of one tcp socket into Frames
// (stream_layout.h has the layout it relies on).
//
// At a frame boundary it reads the header and the inline window in one
// recv() into a ReceiveStage; each complete frame in the stage is handed
// over with its inline parts as slices of the stage. Spilled parts are then
// read with readv() straight into their own page-aligned buffers, padding
// into a scratch page. The one copy it can make: the start of a frame that
// arrived behind other frames and is not complete yet is moved to a fresh
// stage (counted, at most a header and an inline window: a few KiB, and only
// when several frames arrive in one read).
//
// TCP_ZEROCOPY_RECEIVE (probe_zerocopy_receive): the first time a part of
// 256 KiB or more is about to be read and that much is queued, the reader
// asks the kernel to map it instead, once, and records how much it mapped.
// Mapped pages are read-only and belong to the socket's mapping, so they
// are copied into the part (counted) and the connection reads with recv
// from then on; docs/zero-copy.md has why that is the right call here.
//
// Never blocks: ReadAvailable() reads until the socket has no more bytes.
// While a large part is being read it raises the socket's SO_RCVLOWAT to
// what is still missing (up to 256 KiB), so whoever waits on the socket is
// woken once per chunk rather than once per arriving segment.
// Receive stages are recycled (ReceiveStagePool): in steady state a frame
// boundary allocates nothing.
// Not thread-safe: one reader at a time (the connection's read ownership),
// except the accessors that say otherwise.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/base/memory_quota.h"
#include "zcrpc/base/status.h"
#include "zcrpc/transport/tcp/receive_stage.h"

namespace zcrpc::transport::tcp {

class FrameReader {
 public:
  // What the one TCP_ZEROCOPY_RECEIVE try on this connection found.
  struct ZeroCopyReceiveProbe {
    bool done = false;
    uint64_t asked = 0;   // bytes of a large part the kernel was asked to map
    uint64_t mapped = 0;  // bytes it mapped; copied into the part, counted
    int error = 0;        // errno if the try failed outright
  };

  // `quota`: where a body that will not fit the inline window is reserved
  // before it is allocated (memory_quota.h); null: none.
  FrameReader(int fd, const FrameLimits& limits, std::string peer, bool probe_zerocopy_receive = false,
              std::shared_ptr<MemoryQuota> quota = nullptr);
  ~FrameReader();
  FrameReader(const FrameReader&) = delete;
  FrameReader& operator=(const FrameReader&) = delete;

  // Reads what the socket holds, handing each complete frame to `deliver`
  // in order. OK once the socket would block; otherwise why the connection
  // is over: end of stream (UNAVAILABLE), a socket error, or a malformed
  // frame (INVALID_ARGUMENT). `*bytes_read` counts what this call read.
  Status ReadAvailable(absl::FunctionRef<void(Frame)> deliver, uint64_t* bytes_read);

  // Whether a frame has begun and is not complete: bytes of it were read
  // and more are due. For the receive stall timeout (a header followed by
  // silence). Same thread as ReadAvailable.
  bool mid_frame() const { return phase_ != Phase::kWindow || end_ > pos_; }

  // Safe from any thread once done is set (release/acquire).
  ZeroCopyReceiveProbe zerocopy_receive_probe() const;

  // Receive stages made since the connection began (not counting reuses).
  // Any thread.
  uint64_t stages_made() const { return pool_->made(); }

 private:
  enum class Phase { kWindow, kSpill, kDiscard };

  void ProbeZeroCopyReceive();

  Status ParseWindow(absl::FunctionRef<void(Frame)> deliver);
  // Consumes the frame whose header is at pos_, or says how many body bytes
  // it needs in the stage before it can.
  Status StartFrame(const WireHeader& header, absl::FunctionRef<void(Frame)> deliver, bool* need_more,
                    uint64_t* need_body);
  Status CheckTable(const WireHeader& header) const;
  // Reads the body of the frame whose header is at pos_ into the scratch
  // buffer and delivers the frame marked discarded.
  void Discard(const WireHeader& header, Frame::DiscardReason why, absl::FunctionRef<void(Frame)> deliver);
  // Gives back the current frame's reservation, if it has one.
  void ReleaseReservation();
  Status FinishSpill(absl::FunctionRef<void(Frame)> deliver);
  void AddSpill(uint64_t offset, uint8_t* dest, uint64_t len);
  void NewBoundary();
  void SetWakeThreshold(uint64_t bytes);
  // What the socket should hold before waking a reader again (SO_RCVLOWAT).
  uint64_t MissingAfterThisRead() const;
  void MoveTailToNewStage();
  Status Malformed(std::string_view why) const;

  const int fd_;
  const FrameLimits limits_;
  const std::string peer_;
  const std::shared_ptr<MemoryQuota> quota_;
  uint64_t reserved_ = 0;  // of quota_, for the frame being read

  Phase phase_ = Phase::kWindow;
  // Window phase: stage bytes [pos_, end_) are read and not yet consumed;
  // reads go to [end_, window_end_).
  ReceiveStagePool* const pool_;  // holds a reference, given back by the destructor
  ReceiveStage* stage_ = nullptr;
  size_t pos_ = 0;
  size_t end_ = 0;
  size_t window_end_ = 0;

  // The frame being completed by the spill phase.
  Frame frame_;
  uint64_t spill_cursor_ = 0;         // body offset the spill list reads up to
  bool table_pending_ = false;        // the table spilled: attachments are placed after it is read
  StreamLayout pending_layout_;       // the layout up to the table, when table_pending_
  std::vector<uint64_t> table_;       // attachment lengths
  std::vector<iovec> spill_;          // what is left to read, in order
  size_t spill_next_ = 0;
  uint64_t discard_left_ = 0;
  std::unique_ptr<uint8_t[]> scratch_;  // padding and discarded bodies land here
  int wake_threshold_ = 1;              // the socket's SO_RCVLOWAT

  // TCP_ZEROCOPY_RECEIVE is tried once, at the start of the first part of
  // kZeroCopyProbeBytes or more, when that much is queued.
  bool probe_pending_ = false;
  size_t probe_iov_ = SIZE_MAX;         // the spill_ entry where that part starts
  ZeroCopyReceiveProbe probe_;
  std::atomic<bool> probe_done_{false};
};

}  // namespace zcrpc::transport::tcp
