// The echo client: calls Echo.Say on --target, blocking and with a
// callback, and prints what came back.
//   echo_client --target tcp://127.0.0.1:50051 [--text hello] [--payload-bytes N]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>

#include "echo.zcrpc.h"

int main(int argc, char** argv) {
  std::string target = "tcp://127.0.0.1:50051";
  std::string text = "hello, zcrpc";
  size_t payload_bytes = 1 << 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--target") == 0) target = argv[i + 1];
    else if (std::strcmp(argv[i], "--text") == 0) text = argv[i + 1];
    else if (std::strcmp(argv[i], "--payload-bytes") == 0) payload_bytes = std::strtoull(argv[i + 1], nullptr, 10);
  }

  auto channel = zcrpc::Channel::Create(target);
  if (!channel.ok()) {
    std::fprintf(stderr, "echo_client: %s\n", channel.status().ToString().c_str());
    return 1;
  }
  auto stub = zcrpc::examples::Echo::NewStub(*channel);

  // A blocking call with a deadline.
  zcrpc::examples::EchoRequest request;
  request.set_text(text);
  request.set_payload(std::string(payload_bytes, 'z'));
  zcrpc::examples::EchoReply reply;
  zcrpc::ClientContext context;
  context.set_timeout(std::chrono::seconds(5));
  zcrpc::Status status = stub->Say(&context, request, &reply);
  if (!status.ok()) {
    std::fprintf(stderr, "echo_client: Say failed: %s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("echo_client: blocking Say -> \"%s\" with %zu payload bytes back\n", reply.text().c_str(),
              reply.payload().size());

  // The same call in callback form.
  std::promise<zcrpc::Status> done;
  zcrpc::ClientContext async_context;
  zcrpc::examples::EchoReply async_reply;
  request.set_text(text + " (callback)");
  stub->Say(&async_context, request, &async_reply, [&done](zcrpc::Status s) { done.set_value(std::move(s)); });
  status = done.get_future().get();
  if (!status.ok()) {
    std::fprintf(stderr, "echo_client: callback Say failed: %s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("echo_client: callback Say -> \"%s\"\n", async_reply.text().c_str());
  return reply.payload() == request.payload() ? 0 : 1;
}
