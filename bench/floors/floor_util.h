// Plumbing shared by the floor programs: a forked server process and
// blocking loopback TCP sockets. Floors do the benchmark's work with no
// framework at all, so they show what the machine allows.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <functional>

namespace zcrpc::bench::floor {

// Runs `serve` in a child process that is killed if the parent dies;
// returns the child's pid. The child exits when `serve` returns.
pid_t ForkServer(const std::function<void()>& serve);

// Waits for the child to exit (after the client told it to stop).
void ReapServer(pid_t pid);

// A listening TCP socket on 127.0.0.1 with a kernel-chosen port.
int ListenLoopback(int* port);
// Accepts one connection on `listener` and closes the listener.
int AcceptOne(int listener);
int ConnectLoopback(int port);

// Blocking full reads and writes; false on EOF or error.
bool ReadFull(int fd, void* data, size_t size);
bool WriteFull(int fd, const void* data, size_t size);
// Header and payload in one sendmsg (two iovecs), looping on short writes.
bool WriteTwo(int fd, const void* a, size_t a_size, const void* b, size_t b_size);

// Exits with a RESULT line naming the failed system call and errno.
[[noreturn]] void FailErrno(const char* what);

}  // namespace zcrpc::bench::floor
