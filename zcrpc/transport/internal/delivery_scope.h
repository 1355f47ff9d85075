// DeliveryScope: marks the current thread as delivering a connection's
// frames for as long as the scope lives, so transport::InDeliveryThread()
// (transport.h) answers true inside OnFrame, OnWritable and OnClosed.
// Scopes nest (a PollUntil caller that delivers while inside a handler).
//
// For transport implementations only. Thread-local; no locks.
#pragma once

namespace zcrpc::transport::internal {

class DeliveryScope {
 public:
  DeliveryScope() { ++depth_; }
  ~DeliveryScope() { --depth_; }
  DeliveryScope(const DeliveryScope&) = delete;
  DeliveryScope& operator=(const DeliveryScope&) = delete;

  static bool Active() { return depth_ > 0; }

 private:
  static inline thread_local int depth_ = 0;
};

}  // namespace zcrpc::transport::internal
