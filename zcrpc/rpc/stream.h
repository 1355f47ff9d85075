// Streams: the objects generated code hands out for the three streaming
// kinds, in the shape gRPC's synchronous API has (docs/streaming.md).
//
//   client                                  server handler gets
//   ClientReader<R>         (server streams) ServerWriter<W>
//   ClientWriter<W>         (client streams) ServerReader<R>
//   ClientReaderWriter<W,R> (bidirectional)  ServerReaderWriter<W,R>
//
// Each message is serialized straight into the connection's memory and
// arrives as a buffer handed over, as a unary call's do; Write() and Read()
// overloads carry attachments beside a message. Flow control is by bytes
// per stream: a writer may have up to the receiver's window in flight (not
// one message at a time); Write() waits while the window is closed, and
// TryWrite() says kWouldBlock instead. A message larger than the window
// still goes, alone.
//
// Threads: one thread may Read() while another Write()s; two Reads, or two
// Writes (WritesDone included), must not overlap. Blocking operations fail
// on a thread that delivers a connection's frames (a callback, an inline
// handler): there they could wait for themselves.
#pragma once

#include <memory>
#include <vector>

#include "zcrpc/base/buffer.h"
#include "zcrpc/base/status.h"
#include "zcrpc/rpc/method.h"

namespace google::protobuf {
class MessageLite;
}

namespace zcrpc {

class Channel;
class ClientContext;
class ServerContext;
namespace internal {
class ClientStream;
class StreamState;
}  // namespace internal

// What TryWrite() did.
enum class WriteStatus {
  kWritten,     // on its way
  kWouldBlock,  // the peer's window (or the connection's send queue) is full: try again later
  kClosed,      // the stream is over (ended, cancelled, or this side's writes were closed)
};

// An open client stream on its way to its typed object: what the Open*
// functions at the bottom return and ClientReader & co. take. Move-only.
class StreamHandle {
 public:
  explicit StreamHandle(std::unique_ptr<internal::ClientStream> stream);
  StreamHandle(StreamHandle&&) noexcept;
  StreamHandle& operator=(StreamHandle&&) noexcept;
  ~StreamHandle();

 private:
  friend class ClientStreamBase;
  std::unique_ptr<internal::ClientStream> stream_;
};

// The client's untyped stream; the typed classes below are thin casts.
// Owned by the caller. Destroying it before Finish() returned cancels the
// call (the server sees it cancelled).
class ClientStreamBase {
 public:
  explicit ClientStreamBase(StreamHandle stream);
  ~ClientStreamBase();
  ClientStreamBase(const ClientStreamBase&) = delete;
  ClientStreamBase& operator=(const ClientStreamBase&) = delete;

  // Closes this side's writes if still open, drops messages not yet read,
  // waits for the server's status and returns it (the deadline, a cancel or
  // a lost connection end it too). The server's trailing metadata is then
  // in the context. Call once.
  Status Finish();

 protected:
  bool ReadMessage(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments);
  bool WriteMessage(const google::protobuf::MessageLite& message, std::vector<Buffer> attachments);
  WriteStatus TryWriteMessage(const google::protobuf::MessageLite& message, std::vector<Buffer> attachments);
  bool CloseWrites();

