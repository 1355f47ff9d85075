// Process-wide counters of the tcp transport's send path, for benchmarks
// and logs: what MSG_ZEROCOPY did, and how many frames each write carried.
// Per-connection figures: TcpConnection::stats(). Thread-safe.
#pragma once

#include <cstdint>

namespace zcrpc::transport::tcp {

struct TcpStats {
  uint64_t frames_sent = 0;
  uint64_t write_calls = 0;                   // sendmsg() calls that sent bytes
  uint64_t zerocopy_sends = 0;                // of those, with MSG_ZEROCOPY
  uint64_t zerocopy_completions = 0;
  uint64_t zerocopy_copied_completions = 0;   // the kernel copied after all
  uint64_t zerocopy_turned_off = 0;           // connections that learnt to stop (auto mode)
  uint64_t zerocopy_receive_probes = 0;       // TCP_ZEROCOPY_RECEIVE tries, one per connection at most
  uint64_t zerocopy_receive_probe_bytes = 0;  // bytes those tries asked the kernel to map
  uint64_t zerocopy_receive_mapped_bytes = 0; // bytes it mapped (then copied into the part)

  // Adds one probe's outcome (frame_reader.cc).
  static void CountZeroCopyReceiveProbe(uint64_t asked, uint64_t mapped);

  static TcpStats Process();
};

}  // namespace zcrpc::transport::tcp
