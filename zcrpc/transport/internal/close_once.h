// CloseOnce: the "closed" state every connection keeps. The first Close()
// wins and records its reason; later ones are no-ops. A transport reports
// OnClosed(reason()) exactly once, after its last delivery.
//
// Thread-safe: closed() is one acquire load, so the data path may test it
// on every frame; Close() and reason() take a short lock.
#pragma once

#include <atomic>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "zcrpc/base/status.h"

namespace zcrpc::transport::internal {

class CloseOnce {
 public:
  // Returns true for the call that closed it (the caller then wakes
  // whatever delivers OnClosed); false if it was already closed.
  bool Close(const Status& reason) {
    std::lock_guard lock(mu_);
    if (closed_.load(std::memory_order_relaxed)) return false;
    reason_ = reason.ok() ? absl::CancelledError("connection closed") : reason;
    closed_.store(true, std::memory_order_release);
    return true;
  }

  bool closed() const { return closed_.load(std::memory_order_acquire); }

  // The first Close()'s reason; OK while still open.
  Status reason() const {
    std::lock_guard lock(mu_);
    return reason_;
  }

 private:
  mutable std::mutex mu_;
  std::atomic<bool> closed_{false};
  Status reason_ ABSL_GUARDED_BY(mu_);
};

}  // namespace zcrpc::transport::internal
