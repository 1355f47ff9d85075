// Service: the base of every generated `Name::Service`. It holds the method
// table the Server dispatches on: for each method its descriptor and a
// handler that parses the request, calls the user's virtual method and
// serializes the response straight into a transport buffer.
//
// A service object must outlive every Server it is registered with.
#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/buffer.h"
#include "zcrpc/rpc/internal/server_callback.h"
#include "zcrpc/rpc/method.h"
#include "zcrpc/rpc/reactor.h"
#include "zcrpc/rpc/server_context.h"
#include "zcrpc/rpc/stream.h"
#include "zcrpc/base/status.h"

namespace zcrpc {

class Service {
 public:
  // Parses `request`, runs the method, and on OK leaves the serialized
  // response in `*response`.
  using UnaryHandler = std::function<Status(ServerContext*, std::span<const uint8_t> request, Buffer* response)>;

  // Runs a streaming method on `stream` (valid while it runs); a client
  // streaming method leaves its serialized response in `*response`.
  using StreamHandler = std::function<Status(ServerContext*, internal::StreamState* stream, Buffer* response)>;

  // Starts a callback method's reactor for one call (reactor.h), on the
  // thread that delivered the request.
  using CallbackHandler = std::function<void(const internal::ServerCallbackCall& call)>;

  struct Method {
    MethodDescriptor descriptor;
    UnaryHandler handler;          // unary methods
    StreamHandler stream_handler;  // streaming methods
    CallbackHandler callback_handler = nullptr;  // callback methods, any kind
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
         },
         nullptr, nullptr});
  }

  // Registers a client streaming method: (self->*fn)(ctx, reader, response).
  template <typename Req, typename Resp, typename Self>
  void AddClientStreamingMethod(const MethodDescriptor& descriptor, Self* self,
                                Status (Self::*fn)(ServerContext*, ServerReader<Req>*, Resp*)) {
    AddStreamingMethod(descriptor, [self, fn](ServerContext* ctx, internal::StreamState* stream, Buffer* out) {
      ServerReader<Req> reader(stream, ctx);
      Resp response;
      ZCRPC_RETURN_IF_ERROR((self->*fn)(ctx, &reader, &response));
      *out = ctx->AllocateBuffer(response.ByteSizeLong());
      response.SerializeWithCachedSizesToArray(out->data());
      return absl::OkStatus();
    });
  }

  // Registers a server streaming method: (self->*fn)(ctx, request, writer).
  // The client's one request is read before the method runs.
  template <typename Req, typename Resp, typename Self>
  void AddServerStreamingMethod(const MethodDescriptor& descriptor, Self* self,
                                Status (Self::*fn)(ServerContext*, const Req*, ServerWriter<Resp>*)) {
    AddStreamingMethod(descriptor,
                       [self, fn, path = descriptor.path](ServerContext* ctx, internal::StreamState* stream, Buffer*) {
                         Req request;
                         if (!ReadSingleRequest(stream, ctx, &request)) return internal::MissingRequest(ctx, path);
                         ServerWriter<Resp> writer(stream, ctx);
                         return (self->*fn)(ctx, &request, &writer);
                       });
  }

  // Registers a bidirectional streaming method: (self->*fn)(ctx, stream).
  template <typename Req, typename Resp, typename Self>
  void AddBidiStreamingMethod(const MethodDescriptor& descriptor, Self* self,
                              Status (Self::*fn)(ServerContext*, ServerReaderWriter<Resp, Req>*)) {
    AddStreamingMethod(descriptor, [self, fn](ServerContext* ctx, internal::StreamState* stream, Buffer*) {
      ServerReaderWriter<Resp, Req> both(stream, ctx);
      return (self->*fn)(ctx, &both);
    });
  }

  // Callback forms (reactor.h): the method returns the reactor that serves
  // the call, or nullptr for UNIMPLEMENTED. It runs on the thread that
  // delivered the request and must not block.
  template <typename Req, typename Resp, typename Self>
  void AddCallbackUnaryMethod(const MethodDescriptor& descriptor, Self* self,
                              ServerUnaryReactor* (Self::*fn)(ServerContext*, const Req*, Resp*)) {
    AddCallbackMethod(descriptor, [self, fn, path = descriptor.path](const internal::ServerCallbackCall& call) {
      auto messages = std::make_shared<std::pair<Req, Resp>>();
      const std::span<const uint8_t> bytes = call.request();
      if (!messages->first.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        return call.EndNow(absl::InvalidArgumentError(absl::StrCat("cannot parse the request of ", ToAbsl(path),
                                                                   " as ", messages->first.GetTypeName())));
      }
      ServerContext* ctx = call.context();
      ServerUnaryReactor* reactor = (self->*fn)(ctx, &messages->first, &messages->second);
      if (reactor == nullptr) return call.EndNow(UnimplementedMethodStatus(path));
      call.Bind(
          reactor, [ctx, messages](Buffer* out) { return SerializeResponse(ctx, messages->second, out); }, messages);
    });
  }

  template <typename Req, typename Resp, typename Self>
  void AddCallbackClientStreamingMethod(const MethodDescriptor& descriptor, Self* self,
                                        ServerReadReactor<Req>* (Self::*fn)(ServerContext*, Resp*)) {
    AddCallbackMethod(descriptor, [self, fn, path = descriptor.path](const internal::ServerCallbackCall& call) {
      auto response = std::make_shared<Resp>();
      ServerContext* ctx = call.context();
      ServerReadReactor<Req>* reactor = (self->*fn)(ctx, response.get());
      if (reactor == nullptr) return call.EndNow(UnimplementedMethodStatus(path));
      call.Bind(
          reactor, [ctx, response](Buffer* out) { return SerializeResponse(ctx, *response, out); }, response);
    });
  }

  // The client's one request is read (with no thread waiting) before the
  // method runs.
  template <typename Req, typename Resp, typename Self>
  void AddCallbackServerStreamingMethod(const MethodDescriptor& descriptor, Self* self,
                                        ServerWriteReactor<Resp>* (Self::*fn)(ServerContext*, const Req*)) {
    AddCallbackMethod(descriptor, [self, fn, path = descriptor.path](const internal::ServerCallbackCall& call) {
      auto request = std::make_shared<Req>();
      call.AwaitRequest(request.get(), [self, fn, path, call, request] {
        ServerWriteReactor<Resp>* reactor = (self->*fn)(call.context(), request.get());
        if (reactor == nullptr) return call.EndNow(UnimplementedMethodStatus(path));
        call.Bind(reactor, nullptr, request);
      });
    });
  }

  template <typename Req, typename Resp, typename Self>
  void AddCallbackBidiStreamingMethod(const MethodDescriptor& descriptor, Self* self,
                                      ServerBidiReactor<Req, Resp>* (Self::*fn)(ServerContext*)) {
    AddCallbackMethod(descriptor, [self, fn, path = descriptor.path](const internal::ServerCallbackCall& call) {
      ServerBidiReactor<Req, Resp>* reactor = (self->*fn)(call.context());
      if (reactor == nullptr) return call.EndNow(UnimplementedMethodStatus(path));
      call.Bind(reactor, nullptr, nullptr);
    });
  }

 private:
  void AddCallbackMethod(const MethodDescriptor& descriptor, CallbackHandler handler) {
    methods_.push_back({descriptor, nullptr, nullptr, std::move(handler)});
  }
  // A response serialized into the connection's memory.
  static Status SerializeResponse(ServerContext* ctx, const google::protobuf::MessageLite& response, Buffer* out);
  static Status UnimplementedMethodStatus(std::string_view path);
  void AddStreamingMethod(const MethodDescriptor& descriptor, StreamHandler handler) {
    methods_.push_back({descriptor, nullptr, std::move(handler), nullptr});
  }
  // Reads a server streaming call's one request; false if none came.
  static bool ReadSingleRequest(internal::StreamState* stream, ServerContext* ctx,
                                google::protobuf::MessageLite* request);

  std::string name_;
  std::vector<Method> methods_;
};

// The default body of every generated handler.
Status UnimplementedMethod(std::string_view path);

}  // namespace zcrpc
