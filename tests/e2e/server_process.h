// ServerProcess: runs the test server as a child process and reads the URI
// it bound. The child is killed (SIGKILL) when the object dies, so a failing
// test never leaves a server behind.
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

namespace zcrpc::testing {

class ServerProcess {
 public:
  // Starts `binary` with `args`; waits for its "LISTENING <uri>" line.
  ServerProcess(const std::string& binary, std::vector<std::string> args) {
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(binary.c_str()));
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    FILE* f = fdopen(out[0], "r");
    char line[512];
    if (f != nullptr && std::fgets(line, sizeof line, f) != nullptr) {
      std::string s(line);
      if (s.rfind("LISTENING ", 0) == 0) uri_ = s.substr(10, s.find_last_not_of("\r\n") - 9);
    }
    if (f != nullptr) std::fclose(f);
  }
  ~ServerProcess() { Kill(SIGKILL); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Empty if the server did not start.
  const std::string& uri() const { return uri_; }
  pid_t pid() const { return pid_; }
  // "127.0.0.1:PORT" part of a tcp URI.
  std::string address() const { return uri_.substr(uri_.find("://") + 3); }

  // Sends `sig` and reaps the child.
  void Kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  std::string uri_;
};

}  // namespace zcrpc::testing
