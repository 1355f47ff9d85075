#include "zcrpc/rpc/service.h"

#include <google/protobuf/message_lite.h>

#include "absl/strings/str_cat.h"

namespace zcrpc {

namespace {
// ServerStreamBase's reading, without a message type.
struct UntypedReader : ServerStreamBase {
  using ServerStreamBase::ServerStreamBase;
  using ServerStreamBase::ReadMessage;
};
}  // namespace

bool Service::ReadSingleRequest(internal::StreamState* stream, ServerContext* ctx,
                                google::protobuf::MessageLite* request) {
  UntypedReader reader(stream, ctx);
  return reader.ReadMessage(request, nullptr);
}

namespace internal {
Status MissingRequest(const ServerContext* ctx, std::string_view path) {
  if (ctx->IsCancelled()) return absl::CancelledError("the call was cancelled before its request arrived");
  return absl::InternalError(
      absl::StrCat("the client of server streaming method ", ToAbsl(path), " closed its writes without a request"));
}
}  // namespace internal

Status Service::SerializeResponse(ServerContext* ctx, const google::protobuf::MessageLite& response, Buffer* out) {
  *out = ctx->AllocateBuffer(response.ByteSizeLong());
  response.SerializeWithCachedSizesToArray(out->data());
  return absl::OkStatus();
}

Status Service::UnimplementedMethodStatus(std::string_view path) { return UnimplementedMethod(path); }

Status UnimplementedMethod(std::string_view path) {
  return absl::UnimplementedError(absl::StrCat(ToAbsl(path), " is not implemented by this server"));
}

}  // namespace zcrpc
