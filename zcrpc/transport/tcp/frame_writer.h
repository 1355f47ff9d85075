// FrameWriter: the send side of one tcp connection.
//
// Each frame goes out as one gather list (header, parts and the padding the
// stream layout asks for, stream_layout.h); nothing is concatenated.
// Batching: one sender at a time writes; frames that other threads send
// meanwhile are queued and the writer sends them all in its next sendmsg()
// (up to IOV_MAX entries), so with many calls in flight one system call
// carries many frames.
// Never waits: when the socket is full (EAGAIN) the rest of the batch stays
// here, Send() returns, and the result asks the connection to arm EPOLLOUT;
// the loop thread calls Resume() when the socket is writable again. Every
// byte queued and written is accounted in the connection's SendBudget
// (Queued() in Send(), Drained() as sendmsg() hands bytes to the kernel).
// MSG_ZEROCOPY: a write of at least zerocopy_min_bytes goes out with it,
// and its frames' buffers are held until the kernel's completion says the
// pages are free. When a completion says the kernel copied anyway
// (SO_EE_CODE_ZEROCOPY_COPIED: loopback, or a NIC without scatter-gather),
// auto mode stops using it on this connection.
//
// Thread-safe: one thread at a time holds the writer role; the others
// queue. The role moves between the threads that call Send() and the loop
// thread that calls Resume(), never waiting for each other. It is one bit
// of an atomic word (state_) together with "a batch waits for room" and
// "frames are queued", so a Send() that finds the writer idle with nothing
// queued takes the role with one compare-and-swap and writes without any
// lock: a blocking caller's request costs no mutex here. The queue (mu_)
// is only for frames that arrive while another thread writes, while the
// socket is full, or while a delivery corks.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <sys/uio.h>

#include "absl/container/inlined_vector.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/base/status.h"
#include "zcrpc/transport/internal/send_budget.h"
#include "zcrpc/transport/tcp/tcp_address.h"

namespace zcrpc::transport::tcp {

struct ZeroCopyStats {
  uint64_t sends = 0;                // sendmsg() calls with MSG_ZEROCOPY
  uint64_t completions = 0;          // of those, completed by the kernel
  uint64_t copied_completions = 0;   // of those, where the kernel copied after all
  bool enabled = false;              // whether the next large write will use it
  uint64_t frames_held = 0;          // frames waiting for a completion now
};

class FrameWriter {
 public:
  // What the connection must do after a call that may have written.
  struct Result {
    Status status;               // not OK: the socket failed; close the connection
    bool wait_writable = false;  // the socket is full: arm EPOLLOUT, then Resume()
    bool owe_writable = false;   // the budget says OnWritable() is due
    void Merge(const Result& other) {
      if (status.ok()) status = other.status;
      wait_writable = wait_writable || other.wait_writable;
      owe_writable = owe_writable || other.owe_writable;
    }
  };

  // `budget` outlives the writer.
  FrameWriter(int fd, const TcpOptions& options, std::string peer, internal::SendBudget* budget);
  // Releases frames still held for completions: destroy only after the
  // socket is closed (abortively, if any were held: connection.cc).
  ~FrameWriter();
  FrameWriter(const FrameWriter&) = delete;
  FrameWriter& operator=(const FrameWriter&) = delete;

  // Writes the frame, or queues it behind the write in progress or the
  // bytes waiting for room in the socket. Never waits. The frame's limits
  // are the caller's to check. An error status is UNAVAILABLE (closed, or
  // the write failed: the caller closes the connection).
  Result Send(Frame frame);

  // The socket is writable again (EPOLLOUT): writes what waited. On a loop
  // thread.
  Result Resume();

  // Releases the frames whose MSG_ZEROCOPY completions have arrived on the
  // socket's error queue. Any thread; returns at once when none are held.
  void ReapCompletions();
  bool holds_frames() const { return frames_held_.load(std::memory_order_acquire) > 0; }
  // Frames held, or completions the kernel still owes (which keep the
  // socket reporting EPOLLERR until read). One atomic look each.
  bool awaits_completions() const {
    return holds_frames() || zc_outstanding_.load(std::memory_order_acquire) > 0;
  }

  // Corking: while the reading thread delivers a batch of frames, the
  // frames its handlers send in reply are queued (Send() returns at once)
  // and Uncork() writes them all in one sendmsg(). Only sends from the
  // corking thread are held back.
  void Cork();
  Result Uncork();

