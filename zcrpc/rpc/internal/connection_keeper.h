// ConnectionKeeper: one connection's keepalive, idle and age timers
// (connection_limits.h), as a decision its owner (a Channel's link, a
// Server's connection) acts on. The data path only bumps counters; the
// owner's sweep calls Check() on the sweeper's thread with the time, so
// the logic is plain arithmetic, tested with made-up times.
//
// Threads: NoteFrame() and NoteCall() from the connection's delivering
// thread (one at a time, handed over with acquire/release by the
// transport), so a bump is a plain load and store, no locked instruction
// per frame. Check() from one thread at a time (the owner's sweep).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "zcrpc/base/status.h"
#include "zcrpc/rpc/connection_limits.h"

namespace zcrpc::internal {

class ConnectionKeeper {
 public:
  // What the connection should do now. At most one of close, end_calls
  // and send_go_away is set; a ping may go with any but close.
  struct Action {
    bool send_ping = false;
    bool send_go_away = false;
    // Not OK: end the calls running on the connection with it, at their
    // clients too (the age's grace is over); the connection closes
    // kGoAwayLinger later, calls or not.
    Status end_calls;
    Status close;  // not OK: close the connection with it
  };

  // `lifetime`: null for a client (no idle or age limits). `pings`: whether
  // both prefaces announced keepalive (else no pings are sent). `jitter`
  // in [-1, 1] spreads the age limit by ±10 %.
  ConnectionKeeper(const KeepaliveOptions& keepalive, const ConnectionLifetime* lifetime, bool pings,
                   int64_t now_nanos, double jitter = 0);

  // A frame of any kind arrived: the peer is alive.
  void NoteFrame() { Bump(frames_); }
  // A call started on the connection: it is not idle.
  void NoteCall() { Bump(calls_); }

  // `has_calls`: calls are running on the connection now. `peer`: for the
  // close reason.
  Action Check(int64_t now_nanos, bool has_calls, const std::string& peer);

  // Whether a go-away went out (for idleness, age, or GoAwayNow).
  bool going_away() const { return go_away_ != GoAway::kNone; }
  // The connection is refused (a server over its connection limit): it
  // closes kGoAwayLinger after its last call, as after a go-away.
  void GoAwayNow(int64_t now_nanos);

  // How often the owner should call Check() for these options; 0 if never.
  static std::chrono::nanoseconds CheckInterval(const KeepaliveOptions& keepalive,
                                                const ConnectionLifetime* lifetime);

  // A go-away's client closes the connection once its calls end; one that
  // does not is closed this long after the go-away, if no call runs.
  static constexpr std::chrono::nanoseconds kGoAwayLinger = std::chrono::seconds(1);

 private:
  static void Bump(std::atomic<uint64_t>& counter) {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  const KeepaliveOptions keepalive_;
  const bool pings_;
  const std::chrono::nanoseconds max_idle_;
  const std::chrono::nanoseconds max_age_grace_;
  const int64_t age_limit_at_;  // 0: no age limit

  std::atomic<uint64_t> frames_{0};
  std::atomic<uint64_t> calls_{0};
  // Check()'s own state (one thread).
  uint64_t frames_seen_ = 0;
  uint64_t calls_seen_ = 0;
  int64_t last_heard_ = 0;
  int64_t last_busy_ = 0;
  int64_t ping_sent_at_ = 0;  // 0: no ping outstanding
  enum class GoAway { kNone, kIdle, kAge, kRefused };
  GoAway go_away_ = GoAway::kNone;
  int64_t go_away_at_ = 0;
  int64_t grace_over_at_ = 0;  // when end_calls was returned (0: not yet)
};

}  // namespace zcrpc::internal
