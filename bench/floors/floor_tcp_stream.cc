// floor-tcp-stream: raw loopback TCP streaming bandwidth, the most any
// transport over these sockets could move. The client writes
// --payload_bytes chunks back to back; the server (a forked process) reads
// them into one buffer and, at the end, reports how many bytes it got so
// the client can check nothing was lost. Throughput is the sender's rate,
// which the bounded socket buffers tie to the receiver's.
//   bench_floor_tcp_stream --workload bulk --payload_bytes 1048576
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bench/common/harness.h"
#include "bench/common/work.h"
#include "bench/floors/floor_util.h"

namespace {

namespace bench = zcrpc::bench;
namespace floor = zcrpc::bench::floor;

void Serve(int fd) {
  std::vector<char> buffer(1 << 20);
  uint64_t received = 0;
  for (;;) {
    const ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n <= 0) break;
    received += static_cast<uint64_t>(n);
  }
  floor::WriteFull(fd, &received, sizeof received);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Plan plan = bench::ParsePlan(argc, argv, "bench_floor_tcp_stream --workload bulk [harness flags]");
  if (plan.workload != bench::Workload::kBulk) bench::FailRow("floor-tcp-stream measures bulk only");
  int port = 0;
  const int listener = floor::ListenLoopback(&port);
  plan.server_pid = floor::ForkServer([&] { Serve(floor::AcceptOne(listener)); });
  close(listener);
  const int fd = floor::ConnectLoopback(port);

  const std::string chunk = bench::MakePayload(plan.request_bytes());
  uint64_t sent = 0;
  bench::Row row = bench::MeasureOneInFlight(
      plan,
      [&]() -> std::string {
        if (!floor::WriteFull(fd, chunk.data(), chunk.size())) return "send failed";
        sent += chunk.size();
        return "";
      },
      nullptr);
  // A write's latency is not a round trip; only the bandwidth means something.
  row.p50_us.reset();
  row.p99_us.reset();
  for (bench::Rep& rep : row.reps) {
    rep.p50_us.reset();
    rep.p99_us.reset();
  }

  shutdown(fd, SHUT_WR);
  uint64_t received = 0;
  if (!floor::ReadFull(fd, &received, sizeof received) || received != sent) {
    row = bench::Row();
    row.error = "the receiver got " + std::to_string(received) + " of " + std::to_string(sent) + " bytes";
  }
  close(fd);
  floor::ReapServer(plan.server_pid);
  bench::PrintRow(row);
  return row.error.empty() ? 0 : 1;
}