  // From now on Send() fails; queued frames are dropped (or held, if the
  // kernel may still read their pages).
  void Shutdown();

  ZeroCopyStats zerocopy_stats() const;
  uint64_t frames_sent() const { return frames_sent_.load(std::memory_order_relaxed); }
  uint64_t write_calls() const { return write_calls_.load(std::memory_order_relaxed); }

 private:
  struct Outgoing {
    std::array<uint8_t, 64> header;
    // Attachment lengths, as sent; inline for the common few, so a frame
    // with attachments allocates nothing here either.
    absl::InlinedVector<uint64_t, 4> table;
    Frame frame;
    uint64_t bytes = 0;           // on the wire, header and padding included
  };
  struct Held {
    uint32_t last_id;             // the last zerocopy send that carried their bytes
    std::vector<Outgoing> frames;
  };

  enum class Outcome { kDone, kWouldBlock, kFailed };

  // state_ bits. kWriting and kBlocked are never set together.
  static constexpr uint32_t kWriting = 1;  // a thread holds the writer role (owns batch_, iov_)
  static constexpr uint32_t kBlocked = 2;  // batch_ waits for EPOLLOUT; Resume() (or Shutdown()) takes the role
  static constexpr uint32_t kQueued = 4;   // queue_ is not empty; changed only under mu_

  // Lays the frame out (header, attachment table, wire size). No lock.
  static Outgoing Prepare(Frame frame);
  // Writes batch_ and then whatever was queued meanwhile, until the queue
  // is empty or the socket is full, then gives the writer role up (or
  // hands it to Resume()). REQUIRES: the writer role, mu_ not held.
  Result WriteAll();
  // Takes queue_ as the next batch. REQUIRES: mu_ held, writer role.
  void TakeQueue();
  // Lays out batch_'s gather list. REQUIRES: writer role.
  void LayBatch();
  // Clears kWriting, keeping the other bits. REQUIRES: writer role.
  void ReleaseRole();
  // Writes the rest of batch_ until done or EAGAIN.
  Outcome WriteBatch(Result* result);
  // The batch is written or abandoned: hold it for MSG_ZEROCOPY
  // completions if the kernel may still read it, else let it go.
  void RetireBatch();
  void AppendIov(const Outgoing& out);
  Status Closed() const;
  void MarkCompleted(uint32_t lo, uint32_t hi);  // zc_mu_ held

  const int fd_;
  const TcpOptions options_;
  const std::string peer_;

  internal::SendBudget* const budget_;

  std::atomic<uint32_t> state_{0};  // kWriting | kBlocked | kQueued
  std::mutex mu_;
  bool shut_down_ = false;         // guarded by mu_
  std::atomic<bool> stopping_{false};
  // Guarded by mu_. Its capacity, and batch_'s, is kept across calls: the
  // two swap at every TakeQueue(), so a steady stream of sends allocates
  // nothing.
  std::vector<Outgoing> queue_;
  uint64_t queued_bytes_ = 0;      // guarded by mu_
  // Whether a corked Send() queued a frame since Cork(); touched only by the
  // thread that corks, which owns the connection's reading meanwhile.
  bool corked_queued_ = false;
  // The writer's own, touched only by the thread that holds the writer
  // role. While kBlocked, no thread holds it and they wait for Resume().
  std::vector<Outgoing> batch_;
  std::vector<iovec> iov_;
  size_t iov_first_ = 0;           // the first entry not fully written
  bool batch_zerocopy_ = false;    // the batch's writes use MSG_ZEROCOPY
  bool batch_used_zerocopy_ = false;
  uint32_t batch_last_id_ = 0;

  std::atomic<uint64_t> frames_sent_{0};
  std::atomic<uint64_t> write_calls_{0};

  std::atomic<bool> zerocopy_enabled_{false};
  mutable std::mutex zc_mu_;
  uint32_t next_id_ = 0;                           // guarded by zc_mu_ (written by the writer)
  uint32_t completed_below_ = 0;                   // ids before this are all complete
  std::vector<std::pair<uint32_t, uint32_t>> early_ranges_;  // completed out of order
  std::deque<Held> held_;                          // guarded by zc_mu_
  std::atomic<uint64_t> frames_held_{0};
  std::atomic<uint64_t> zc_outstanding_{0};         // zerocopy sends not yet completed
  ZeroCopyStats stats_;                            // guarded by zc_mu_
};

}  // namespace zcrpc::transport::tcp
