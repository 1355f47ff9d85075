#include "zcrpc/rpc/stream.h"

#include "zcrpc/rpc/channel.h"
#include "zcrpc/rpc/internal/client_stream.h"
#include "zcrpc/rpc/internal/stream_state.h"

namespace zcrpc {

StreamHandle::StreamHandle(std::unique_ptr<internal::ClientStream> stream) : stream_(std::move(stream)) {}
StreamHandle::StreamHandle(StreamHandle&&) noexcept = default;
StreamHandle& StreamHandle::operator=(StreamHandle&&) noexcept = default;
StreamHandle::~StreamHandle() = default;

ClientStreamBase::ClientStreamBase(StreamHandle stream) : stream_(std::move(stream.stream_)) {}
ClientStreamBase::~ClientStreamBase() = default;

Status ClientStreamBase::Finish() { return stream_->Finish(); }

bool ClientStreamBase::ReadMessage(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments) {
  return stream_->state().Read(message, attachments);
}

bool ClientStreamBase::WriteMessage(const google::protobuf::MessageLite& message, std::vector<Buffer> attachments) {
  return stream_->state().Write(message, std::move(attachments), /*may_wait=*/true) == WriteStatus::kWritten;
}

WriteStatus ClientStreamBase::TryWriteMessage(const google::protobuf::MessageLite& message,
                                              std::vector<Buffer> attachments) {
  return stream_->state().Write(message, std::move(attachments), /*may_wait=*/false);
}

bool ClientStreamBase::CloseWrites() { return stream_->state().CloseWrites(); }

bool ServerStreamBase::ReadMessage(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments) {
  return stream_->Read(message, attachments);
}

bool ServerStreamBase::WriteMessage(const google::protobuf::MessageLite& message, std::vector<Buffer> attachments) {
  return stream_->Write(message, std::move(attachments), /*may_wait=*/true) == WriteStatus::kWritten;
}

WriteStatus ServerStreamBase::TryWriteMessage(const google::protobuf::MessageLite& message,
                                              std::vector<Buffer> attachments) {
  return stream_->Write(message, std::move(attachments), /*may_wait=*/false);
}

StreamHandle OpenServerStream(Channel& channel, const MethodDescriptor& method, ClientContext* context,
                              const google::protobuf::MessageLite& request) {
  std::unique_ptr<internal::ClientStream> stream = channel.OpenStream(method, context, nullptr);
  // A stream that did not open ends with why: these return false quietly.
  if (stream->state().Write(request, {}, /*may_wait=*/true) == WriteStatus::kWritten) stream->state().CloseWrites();
  return StreamHandle(std::move(stream));
}

StreamHandle OpenClientStream(Channel& channel, const MethodDescriptor& method, ClientContext* context,
                              google::protobuf::MessageLite* response) {
  return StreamHandle(channel.OpenStream(method, context, response));
}

StreamHandle OpenBidiStream(Channel& channel, const MethodDescriptor& method, ClientContext* context) {
  return StreamHandle(channel.OpenStream(method, context, nullptr));
}

}  // namespace zcrpc