 private:
  std::unique_ptr<internal::ClientStream> stream_;
};

// Server streaming, client side: the request went out when the stub
// returned this; Read() until false, then Finish().
template <typename R>
class ClientReader final : public ClientStreamBase {
 public:
  using ClientStreamBase::ClientStreamBase;
  // Waits for the next message. False once the server has ended the stream
  // (Finish() says how) or the call failed.
  bool Read(R* message) { return ReadMessage(message, nullptr); }
  // The same, and the attachments sent beside it (handed over).
  bool Read(R* message, std::vector<Buffer>* attachments) { return ReadMessage(message, attachments); }
};

// Client streaming, client side: Write() each message, then Finish(), which
// closes the writes and fills the response given to the stub.
template <typename W>
class ClientWriter final : public ClientStreamBase {
 public:
  using ClientStreamBase::ClientStreamBase;
  // Waits for room in the server's window. False once the stream is over:
  // the message was not sent, and Finish() says why.
  bool Write(const W& message) { return WriteMessage(message, {}); }
  bool Write(const W& message, std::vector<Buffer> attachments) {
    return WriteMessage(message, std::move(attachments));
  }
  WriteStatus TryWrite(const W& message) { return TryWriteMessage(message, {}); }
  // Tells the server no more messages come. False if the stream is over.
  bool WritesDone() { return CloseWrites(); }
};

// Bidirectional streaming, client side.
template <typename W, typename R>
class ClientReaderWriter final : public ClientStreamBase {
 public:
  using ClientStreamBase::ClientStreamBase;
  bool Read(R* message) { return ReadMessage(message, nullptr); }
  bool Read(R* message, std::vector<Buffer>* attachments) { return ReadMessage(message, attachments); }
  bool Write(const W& message) { return WriteMessage(message, {}); }
  bool Write(const W& message, std::vector<Buffer> attachments) {
    return WriteMessage(message, std::move(attachments));
  }
  WriteStatus TryWrite(const W& message) { return TryWriteMessage(message, {}); }
  bool WritesDone() { return CloseWrites(); }
};

// The server's untyped stream, valid while the handler runs (the runtime
// owns it). The handler's return value is the status the client gets.
class ServerStreamBase {
 public:
  ServerStreamBase(internal::StreamState* stream, ServerContext* context) : stream_(stream), context_(context) {}
  ServerStreamBase(const ServerStreamBase&) = delete;
  ServerStreamBase& operator=(const ServerStreamBase&) = delete;

 protected:
  bool ReadMessage(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments);
  bool WriteMessage(const google::protobuf::MessageLite& message, std::vector<Buffer> attachments);
  WriteStatus TryWriteMessage(const google::protobuf::MessageLite& message, std::vector<Buffer> attachments);

 private:
  internal::StreamState* const stream_;
  ServerContext* const context_;
};

// Client streaming, server side.
template <typename R>
class ServerReader final : public ServerStreamBase {
 public:
  using ServerStreamBase::ServerStreamBase;
  // Waits for the next message. False once the client closed its writes,
  // or the call was cancelled (ServerContext::IsCancelled() tells which).
  bool Read(R* message) { return ReadMessage(message, nullptr); }
  bool Read(R* message, std::vector<Buffer>* attachments) { return ReadMessage(message, attachments); }
};

// Server streaming, server side.
template <typename W>
class ServerWriter final : public ServerStreamBase {
 public:
  using ServerStreamBase::ServerStreamBase;
  // Waits for room in the client's window. False once the call is
  // cancelled (the client gave up, its deadline passed, the connection was
  // lost): return from the handler.
  bool Write(const W& message) { return WriteMessage(message, {}); }
  bool Write(const W& message, std::vector<Buffer> attachments) {
    return WriteMessage(message, std::move(attachments));
  }
  WriteStatus TryWrite(const W& message) { return TryWriteMessage(message, {}); }
};

// Bidirectional streaming, server side: W is what the server writes.
template <typename W, typename R>
class ServerReaderWriter final : public ServerStreamBase {
 public:
  using ServerStreamBase::ServerStreamBase;
  bool Read(R* message) { return ReadMessage(message, nullptr); }
  bool Read(R* message, std::vector<Buffer>* attachments) { return ReadMessage(message, attachments); }
  bool Write(const W& message) { return WriteMessage(message, {}); }
  bool Write(const W& message, std::vector<Buffer> attachments) {
    return WriteMessage(message, std::move(attachments));
  }
  WriteStatus TryWrite(const W& message) { return TryWriteMessage(message, {}); }
};

// For generated stubs: open a stream of `method` on `channel`. They never
// return null: a stream that could not open fails its first Read/Write and
// reports why from Finish(). Any thread but a delivering one.
//
// Server streaming: sends `request` and closes the writes.
StreamHandle OpenServerStream(Channel& channel, const MethodDescriptor& method, ClientContext* context,
                              const google::protobuf::MessageLite& request);
// Client streaming: Finish() parses the server's response into `response`,
// which must outlive the stream.
StreamHandle OpenClientStream(Channel& channel, const MethodDescriptor& method, ClientContext* context,
                              google::protobuf::MessageLite* response);
StreamHandle OpenBidiStream(Channel& channel, const MethodDescriptor& method, ClientContext* context);

}  // namespace zcrpc
