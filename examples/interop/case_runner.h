// Runs the named interop cases a client program implements and prints
// "PASS case" or "FAIL case: why" for each; shared by zcrpc's interop_client
// and the stock gRPC C++ client of the tests, whose cases differ only in the
// API they call.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace zcrpc::interop {

// A case's verdict: empty when it passed, otherwise why it failed.
using Verdict = std::string;
using Case = std::pair<std::string, std::function<Verdict()>>;

// Runs every case (wanted == "all") or the one named `wanted`. Returns the
// exit code: 0 if all passed, 1 if any failed, 2 if no case has that name.
inline int RunCases(const char* program, const std::vector<Case>& cases, const std::string& wanted) {
  int failed = 0, ran = 0;
  for (const auto& [name, run] : cases) {
    if (wanted != "all" && wanted != name) continue;
    ++ran;
    const Verdict verdict = run();
    if (verdict.empty()) {
      std::printf("PASS %s\n", name.c_str());
    } else {
      ++failed;
      std::printf("FAIL %s: %s\n", name.c_str(), verdict.c_str());
    }
    std::fflush(stdout);  // each verdict shows even if a later case aborts the process
  }
  if (ran == 0) {
    std::fprintf(stderr, "%s: no test case named '%s'\n", program, wanted.c_str());
    return 2;
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace zcrpc::interop
