// TcpConnection: one TCP stream carrying zcrpc frames (docs/wire.md, and
// stream_layout.h for where parts sit on the stream).
//
// Send: FrameWriter (gather lists, batching, MSG_ZEROCOPY).
// Receive: FrameReader (header and small parts in one recv(), large parts
// read straight into their own page-aligned buffers). Exactly one thread
// reads at a time: the transport's epoll loop when the socket wakes it, or
// a caller waiting for its reply (PollUntil), which then reads the socket
// itself and is woken by the kernel directly instead of through the loop
// thread (one cross-core wake-up instead of two).
// Busy-poll (TcpOptions::busy_poll): whoever reads spins on the
// non-blocking socket for that long after the last bytes before blocking.
//
// The socket state is shared between the owner's handle and the epoll
// registration, so the handle may be destroyed at any time.
#pragma once

#include <memory>
#include <string>

#include "zcrpc/transport/tcp/epoll_loop.h"
#include "zcrpc/transport/tcp/frame_reader.h"
#include "zcrpc/transport/tcp/frame_writer.h"
#include "zcrpc/transport/tcp/tcp_address.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::tcp {

struct TcpConnectionStats {
  ZeroCopyStats zerocopy;
  FrameReader::ZeroCopyReceiveProbe zerocopy_receive;
  uint64_t frames_sent = 0;
  uint64_t write_calls = 0;  // sendmsg() calls that sent bytes
};

class TcpConnection final : public Connection {
 public:
  // Takes the connected socket `fd`.
  static StatusOr<std::unique_ptr<TcpConnection>> Make(int fd, EpollLoop* loop, const TcpOptions& tcp_options,
                                                       const ConnectionOptions& options);
  ~TcpConnection() override;

  Buffer Allocate(size_t size) override;
  Status Send(Frame frame) override;
  void Start(std::shared_ptr<ConnectionHandler> handler) override;
  void Close(const Status& reason) override;
  std::string peer() const override;
  bool PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) override;

  TcpConnectionStats stats() const;

 private:
  class State;
  explicit TcpConnection(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace zcrpc::transport::tcp
