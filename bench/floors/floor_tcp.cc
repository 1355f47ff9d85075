// floor-tcp: the benchmark's unary and bulk work over raw blocking loopback
// TCP sockets (TCP_NODELAY), no framework: the client sends a 16-byte
// header and the payload in one sendmsg; the server (a forked process)
// reads it all, checksums it, and replies with an 8-byte length and the
// requested number of bytes, the checksum first (so even a 0-byte reply is
// a message the client waits for, as an RPC response is).
//   bench_floor_tcp --workload unary --payload_bytes 64
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "bench/common/harness.h"
#include "bench/common/work.h"
#include "bench/floors/floor_util.h"

namespace {

namespace bench = zcrpc::bench;
namespace floor = zcrpc::bench::floor;

struct Header {
  uint64_t request_bytes;  // kStop ends the server
  uint64_t reply_bytes;
};
constexpr uint64_t kStop = std::numeric_limits<uint64_t>::max();

void Serve(int fd) {
  std::vector<char> request;
  std::string reply;
  Header header;
  while (floor::ReadFull(fd, &header, sizeof header) && header.request_bytes != kStop) {
    request.resize(header.request_bytes);
    if (!floor::ReadFull(fd, request.data(), request.size())) return;
    bench::FillReplyBody(&reply, header.reply_bytes, bench::Checksum(request.data(), request.size()));
    const uint64_t reply_size = reply.size();
    if (!floor::WriteTwo(fd, &reply_size, sizeof reply_size, reply.data(), reply.size())) return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  bench::Plan plan = bench::ParsePlan(argc, argv, "bench_floor_tcp --workload unary|bulk [harness flags]");
  if (plan.workload != bench::Workload::kUnary && plan.workload != bench::Workload::kBulk) {
    bench::FailRow("floor-tcp measures unary and bulk only");
  }
  int port = 0;
  const int listener = floor::ListenLoopback(&port);
  plan.server_pid = floor::ForkServer([&] { Serve(floor::AcceptOne(listener)); });
  close(listener);
  const int fd = floor::ConnectLoopback(port);

  const std::string payload = bench::MakePayload(plan.request_bytes());
  const uint64_t checksum = bench::Checksum(payload);
  const Header header{payload.size(), plan.reply_bytes()};
  std::string reply(plan.reply_bytes(), '\0');
  const bench::Row row = bench::MeasureOneInFlight(
      plan,
      [&]() -> std::string {
        if (!floor::WriteTwo(fd, &header, sizeof header, payload.data(), payload.size())) return "send failed";
        uint64_t reply_size = 0;
        if (!floor::ReadFull(fd, &reply_size, sizeof reply_size)) return "receive failed";
        if (reply_size != reply.size()) return "reply of the wrong size";
        if (!floor::ReadFull(fd, reply.data(), reply.size())) return "receive failed";
        return bench::ReplyBodyMatches(reply, plan.reply_bytes(), checksum) ? "" : "reply checksum mismatch";
      },
      nullptr);

  const Header stop{kStop, 0};
  floor::WriteFull(fd, &stop, sizeof stop);
  close(fd);
  floor::ReapServer(plan.server_pid);
  bench::PrintRow(row);
  return row.error.empty() ? 0 : 1;
}
