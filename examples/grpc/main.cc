// demo.Greeter served to stock gRPC clients and to zcrpc clients at once,
// and called through grpc:// as any stock gRPC server would be. The README
// shows this file as it is (a test checks).
#include <cstdio>

#include "greeter.zcrpc.h"

class GreeterImpl final : public demo::Greeter::Service {
  zcrpc::Status Hello(zcrpc::ServerContext* context, const demo::HelloRequest* request,
                      demo::HelloReply* reply) override {
    reply->set_message("hello, " + request->name() + " (from " + context->peer() + ")");
    return zcrpc::Status();
  }
};

int Fail(const char* what, const zcrpc::Status& status) {
  std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
  return 1;
}

int main() {
  GreeterImpl service;
  zcrpc::Server server;
  if (zcrpc::Status s = server.RegisterService(&service); !s.ok()) return Fail("RegisterService", s);
  // Stock gRPC clients (C++, Python, grpcurl) call this one...
  auto grpc_uri = server.AddListener("grpc://127.0.0.1:0");
  if (!grpc_uri.ok()) return Fail("AddListener grpc", grpc_uri.status());
  // ...while zcrpc clients take the faster transports.
  auto shm_uri = server.AddListener("shm://greeter-*");
  if (!shm_uri.ok()) return Fail("AddListener shm", shm_uri.status());
  std::printf("serving gRPC on %s and zcrpc on %s\n", grpc_uri->c_str(), shm_uri->c_str());

  // A zcrpc stub calls any gRPC server through grpc://HOST:PORT: here, our own.
  auto channel = zcrpc::Channel::Create(*grpc_uri);
  if (!channel.ok()) return Fail("Channel::Create", channel.status());
  auto stub = demo::Greeter::NewStub(*channel);
  demo::HelloRequest request;
  request.set_name("gRPC");
  demo::HelloReply reply;
  zcrpc::ClientContext context;
  context.set_timeout(std::chrono::seconds(5));
  if (zcrpc::Status s = stub->Hello(&context, request, &reply); !s.ok()) return Fail("Hello", s);
  std::printf("%s\n", reply.message().c_str());
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(1));
  return 0;
}
