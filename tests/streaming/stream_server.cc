// A server process for the cross-process stream tests: grpc.testing's
// TestService (tests/streaming/grpc_test_service.h) on one URI. Prints
// "LISTENING <uri>" once bound, then serves until SIGTERM or SIGKILL.
//   stream_server [--listen URI]
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "tests/streaming/grpc_test_service.h"
#include "zcrpc/zcrpc.h"

int main(int argc, char** argv) {
  std::string listen = "tcp://127.0.0.1:0";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--listen") == 0) listen = argv[i + 1];
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  zcrpc::testing::GrpcTestService service;
  zcrpc::Server server;
  if (auto s = server.RegisterService(&service); !s.ok()) {
    std::fprintf(stderr, "stream_server: %s\n", s.ToString().c_str());
    return 1;
  }
  auto bound = server.AddListener(listen);
  if (!bound.ok()) {
    std::fprintf(stderr, "stream_server: %s\n", bound.status().ToString().c_str());
    return 1;
  }
  std::printf("LISTENING %s\n", bound->c_str());
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  return 0;
}
