// The address part of a loopback URI and the fault hooks it may carry:
//
//   loopback://NAME[?option=value&...]
//
//   NAME   [A-Za-z0-9._-]+, in-process only: one listener per name in one
//          LoopbackTransport. A trailing '*' (listen only) is replaced by a
//          unique token, as port 0 is for tcp ("demo-*" -> "demo-7").
//
// Fault hooks (all default off). Each applies to the side whose URI names
// it: a Connect URI's to the client end, a Listen URI's (or
// LoopbackTransport::SetFaults) to every end that listener accepts. A live
// connection's hooks can be changed with LoopbackConnection::SetFaults.
//
//   delay_us=N          each frame this side receives is delivered no
//                       sooner than N µs after its Send (order is kept).
//   drop_every=N        every Nth frame this side receives is dropped (its
//                       buffers released, the sender's budget drained), as a
//                       lossy link would. The connection stays open.
//   fail_send_at=N      this side's Nth Send() fails: the connection closes
//                       with UNAVAILABLE and Send returns UNAVAILABLE, as a
//                       socket error would (transport.h: UNAVAILABLE from
//                       Send means closed).
//   close_at_frame=N    when the Nth frame arrives at this side, the
//                       connection closes with UNAVAILABLE; frame N is not
//                       delivered, frames 1..N-1 were.
//   stall=0|1           this side stops taking frames from its queue (a
//                       peer that stopped reading): the sender's budget
//                       fills, writable() turns false and, after the
//                       sender's send_stall_timeout, the sender closes.
//                       A close still ends the stall (OnClosed follows).
//   connect_delay_us=N  the preface exchange takes N µs (a slow or
//                       blackholed server); past the client's
//                       connect_timeout, Connect reports DEADLINE_EXCEEDED.
//                       Listen and Connect delays add up.
//   unchecked_send=0|1  this side's Send() skips the check against
//                       capabilities(), as a peer that ignores the limits
//                       would, so the receiver's discard path can be tested.
//
// Plain values; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "zcrpc/base/status.h"

namespace zcrpc::transport::loopback {

struct Faults {
  uint64_t delay_us = 0;
  uint64_t drop_every = 0;
  uint64_t fail_send_at = 0;
  uint64_t close_at_frame = 0;
  bool stall = false;
  uint64_t connect_delay_us = 0;
  bool unchecked_send = false;
};

struct LoopbackAddress {
  std::string name;  // without options; may end in '*' (listen only)
  Faults faults;

  bool wants_unique_name() const { return !name.empty() && name.back() == '*'; }
  // The URI a client dials: scheme and name, no options.
  std::string uri() const { return "loopback://" + name; }

  // INVALID_ARGUMENT, naming the bad part, for an empty or malformed name,
  // an unknown option or a bad value.
  static StatusOr<LoopbackAddress> Parse(std::string_view address);
};

}  // namespace zcrpc::transport::loopback
