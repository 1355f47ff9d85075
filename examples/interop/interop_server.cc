// grpc.testing.TestService implemented with zcrpc's generated stubs
// (grpc_test_service.h) and served over gRPC on 127.0.0.1:PORT, as gRPC's
// own interop server is, optionally also on zcrpc URIs:
//
//   interop_server --port=50051 [--also=tcp://127.0.0.1:0,shm://interop-*]
//
// Prints "LISTENING grpc://127.0.0.1:PORT" (then one line per --also URI)
// and serves until SIGTERM or SIGINT.
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "examples/interop/grpc_test_service.h"

ABSL_FLAG(int, port, 0, "gRPC port on 127.0.0.1 (0: any free port)");
ABSL_FLAG(std::string, also, "", "comma-separated zcrpc URIs to serve on as well");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  zcrpc::testing::GrpcTestService service;
  zcrpc::Server server;
  if (zcrpc::Status s = server.RegisterService(&service); !s.ok()) {
    std::fprintf(stderr, "interop_server: %s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<std::string> uris = {"grpc://127.0.0.1:" + std::to_string(absl::GetFlag(FLAGS_port))};
  for (absl::string_view uri : absl::StrSplit(absl::GetFlag(FLAGS_also), ',', absl::SkipEmpty())) {
    uris.emplace_back(uri);
  }
  for (const std::string& uri : uris) {
    auto bound = server.AddListener(uri);
    if (!bound.ok()) {
      std::fprintf(stderr, "interop_server: %s: %s\n", uri.c_str(), bound.status().ToString().c_str());
      return 1;
    }
    std::printf("LISTENING %s\n", bound->c_str());
  }
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  return 0;
}
