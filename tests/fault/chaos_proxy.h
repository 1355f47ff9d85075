// ChaosProxy: a TCP proxy on loopback that sits between a client and a
// server and breaks the byte stream on purpose, one fault per proxy:
// delay every chunk, split it into 1-byte writes, truncate it, corrupt one
// byte, stall, or reset the connection, after a given number of bytes in a
// given direction. Every connection it accepts gets the same fault, counted
// from its own first byte.
//
// Threads: one accepting, two per connection (one per direction); a
// connection's sockets close when both of its threads are done, and the
// destructor waits for all of them. Binds 127.0.0.1 only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace zcrpc::testing {

struct ChaosFault {
  enum class Kind {
    kNone,           // forward as is
    kDelay,          // sleep `delay` before forwarding each chunk
    kOneByteWrites,  // forward each chunk one byte per write
    kTruncate,       // after `after_bytes`, close both sides (FIN)
    kCorrupt,        // flip every bit of the byte at offset `after_bytes`
    kStall,          // after `after_bytes`, forward nothing more, close nothing
    kReset,          // after `after_bytes`, reset both sides (RST)
  };
  enum class Direction { kToServer, kToClient, kBoth };

  Kind kind = Kind::kNone;
  Direction direction = Direction::kBoth;
  uint64_t after_bytes = 0;
  std::chrono::milliseconds delay{0};
  // For test names.
  std::string name;
};

class ChaosProxy {
 public:
  // `upstream`: "tcp://127.0.0.1:PORT" of the real server. Check ok().
  ChaosProxy(const std::string& upstream, ChaosFault fault);
  ~ChaosProxy();
  ChaosProxy(const ChaosProxy&) = delete;
  ChaosProxy& operator=(const ChaosProxy&) = delete;

  bool ok() const { return listen_fd_ >= 0; }
  // Where clients connect instead: "tcp://127.0.0.1:PORT".
  std::string uri() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  // Connections accepted so far.
  int connections() const { return connections_.load(); }

 private:
  // One proxied connection: its two sockets, closed by the last of its
  // two threads to finish.
  struct Link {
    int client = -1;
    int server = -1;
    ~Link();
  };
  void AcceptLoop();
  // Copies `from` to `to` (applying the fault if it is for this direction)
  // until either side ends or the proxy stops.
  void Pump(int from, int to, bool faulty);
  // A pump thread's body: Pump, then lets go of the link.
  void RunPump(std::shared_ptr<Link> link, bool to_server, bool faulty);

  const ChaosFault fault_;
  uint16_t upstream_port_ = 0;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable pumps_done_;
  int pumps_running_ = 0;  // guarded by mu_
};

}  // namespace zcrpc::testing
