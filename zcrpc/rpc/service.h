// Service: the base of every generated `Name::Service`. It holds the method
// table the Server dispatches on: for each method its descriptor and a
// handler that parses the request, calls the user's virtual method and
// serializes the response straight into a transport buffer.
//
// A service object must outlive every Server it is registered with.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/buffer.h"
#include "zcrpc/rpc/method.h"
#include "zcrpc/rpc/server_context.h"
#include "zcrpc/base/status.h"

namespace zcrpc {

class Service {
 public:
  // Parses `request`, runs the method, and on OK leaves the serialized
  // response in `*response`.
  using UnaryHandler = std::function<Status(ServerContext*, std::span<const uint8_t> request, Buffer* response)>;

  struct Method {
    MethodDescriptor descriptor;
    UnaryHandler handler;
  };

  virtual ~Service() = default;
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // "package.Service".
  const std::string& name() const { return name_; }
  const std::vector<Method>& methods() const { return methods_; }

 protected:
  explicit Service(std::string_view name) : name_(name) {}

  // Registers a unary method whose implementation is `(self->*fn)(...)`.
  template <typename Req, typename Resp, typename Self>
  void AddUnaryMethod(const MethodDescriptor& descriptor, Self* self,
                      Status (Self::*fn)(ServerContext*, const Req*, Resp*)) {
    methods_.push_back(
        {descriptor, [self, fn, path = descriptor.path](ServerContext* ctx, std::span<const uint8_t> bytes,
                                                        Buffer* out) -> Status {
           Req request;
           if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
             return absl::InvalidArgumentError(absl::StrCat("cannot parse the request of ", ToAbsl(path), " as ",
                                                            request.GetTypeName()));
           }
           Resp response;
           ZCRPC_RETURN_IF_ERROR((self->*fn)(ctx, &request, &response));
           size_t size = response.ByteSizeLong();
           *out = ctx->AllocateBuffer(size);
           response.SerializeWithCachedSizesToArray(out->data());
           return absl::OkStatus();
         }});
  }

  // Marks a method the generator could not yet build (streaming before the
  // streaming issue): calls to it fail with UNIMPLEMENTED, saying why.
  void AddUnsupportedMethod(const MethodDescriptor& descriptor);

 private:
  std::string name_;
  std::vector<Method> methods_;
};

// The default body of every generated handler.
Status UnimplementedMethod(std::string_view path);

}  // namespace zcrpc
