// StreamState: one end of a stream, as the client and the server both keep
// it: messages that arrived and wait to be read, the credit each side has
// (docs/wire.md, "Flow control"), and whether and how the stream ended.
//
// Credit, in bytes of message + attachment section:
//  - sending: `send_credit_` starts at kInitialStreamWindow and grows with
//    each credit frame; a message may go while it is positive (so one
//    message larger than the window still goes, alone) and takes its size
//    off, possibly below zero;
//  - receiving: the peer's credit is mirrored in `peer_credit_`; a message
//    that arrives while it is not positive broke the window. As the
//    application reads, the bytes it consumed go back to the peer in a
//    credit frame once they reach a quarter of the window, so at most the
//    window plus one message waits here.
//
// Threads: OnFrame() and End() run on delivering threads (or whoever ends
// the call); Read() on one application thread, Write()/CloseWrites() on
// one other at most. Everything is under one mutex; nothing is sent under
// it.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/base/status.h"
#include "zcrpc/rpc/call_table.h"
#include "zcrpc/rpc/stream.h"

namespace google::protobuf {
class MessageLite;
}
namespace zcrpc::transport {
class Connection;
}

namespace zcrpc::internal {

// Told, outside the stream's mutex, after every change a reader or writer
// may wait for (a message, credit, the peer's half-close, the end): how a
// reactor (reactor.h) learns it can go on without a thread that waits.
class StreamListener {
 public:
  virtual void OnStreamChanged() = 0;

 protected:
  ~StreamListener() = default;
};

class StreamState {
 public:
  struct Options {
    // Bytes of messages the peer may send ahead of this side's reads
    // (clamped to at least kInitialStreamWindow).
    uint64_t receive_window = 1 << 20;
    // The application's threads may read the connection themselves while
    // they wait (transport::Connection::PollUntil): the client's side.
    bool poll_connection = false;
    std::chrono::nanoseconds spin = std::chrono::microseconds(5);
    // This side closes its writes with a half-close frame (the client); the
    // server's writes end with its status instead.
    bool sends_half_close = false;
    // The stream ends with DEADLINE_EXCEEDED once no frame has come in and
    // no message has gone out for this long (0: never). Timed on `clock`.
    std::chrono::nanoseconds idle_timeout{0};
    Clock* clock = &Clock::Real();
  };
  // Called, outside the mutex, when this side finds the stream broken
  // (a message over the limits, the peer's window exceeded, a send that
  // failed): the owner ends the call with `status` and tells the peer.
  using Abort = std::function<void(Status status)>;
  using Listener = StreamListener;
  enum class ReadResult { kMessage, kNotYet, kNoMore };

  StreamState(Options options, Abort abort);
  StreamState(const StreamState&) = delete;
  StreamState& operator=(const StreamState&) = delete;

  // Where frames go, and the id they carry; before any frame can arrive.
  // `connection` must outlive this state (its owner keeps it alive).
  void Attach(transport::Connection* connection, CallId wire_call_id, int64_t deadline_nanos);
  // The credit frame that tells the peer this side's whole window, if it is
  // larger than the initial one; sent by the owner right after the stream
  // opened (client) or was accepted (server). No-op if not needed.
  void AnnounceWindow();
  // Changes this side's receive window from now on (a handler's
  // ServerContext::set_stream_window_bytes): a larger one is granted to the
  // peer at once, a smaller one by holding back the credit the peer has
  // yet to use. Clamped as in the constructor. Any thread.
  void SetReceiveWindow(uint64_t bytes);
  // When the owner's call-table slot is due (call_table.h): the call's
  // deadline or the moment the stream would have been idle for
  // Options::idle_timeout, whichever comes first; 0 for neither. The sweep
  // asks again when the slot comes due, since activity moves it later.
  int64_t DueAt() const;
  // The status a stream whose DueAt() has passed at `now` ends with:
  // DEADLINE_EXCEEDED, saying whether the deadline or the idle timeout
  // passed.
  Status ExpiredStatus(int64_t now) const;

  // Runs once, right before this side's first message goes (the server
  // sends its initial metadata there). Set before the stream is shared.
  void SetBeforeFirstMessage(std::function<void()> hook) { before_first_message_ = std::move(hook); }

  // Who is told of changes (nullptr: nobody). Any thread; a change under
  // way may still reach the previous listener.
  void SetListener(std::shared_ptr<Listener> listener);

  // --- delivering threads ---

  // A stream message, half-close or credit frame for this stream. Non-OK
  // if the peer broke the stream's rules; the caller then ends the stream
  // with that status (Abort is not called from here).
  // `notify_later`: the listener to tell is handed back there instead of
  // told here (the caller holds a table pin a reaction must not run under).
  Status OnFrame(Frame frame, std::shared_ptr<StreamListener>* notify_later = nullptr);
  // The stream is over, with `status`. `keep_messages`: messages that
  // arrived before stay readable (the peer ended it: a server's status at
  // the client); otherwise (a cancel, a deadline, a lost connection) they
  // are dropped. Wakes every waiter. The first call counts.
  void End(const Status& status, bool keep_messages = false);

