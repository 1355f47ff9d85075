// ReactorDriver: the engine behind every reactor (reactor.h). It keeps the
// operations the application started (at most one read, one write, then
// writes-done or finish), carries each out when the stream allows, and
// runs the reactor's reactions, one at a time, until the last: Done.
//
// Where reactions run: on the thread that brought the news when it is a
// delivering thread outside any reaction (a message, credit or the end
// from the transport), so a message costs no thread hand-off. Everywhere
// else on the process's reaction thread: an operation started outside
// this reactor's own reactions (from an application thread, or from
// another reactor's reaction), a deadline or cancel from the sweeper or
// an application thread. So no reaction runs inside a caller's Start*(),
// under the caller's locks. An operation started inside one of this
// reactor's reactions is carried out right after that reaction returns.
//
// Lifetime: shared between the reactor (its owner) and the runtime's call
// record (through the stream's listener), so a late notification after the
// reactor was deleted in OnDone touches only this object. Done is reported
// once: when the call has ended, every operation started has completed,
// and (server side) Finish() was carried out. Nothing calls the hooks
// after Done begins.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "zcrpc/base/buffer.h"
#include "zcrpc/base/status.h"
#include "zcrpc/rpc/internal/stream_state.h"
#include "zcrpc/rpc/reactor.h"

namespace google::protobuf {
class MessageLite;
}

namespace zcrpc::internal {

class ReactorDriver final : public StreamListener, public std::enable_shared_from_this<ReactorDriver> {
 public:
  using Hooks = ReactorHooks;  // reactor.h

  // The runtime's side of one call, given by Bind().
  struct Binding {
    // The call's stream; nullptr for a unary call (server callback form).
    StreamState* stream = nullptr;
    // Server: whether the call was cancelled (ServerContext::IsCancelled).
    std::function<bool()> cancelled;
    // Server: ends the call with `status`, sending the reply (client
    // streaming and unary: the response is serialized by it). Run once, by
    // the driver, after the last write completed.
    std::function<void(Status status)> finish;
    // Lets go of the call record; run once, right before Done. The stream
    // is not touched after it. The closure itself (and what it captured)
    // is destroyed after Done returned.
    std::function<void()> release;
    // Run once Done has returned (the reactor may be gone): what waits for
    // the reactor to be over (Server::Shutdown) learns it here.
    std::function<void()> after_done;
  };

  explicit ReactorDriver(Hooks* hooks) : hooks_(hooks) {}
  ReactorDriver(const ReactorDriver&) = delete;
  ReactorDriver& operator=(const ReactorDriver&) = delete;

  // --- application side: any thread, until Done ---

  // At most one read and one write outstanding; a second is refused with an
  // immediate ReadDone/WriteDone(false).
  void StartRead(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments);
  enum class AfterWrite { kNothing, kWritesDone, kFinish };
  // `message` must stay valid until WriteDone. `after`: the write is
  // followed by writes-done (client) or Finish(`finish_status`) (server).
  void StartWrite(const google::protobuf::MessageLite* message, std::vector<Buffer> attachments, AfterWrite after,
                  Status finish_status = Status());
  void StartWritesDone();
  // Server: ends the call with `status` once the outstanding write (if any)
  // completed. Only the first counts.
  void Finish(Status status);

  // --- runtime side ---

  // The call exists: operations started so far go ahead. Once, before any
  // notification; the caller's thread runs what is ready.
  void Bind(Binding binding);
  // Client: the call could not start; Done(`status`) follows (after the
  // operations the application started completed with false).
  void FailToStart(Status status);
  // Something changed (the stream's listener; a cancel).
  void OnStreamChanged() override;

 private:
  enum class Step { kNone, kRefused, kCancelled, kRead, kWrite, kWritesDone, kFinish, kDone };
  // Writes-done: not asked for, owed (with or without its reaction), sent.
  enum class WritesDone { kNo, kWithReaction, kSilent, kSent };
  Step NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Carries out `step`; false once Done ran (the hooks are gone).
  bool Perform(Step step);
  // Runs what is ready: here (a runtime event on a delivering thread,
  // outside reactions) or on the reaction thread.
  void Kick(bool from_application);
  // `resumed`: a slice posted by a Drive that ran long (running_ is set).
  void Drive(bool resumed);
  static constexpr int kStepsPerSlice = 64;
  bool EndedLocked(Status* status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Nobody drives now, and there is something to drive (bound, or failed
  // to start): an operation just recorded must be kicked off.
  bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Hooks* const hooks_;
  std::mutex mu_;
  Binding binding_ ABSL_GUARDED_BY(mu_);
  bool bound_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<Status> start_failure_ ABSL_GUARDED_BY(mu_);
  // Bumped on every notification: an operation that could not go ahead
  // at seq N is tried again once seq moved on.
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool running_ ABSL_GUARDED_BY(mu_) = false;

  google::protobuf::MessageLite* read_into_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<Buffer>* read_attachments_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t read_blocked_at_ ABSL_GUARDED_BY(mu_) = UINT64_MAX;
  int refused_reads_ ABSL_GUARDED_BY(mu_) = 0;  // a second StartRead: ReadDone(false) owed

  const google::protobuf::MessageLite* write_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<Buffer> write_attachments_ ABSL_GUARDED_BY(mu_);
  uint64_t write_blocked_at_ ABSL_GUARDED_BY(mu_) = UINT64_MAX;
  int refused_writes_ ABSL_GUARDED_BY(mu_) = 0;

  AfterWrite after_write_ ABSL_GUARDED_BY(mu_) = AfterWrite::kNothing;
  Status after_write_status_ ABSL_GUARDED_BY(mu_);
  WritesDone writes_done_ ABSL_GUARDED_BY(mu_) = WritesDone::kNo;
  std::optional<Status> finish_ ABSL_GUARDED_BY(mu_);  // Finish() called with
  bool finished_ ABSL_GUARDED_BY(mu_) = false;         // ... and carried out
  bool cancel_reported_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

// True inside a reaction, on this thread.
bool InReaction();

// Runs `work` on the process's reaction thread (created on first use, never
// destroyed). Any thread.
void PostReaction(std::function<void()> work);

}  // namespace zcrpc::internal
