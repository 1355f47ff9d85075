// The tail of every test server process's main(): serve `service` on
// `listen`, print "LISTENING <bound uri>" (what ServerProcess waits for),
// and shut down on SIGTERM or SIGINT. `name` prefixes error messages.
// Returns main()'s exit code. Call from main(), before any other thread.
#pragma once

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "zcrpc/zcrpc.h"

namespace zcrpc::testing {

inline int ServeUntilSignal(const char* name, Service& service, const ServerOptions& options,
                            const std::string& listen) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before the server's threads inherit the mask

  Server server(options);
  if (Status s = server.RegisterService(&service); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, s.ToString().c_str());
    return 1;
  }
  auto bound = server.AddListener(listen);
  if (!bound.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, bound.status().ToString().c_str());
    return 1;
  }
  std::printf("LISTENING %s\n", bound->c_str());
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace zcrpc::testing
