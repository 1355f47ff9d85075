#include "zcrpc/rpc/internal/reactor_driver.h"

#include <exception>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "zcrpc/transport/transport.h"

namespace zcrpc::internal {
namespace {

// How deep this thread is inside reactions: nothing here runs another
// reactor's reactions inline (Kick), nor waits for a connection
// (ClientReactor::StartCall).
thread_local int reaction_depth = 0;

struct ReactionScope {
  ReactionScope() { ++reaction_depth; }
  ~ReactionScope() { --reaction_depth; }
};

// A reaction that throws ends only its own reaction: the exception must not
// unwind into a poller or the sweeper, and the call goes on to Done.
template <typename F>
void RunReaction(F&& reaction) {
  ReactionScope scope;
  try {
    reaction();
  } catch (...) {
  }
}

}  // namespace

bool InReaction() { return reaction_depth > 0; }

void PostReaction(std::function<void()> work) {
  // Never destroyed: reactions may still be posted while statics go away.
  static auto* pool = new boost::asio::thread_pool(1);
  boost::asio::post(*pool, std::move(work));
}

void ReactorDriver::StartRead(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments) {
  {
    std::lock_guard lock(mu_);
    if (done_) return;
    if (read_into_ != nullptr) {
      ++refused_reads_;
    } else {
      read_into_ = message;
      read_attachments_ = attachments;
      read_blocked_at_ = UINT64_MAX;
    }
    if (!IdleLocked()) return;  // the running thread, or Bind, carries it out
  }
  Kick(/*from_application=*/true);
}

void ReactorDriver::StartWrite(const google::protobuf::MessageLite* message, std::vector<Buffer> attachments,
                               AfterWrite after, Status finish_status) {
  {
    std::lock_guard lock(mu_);
    if (done_) return;
    if (write_ != nullptr || writes_done_ != WritesDone::kNo || finish_) {
      ++refused_writes_;  // one write at a time, none after the writes ended
    } else {
      write_ = message;
      write_attachments_ = std::move(attachments);
      write_blocked_at_ = UINT64_MAX;
      after_write_ = after;
      after_write_status_ = std::move(finish_status);
    }
    if (!IdleLocked()) return;  // the running thread, or Bind, carries it out
  }
  Kick(/*from_application=*/true);
}

void ReactorDriver::StartWritesDone() {
  {
    std::lock_guard lock(mu_);
    if (done_ || writes_done_ != WritesDone::kNo || (write_ != nullptr && after_write_ != AfterWrite::kNothing)) {
      return;
    }
    writes_done_ = WritesDone::kWithReaction;
    if (!IdleLocked()) return;  // the running thread, or Bind, carries it out
  }
  Kick(/*from_application=*/true);
}

void ReactorDriver::Finish(Status status) {
  {
    std::lock_guard lock(mu_);
    if (done_ || finish_ || (write_ != nullptr && after_write_ == AfterWrite::kFinish)) return;
    finish_ = std::move(status);
    if (!IdleLocked()) return;  // the running thread, or Bind, carries it out
  }
  Kick(/*from_application=*/true);
}

void ReactorDriver::Bind(Binding binding) {
  {
    std::lock_guard lock(mu_);
    binding_ = std::move(binding);
    bound_ = true;
  }
  Kick(/*from_application=*/false);
}

void ReactorDriver::FailToStart(Status status) {
  {
    std::lock_guard lock(mu_);
    if (bound_) return;  // the call runs: it ends its own way
    start_failure_ = std::move(status);
  }
  Kick(/*from_application=*/false);
}

void ReactorDriver::OnStreamChanged() {
  {
    std::lock_guard lock(mu_);
    ++seq_;
    if (running_ || done_) return;  // the running thread looks again
  }
  Kick(/*from_application=*/false);
}

void ReactorDriver::Kick(bool from_application) {
  // Inline only where no code of the application's is on the stack: a
  // delivering thread outside any reaction. Anywhere else (inside Start*,
  // inside another reactor's reaction, on the sweeper) reactions would run
  // under the caller's locks.
  if (!from_application && reaction_depth == 0 && transport::InDeliveryThread()) {
    Drive(/*resumed=*/false);
  } else {
    PostReaction([self = shared_from_this()] { self->Drive(/*resumed=*/false); });
  }
}

void ReactorDriver::Drive(bool resumed) {
  const std::shared_ptr<ReactorDriver> self = shared_from_this();  // Done may drop the reactor's share
  std::unique_lock lock(mu_);
  if (!resumed) {
    if (running_) return;
    running_ = true;
  }
  // A reactor that always has work (a writer into a wide window of small
  // messages) must not keep a poller, or the reaction thread, from the
  // frames and reactors of everyone else: after a slice of steps it goes
  // to the back of the reaction thread's queue, still marked running.
  for (int steps = 0;; ++steps) {
    const Step step = NextLocked();
    if (step == Step::kNone) break;
    if (steps == kStepsPerSlice) {
      PostReaction([self] { self->Drive(/*resumed=*/true); });
      return;
    }
    lock.unlock();
    if (!Perform(step)) return;  // Done ran: running_ stays set, nothing runs again
    lock.lock();
  }
  running_ = false;
}

bool ReactorDriver::IdleLocked() const { return !running_ && (bound_ || start_failure_); }

bool ReactorDriver::EndedLocked(Status* status) {
  if (start_failure_) {
    *status = *start_failure_;
    return true;
  }
  if (!bound_) return false;
  if (binding_.finish) {  // server: over once Finish() was carried out
    if (finished_) *status = *finish_;
    return finished_;
  }
  return binding_.stream != nullptr && binding_.stream->EndedWith(status);
}

ReactorDriver::Step ReactorDriver::NextLocked() {
  if (done_ || (!bound_ && !start_failure_)) return Step::kNone;  // not yet bound, or over
  if (refused_reads_ > 0 || refused_writes_ > 0) return Step::kRefused;
  if (!cancel_reported_ && binding_.cancelled && binding_.cancelled()) return Step::kCancelled;
  if (read_into_ != nullptr && read_blocked_at_ != seq_) return Step::kRead;
  if (write_ != nullptr && write_blocked_at_ != seq_) return Step::kWrite;
  const bool writes_done_owed = writes_done_ == WritesDone::kWithReaction || writes_done_ == WritesDone::kSilent;
  if (write_ == nullptr && writes_done_owed && !start_failure_ && binding_.stream != nullptr && !binding_.finish) {
    return Step::kWritesDone;
  }
  if (write_ == nullptr && finish_ && !finished_ && binding_.finish) return Step::kFinish;
  Status ignored;
  if (read_into_ == nullptr && write_ == nullptr && EndedLocked(&ignored)) {
    // Writes-done still owed on a call that never started: it fails first.
    if (writes_done_ == WritesDone::kWithReaction) return Step::kWritesDone;
    return Step::kDone;
  }
  return Step::kNone;
}

bool ReactorDriver::Perform(Step step) {
  switch (step) {
    case Step::kNone:
      return true;
    case Step::kRefused: {
      bool read = false;
      {
        std::lock_guard lock(mu_);
        if (refused_reads_ > 0) {
          --refused_reads_;
          read = true;
        } else {
          --refused_writes_;
        }
      }
      RunReaction([&] { read ? hooks_->ReadDone(false) : hooks_->WriteDone(false); });
      return true;
    }
    case Step::kCancelled: {
      {
        std::lock_guard lock(mu_);
        cancel_reported_ = true;
      }
      RunReaction([&] { hooks_->Cancelled(); });
      return true;
    }
    case Step::kRead: {
      google::protobuf::MessageLite* message;
      std::vector<Buffer>* attachments;
      StreamState* stream;
      uint64_t seq;
      bool failed;
      {
        std::lock_guard lock(mu_);
        message = read_into_;
        attachments = read_attachments_;
        stream = binding_.stream;
        seq = seq_;
        failed = start_failure_.has_value();
      }
      const StreamState::ReadResult result = (failed || stream == nullptr)
                                                 ? StreamState::ReadResult::kNoMore
                                                 : stream->TryRead(message, attachments);
      {
        std::lock_guard lock(mu_);
        if (result == StreamState::ReadResult::kNotYet) {
          read_blocked_at_ = seq;
          return true;
        }
        read_into_ = nullptr;
        read_attachments_ = nullptr;
      }
      RunReaction([&] { hooks_->ReadDone(result == StreamState::ReadResult::kMessage); });
      return true;
    }
    case Step::kWrite: {
      const google::protobuf::MessageLite* message;
      std::vector<Buffer> attachments;
      StreamState* stream;
      AfterWrite after;
      uint64_t seq;
      {
        std::lock_guard lock(mu_);
        stream = start_failure_ ? nullptr : binding_.stream;
        if (stream != nullptr && !stream->MayWriteNow()) {
          write_blocked_at_ = seq_;
          return true;
        }
        message = write_;
        attachments = std::move(write_attachments_);
        after = after_write_;
        seq = seq_;
      }
      // Held back by the stream's window and by the connection's send
      // queue; credit or the queue draining (StreamState::OnWritable)
      // brings the driver back.
      const WriteStatus wrote = stream != nullptr ? stream->Write(*message, std::move(attachments), /*may_wait=*/false)
                                                  : WriteStatus::kClosed;
      const bool ok = wrote == WriteStatus::kWritten;
      {
        std::lock_guard lock(mu_);
        if (wrote == WriteStatus::kWouldBlock) {  // filled up since MayWriteNow: the same write, later
          write_attachments_ = std::move(attachments);
          write_blocked_at_ = seq;
          return true;
        }
        write_ = nullptr;
        if (after == AfterWrite::kWritesDone) writes_done_ = WritesDone::kSilent;
        if (after == AfterWrite::kFinish) finish_ = std::move(after_write_status_);
      }
      // A write folded into Finish reports no WriteDone (gRPC's
      // StartWriteAndFinish); its outcome is the call's.
      if (after != AfterWrite::kFinish) RunReaction([&] { hooks_->WriteDone(ok); });
      return true;
    }
    case Step::kWritesDone: {
      StreamState* stream;
      WritesDone kind;
      {
        std::lock_guard lock(mu_);
        stream = start_failure_ ? nullptr : binding_.stream;
        kind = writes_done_;
        writes_done_ = WritesDone::kSent;
      }
      const bool ok = stream != nullptr && stream->CloseWrites();
      if (kind == WritesDone::kWithReaction) RunReaction([&] { hooks_->WritesDoneDone(ok); });
      return true;
    }
    case Step::kFinish: {
      std::function<void(Status)> finish;
      Status status;
      {
        std::lock_guard lock(mu_);
        finish = binding_.finish;
        status = *finish_;
      }
      finish(std::move(status));
      std::lock_guard lock(mu_);
      finished_ = true;
      return true;
    }
    case Step::kDone: {
      Binding binding;  // what it holds goes after Done (a response Finish serialized, say)
      Status status;
      {
        std::lock_guard lock(mu_);
        done_ = true;
        EndedLocked(&status);
        binding = std::move(binding_);
        binding_ = Binding();
      }
      if (binding.release) binding.release();
      RunReaction([&] { hooks_->Done(status); });
      if (binding.after_done) binding.after_done();
      return false;
    }
  }
  return true;
}

}  // namespace zcrpc::internal
