// SerialDelivery: hands one bridged connection's frames to its
// ConnectionHandler in order, one at a time, then OnClosed exactly once, as
// transport.h promises, although gRPC runs one call's reactions on several
// threads at once. Whichever thread finds nobody delivering delivers
// everything queued (marked as a delivering thread); the others only queue.
//
// Thread-safe.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/transport/internal/delivery_scope.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::grpc_bridge {

class SerialDelivery {
 public:
  // Frames queued before Start wait for it. The handler is kept until
  // OnClosed has returned.
  void Start(std::shared_ptr<ConnectionHandler> handler) {
    {
      std::lock_guard lock(mu_);
      handler_ = std::move(handler);
    }
    Drain();
  }
  // Dropped once the connection is closed.
  void Deliver(Frame frame) {
    Enqueue(std::move(frame));
    Drain();
  }
  // Deliver() in two steps, for a caller that must fix a frame's place in
  // the order under a lock of its own (Enqueue, never calls out) and then
  // deliver outside it (Drain).
  void Enqueue(Frame frame) {
    std::lock_guard lock(mu_);
    if (!closing_) queue_.push_back(std::move(frame));
  }
  void Drain() {
    std::unique_lock lock(mu_);
    if (deliverer_ != std::thread::id() || handler_ == nullptr) return;
    deliverer_ = std::this_thread::get_id();
    const std::shared_ptr<ConnectionHandler> handler = handler_;
    internal::DeliveryScope delivering;
    for (;;) {
      if (head_ < queue_.size()) {
        Frame next = std::move(queue_[head_++]);
        if (head_ == queue_.size()) {
          queue_.clear();
          head_ = 0;
        } else if (head_ >= 64 && 2 * head_ >= queue_.size()) {
          // A stream whose frames keep coming may never empty the queue:
          // drop the delivered front now and then.
          queue_.erase(queue_.begin(), queue_.begin() + static_cast<ptrdiff_t>(head_));
          head_ = 0;
        }
        lock.unlock();
        handler->OnFrame(std::move(next));
        lock.lock();
        continue;
      }
      if (closing_ && !closed_delivered_) {
        closed_delivered_ = true;
        const Status reason = *closing_;
        lock.unlock();
        handler->OnClosed(reason);
        lock.lock();
        // Kept until after OnClosed, as every transport does; no longer:
        // the handler owns the connection that owns this.
        handler_.reset();
        continue;
      }
      break;
    }
    deliverer_ = std::thread::id();
  }
  // The last delivery: after the frames queued before it. The first reason
  // counts.
  void Closed(const Status& reason) {
    {
      std::lock_guard lock(mu_);
      if (closing_) return;
      closing_ = reason;
    }
    Drain();
  }
  bool closing() const {
    std::lock_guard lock(mu_);
    return closing_.has_value();
  }
  // Whether the calling thread is delivering this connection's frames now
  // (so is inside the handler, called from Drain).
  bool DeliveringHere() const {
    std::lock_guard lock(mu_);
    return deliverer_ == std::this_thread::get_id();
  }

 private:

  mutable std::mutex mu_;
  std::shared_ptr<ConnectionHandler> handler_ ABSL_GUARDED_BY(mu_);
  // Frames not yet delivered: queue_[head_..]. Inline: a unary call's one
  // or two frames take no allocation (a std::deque takes two, empty).
  absl::InlinedVector<Frame, 2> queue_ ABSL_GUARDED_BY(mu_);
  size_t head_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<Status> closing_ ABSL_GUARDED_BY(mu_);
  bool closed_delivered_ ABSL_GUARDED_BY(mu_) = false;
  std::thread::id deliverer_ ABSL_GUARDED_BY(mu_);  // the delivering thread; none while nobody delivers
};

}  // namespace zcrpc::transport::grpc_bridge
