// The echo server: serves zcrpc.examples.Echo on every --listen URI until
// SIGINT or SIGTERM, then shuts down cleanly.
//   echo_server --listen tcp://127.0.0.1:50051
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "echo.zcrpc.h"

namespace {

class EchoImpl final : public zcrpc::examples::Echo::Service {
 public:
  zcrpc::Status Say(zcrpc::ServerContext*, const zcrpc::examples::EchoRequest* request,
                    zcrpc::examples::EchoReply* reply) override {
    reply->set_text(request->text());
    reply->set_payload(request->payload());
    return zcrpc::Status();
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> listen;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
      listen.push_back(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s --listen URI [--listen URI ...]\n", argv[0]);
      return 2;
    }
  }
  if (listen.empty()) listen.push_back("tcp://127.0.0.1:50051");

  // Block the signals in every thread; one thread waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  EchoImpl service;
  zcrpc::Server server;
  if (auto s = server.RegisterService(&service); !s.ok()) {
    std::fprintf(stderr, "echo_server: %s\n", s.ToString().c_str());
    return 1;
  }
  for (const std::string& uri : listen) {
    auto bound = server.AddListener(uri);
    if (!bound.ok()) {
      std::fprintf(stderr, "echo_server: %s\n", bound.status().ToString().c_str());
      return 1;
    }
    std::printf("echo_server: listening on %s\n", bound->c_str());
  }
  std::fflush(stdout);

  int signal = 0;
  sigwait(&signals, &signal);
  std::printf("echo_server: %s received, shutting down\n", strsignal(signal));
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  std::printf("echo_server: stopped\n");
  return 0;
}
