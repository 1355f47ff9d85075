// Fuzzes the tcp frame reader (zcrpc/transport/tcp/frame_reader.h) as a
// peer drives it: the input goes through a real socket pair in pieces (one
// byte at a time, or chunks whose size the input's first byte picks), and
// the reader reads after each piece. Every frame it hands over is touched
// end to end (ASan checks each part lies in memory it owns); a malformed
// stream must end in a status, never a crash or a hang.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

#include "zcrpc/base/frame.h"
#include "zcrpc/transport/tcp/frame_reader.h"

namespace {

// Reads every byte of `buffer`, so ASan sees a part that is not all there.
uint64_t Touch(const zcrpc::Buffer& buffer) {
  uint64_t sum = 0;
  for (uint8_t b : buffer.span()) sum += b;
  return sum;
}

struct SocketPair {
  SocketPair() {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) __builtin_trap();
    ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  }
  ~SocketPair() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  int fds[2];
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t chunk = data[0] == 0 ? 1 : data[0];
  ++data;
  --size;
  SocketPair pair;
  // Small limits: a body within them is allocated when its header arrives,
  // and a fuzzer must not allocate 64 MiB per input.
  zcrpc::FrameLimits limits;
  limits.max_body_bytes = 1 << 20;
  limits.max_metadata_bytes = 16 << 10;
  limits.max_attachments = 16;
  zcrpc::transport::tcp::FrameReader reader(pair.fds[0], limits, "fuzz");
  volatile uint64_t sink = 0;
  auto deliver = [&](zcrpc::Frame frame) {
    uint64_t sum = Touch(frame.metadata) + Touch(frame.message);
    for (const zcrpc::Buffer& attachment : frame.attachments) sum += Touch(attachment);
    sink = sink + sum;
  };
  zcrpc::Status status;
  for (size_t at = 0; at < size && status.ok(); at += chunk) {
    const size_t n = std::min(chunk, size - at);
    if (::send(pair.fds[1], data + at, n, MSG_NOSIGNAL) != static_cast<ssize_t>(n)) __builtin_trap();
    uint64_t read = 0;
    status = reader.ReadAvailable(deliver, &read);
  }
  if (status.ok()) {
    // The peer hangs up: the reader reports the end, mid-frame or not.
    ::shutdown(pair.fds[1], SHUT_WR);
    uint64_t read = 0;
    status = reader.ReadAvailable(deliver, &read);
    if (status.ok()) __builtin_trap();
  }
  return 0;
}
