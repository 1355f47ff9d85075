// Serves demo.Greeter and calls it, in one process: the smallest complete
// zcrpc program (the README shows it).
#include <cstdio>

#include "greeter.zcrpc.h"

class GreeterImpl final : public demo::Greeter::Service {
  zcrpc::Status Hello(zcrpc::ServerContext*, const demo::HelloRequest* request,
                      demo::HelloReply* reply) override {
    reply->set_message("hello, " + request->name());
    return zcrpc::Status();
  }
};

int main() {
  GreeterImpl service;
  zcrpc::Server server;
  if (!server.RegisterService(&service).ok()) return 1;
  auto uri = server.AddListener("tcp://127.0.0.1:0");
  if (!uri.ok()) return 1;

  auto channel = zcrpc::Channel::Create(*uri);
  if (!channel.ok()) return 1;
  auto stub = demo::Greeter::NewStub(*channel);
  demo::HelloRequest request;
  request.set_name("world");
  demo::HelloReply reply;
  zcrpc::ClientContext context;
  context.set_timeout(std::chrono::seconds(1));
  zcrpc::Status status = stub->Hello(&context, request, &reply);
  std::printf("%s\n", status.ok() ? reply.message().c_str() : status.ToString().c_str());
  server.Shutdown();
  return status.ok() ? 0 : 1;
}