  // --- application threads ---

  // Waits for the next message and parses it into `message`, its
  // attachments into `*attachments` (if given). False once no more will
  // come: the peer closed its writes, or the stream ended.
  bool Read(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments);
  // Read() that never waits: kNotYet while no message is there and more
  // may come.
  ReadResult TryRead(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments);
  // Serializes `message` into the connection's memory and sends it, once
  // the peer's window and the connection's send queue have room
  // (`may_wait`), or not (kWouldBlock). `attachments` are taken only when
  // the message goes (kWritten), so a write that would block can be tried
  // again with them. `respect_send_queue` false: a full connection send
  // queue does not hold the message back (a reactor client's one request).
  WriteStatus Write(const google::protobuf::MessageLite& message, std::vector<Buffer>&& attachments, bool may_wait,
                    bool respect_send_queue = true);
  // Whether a Write() now would not say kWouldBlock: the stream has credit
  // and the connection's send queue has room (or the stream is over).
  bool MayWriteNow() const;
  // The connection's send queue drained (ConnectionHandler::OnWritable):
  // a writer that found it full may go on. Returns the listener to tell,
  // once the caller holds no table pin.
  std::shared_ptr<Listener> OnWritable();
  // Sends the half-close frame (the client's side); false if over already.
  bool CloseWrites();
  // Waits until End(); returns its status.
  Status WaitEnded();

  bool ended() const;
  // True once ended, with the status End() was given in `*status`.
  bool EndedWith(Status* status) const;

 private:
  // Waits until `ready()` (under the lock), reading the connection on this
  // thread where the options allow.
  template <typename Ready>
  void WaitLocked(std::unique_lock<std::mutex>& lock, Ready ready) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a change; returns the listener to tell once the lock is gone.
  std::shared_ptr<Listener> ChangedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Status OnFrameLocked(Frame& frame, bool* changed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the next message if there is one; the credit to give back, if
  // any, in `*credit`.
  ReadResult TakeLocked(Frame* frame, uint64_t* credit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Deliver(Frame& frame, google::protobuf::MessageLite* message, std::vector<Buffer>* attachments);
  void SendCredit(uint64_t bytes);
  void FailHere(const Status& status);
  // Records activity for the idle timeout (a relaxed store; no-op when off).
  void Touch();
  uint64_t ClampWindow(uint64_t bytes) const;

  const Options options_;
  const Abort abort_;
  transport::Connection* connection_ = nullptr;  // set by Attach, before sharing
  CallId wire_call_id_ = 0;
  int64_t deadline_nanos_ = 0;

  mutable std::mutex mu_;
  std::condition_variable changed_;
  // Bumped (under mu_) on every change a waiter may wait for; read without
  // it by a thread polling the connection.
  std::atomic<uint64_t> version_{0};
  std::deque<Frame> inbox_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Listener> listener_ ABSL_GUARDED_BY(mu_);
  bool input_closed_ ABSL_GUARDED_BY(mu_) = false;   // the peer sends no more messages
  bool writes_closed_ ABSL_GUARDED_BY(mu_) = false;  // this side sends no more
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  Status end_status_ ABSL_GUARDED_BY(mu_);
  int64_t send_credit_ ABSL_GUARDED_BY(mu_) = kInitialStreamWindow;
  int64_t peer_credit_ ABSL_GUARDED_BY(mu_) = kInitialStreamWindow;
  uint64_t consumed_ ABSL_GUARDED_BY(mu_) = 0;  // read, not yet given back as credit
  uint64_t window_ ABSL_GUARDED_BY(mu_) = 0;    // this side's receive window
  // Credit still to hold back after the window shrank.
  uint64_t withheld_ ABSL_GUARDED_BY(mu_) = 0;
  bool announced_ ABSL_GUARDED_BY(mu_) = false;  // AnnounceWindow ran: the peer holds window_'s credit
  // The most window the connection's receive memory allows one stream
  // (transport::Capabilities::receive_memory_bytes); set by Attach.
  uint64_t max_window_ = kMaxStreamWindow;
  std::atomic<int64_t> last_active_nanos_{0};  // for the idle timeout
  std::function<void()> before_first_message_;  // taken by the first Write()
};

// Bytes a message frame takes from the window: message and attachment
// section, as the header counts them, and never less than a page.
inline uint64_t CreditCost(const WireHeader& h) {
  return std::max(uint64_t{h.message_len} + h.attachments_len, kStreamMessageMinCredit);
}

}  // namespace zcrpc::internal
