// Serves demo.Greeter and calls it, in one process: the smallest complete
// zcrpc program. The README shows this file as it is (a test checks), and
// the install test builds it with -Wall -Wextra -Werror.
#include <cstdio>

#include "greeter.zcrpc.h"

class GreeterImpl final : public demo::Greeter::Service {
  zcrpc::Status Hello(zcrpc::ServerContext*, const demo::HelloRequest* request,
                      demo::HelloReply* reply) override {
    reply->set_message("hello, " + request->name());
    return zcrpc::Status();
  }
};

int Fail(const char* what, const zcrpc::Status& status) {
  std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
  return 1;
}

int main() {
  GreeterImpl service;
  zcrpc::Server server;  // handlers run on a worker pool by default
  if (zcrpc::Status s = server.RegisterService(&service); !s.ok()) return Fail("RegisterService", s);
  auto uri = server.AddListener("tcp://127.0.0.1:0");  // port 0: any free port
  if (!uri.ok()) return Fail("AddListener", uri.status());

  auto channel = zcrpc::Channel::Create(*uri);  // connects on the first call
  if (!channel.ok()) return Fail("Channel::Create", channel.status());
  auto stub = demo::Greeter::NewStub(*channel);
  demo::HelloRequest request;
  request.set_name("world");
  demo::HelloReply reply;
  zcrpc::ClientContext context;
  context.set_timeout(std::chrono::seconds(1));
  zcrpc::Status status = stub->Hello(&context, request, &reply);  // blocking
  // Callback form: stub->Hello(&context, request, &reply, [](zcrpc::Status s) { ... });
  if (!status.ok()) return Fail("Hello", status);
  std::printf("%s\n", reply.message().c_str());
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(1));
  return 0;
}
