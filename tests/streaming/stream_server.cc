// A server process for the cross-process stream tests: grpc.testing's
// TestService (examples/interop/grpc_test_service.h) on one URI. Prints
// "LISTENING <uri>" once bound, then serves until SIGTERM or SIGKILL.
//   stream_server [--listen URI]
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/e2e/serve_until_signal.h"
#include "examples/interop/grpc_test_service.h"
#include "zcrpc/zcrpc.h"

int main(int argc, char** argv) {
  std::string listen = "tcp://127.0.0.1:0";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--listen") == 0) listen = argv[i + 1];
  }
  zcrpc::testing::GrpcTestService service;
  return zcrpc::testing::ServeUntilSignal("stream_server", service, zcrpc::ServerOptions(), listen);
}
