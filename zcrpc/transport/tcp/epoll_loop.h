// EpollLoop: the threads that wait for tcp sockets to become readable.
//
// Each socket is registered level-triggered and one-shot: one wake-up per
// Arm(), delivered to its Watcher on a loop thread, after which it stays
// quiet until armed again. That lets a socket's reading move between the
// loop and a caller that reads its own reply (TcpConnection::PollUntil)
// without losing a wake-up: arming a socket that already has bytes wakes at
// once. (Asio's reactor is edge-triggered with no speculative wait, so a
// wait started after the edge would sleep on data that is already there.)
//
// Thread-safe. The loop must outlive its registrations.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "zcrpc/base/status.h"

namespace zcrpc::transport::tcp {

class EpollLoop {
 public:
  class Watcher {
   public:
    // The socket is readable, hung up or has an error. On a loop thread;
    // the registration is disarmed until the next Arm().
    virtual void OnReady(uint32_t events) = 0;
    // The loop is shutting down: let go of whatever keeps the watcher alive.
    virtual void OnLoopStopped() = 0;

   protected:
    ~Watcher() = default;
  };

  explicit EpollLoop(int threads);
  ~EpollLoop();
  EpollLoop(const EpollLoop&) = delete;
  EpollLoop& operator=(const EpollLoop&) = delete;

  // Registers `fd` (disarmed). The watcher is called only after Arm().
  Status Add(int fd, Watcher* watcher);
  // One OnReady() when the socket is next readable (at once if it is now).
  void Arm(int fd, Watcher* watcher);
  // Withdraws an Arm(): no wake-up from now on until the next Arm(). One
  // already under way may still arrive.
  void Disarm(int fd, Watcher* watcher);
  // Unregisters; no OnReady() starts after this returns.
  void Remove(int fd, Watcher* watcher);

 private:
  void Run();

  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: tells the threads to stop
  std::vector<std::thread> threads_;
  std::mutex mu_;
  absl::flat_hash_set<Watcher*> watchers_;  // guarded by mu_
};

}  // namespace zcrpc::transport::tcp
