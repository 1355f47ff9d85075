// TcpConnection: one TCP stream carrying zcrpc frames (docs/wire.md, and
// stream_layout.h for where parts sit on the stream).
//
// Setup: a connection starts life inside the transport, on the epoll loop:
// the client's non-blocking connect() completes (EPOLLOUT), each side sends
// its 64-byte preface and reads the peer's, and only then is the
// connection handed over (ConnectCallback, or the listener's
// AcceptCallback), all bounded by ConnectionOptions::connect_timeout.
// Send: FrameWriter (gather lists, batching, MSG_ZEROCOPY); never waits:
// bytes the socket has no room for wait for EPOLLOUT on the loop, counted
// in a SendBudget (writable(), WaitWritable(), OnWritable()); a queue that
// makes no progress for send_stall_timeout closes the connection, noticed by
// the loop's tick rather than a thread per connection.
// Receive: FrameReader (header and small parts in one recv(), large parts
// read straight into their own page-aligned buffers). Exactly one thread
// reads at a time (internal::ReadOwnership): the epoll loop when the socket
// wakes it, or a caller waiting for its reply (PollUntil), which then reads
// the socket itself and is woken by the kernel directly instead of through
// the loop thread (one cross-core wake-up instead of two). While callers
// keep reading their own replies (PollsOwnReplyScope), the loop's read
// interest stays off between their calls, so a blocking call costs no
// epoll_ctl; frames nobody polls for still arrive at once (tcp_connection.cc,
// "who watches for replies"). Handler calls (OnFrame, OnWritable, OnClosed)
// come only from that reading thread.
// Busy-poll (TcpOptions::busy_poll): whoever reads spins on the
// non-blocking socket for that long after the last bytes before blocking,
// yielding the CPU after a few microseconds without bytes so a peer that
// shares it can answer.
//
// The socket state is shared between the owner's handle and the epoll
// registration, so the handle may be destroyed at any time, on any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "zcrpc/transport/internal/unique_fd.h"
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
  uint64_t queued_bytes = 0; // queued by Send() and not yet handed to the kernel
  uint64_t interest_changes = 0;    // epoll_ctl(MOD) calls: arming and disarming the loop
  uint64_t receive_stages_made = 0; // receive stages allocated (the rest were reused)
};

class TcpConnection final : public Connection {
 public:
  // Gets the connection once the peer's preface arrived, or why there is
  // none. Called exactly once, on a loop thread (or on the thread that
  // stops the loop, with UNAVAILABLE).
  using Ready = std::function<void(StatusOr<std::unique_ptr<Connection>>)>;

  // Client side: `fd` is a non-blocking socket whose connect() is under way
  // (or already done); `peer` is the address dialled, for messages.
  static void StartConnect(internal::UniqueFd fd, std::shared_ptr<EpollLoop> loop, const TcpOptions& tcp_options,
                           const ConnectionOptions& options, std::string peer, Ready ready);
  // Server side: `fd` was just accepted.
  static void StartAccepted(internal::UniqueFd fd, std::shared_ptr<EpollLoop> loop, const TcpOptions& tcp_options,
                            const ConnectionOptions& options, Ready ready);

  ~TcpConnection() override;

  Buffer Allocate(size_t size) override;
  Status Send(Frame frame) override;
  bool writable() override;
  Status WaitWritable(int64_t deadline_nanos) override;
  Capabilities capabilities() const override;
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
