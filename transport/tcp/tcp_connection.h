// TcpConnection: one TCP stream carrying zcrpc frames (docs/wire.md).
//
// Send: the caller's thread encodes the 64-byte header on its stack and
// hands header, metadata, message, attachment table and attachments to one
// sendmsg() as an iovec; nothing is concatenated.
// Receive: on the poller thread, the header is read first; then readv()
// puts each part straight into its own page-aligned buffer of the exact
// size. A frame over the limits is drained through a small scratch buffer
// (never allocated at the peer's word) and delivered as body_discarded.
//
// The socket state is shared between the owner's handle and the pending
// Asio operations, so the handle may be destroyed at any time.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>

#include "transport/transport.h"

namespace zcrpc::transport::tcp {

class TcpConnection final : public Connection {
 public:
  TcpConnection(boost::asio::ip::tcp::socket socket, const ConnectionOptions& options);
  ~TcpConnection() override;

  Buffer Allocate(size_t size) override;
  Status Send(Frame frame) override;
  void Start(std::shared_ptr<ConnectionHandler> handler) override;
  void Close(const Status& reason) override;
  std::string peer() const override;

 private:
  class State;
  std::shared_ptr<State> state_;
};

}  // namespace zcrpc::transport::tcp
