#include "zcrpc/rpc/internal/connection_keeper.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/clock.h"

namespace zcrpc::internal {
namespace {

std::string Millis(std::chrono::nanoseconds d) {
  return absl::StrCat(std::chrono::duration_cast<std::chrono::milliseconds>(d).count(), " ms");
}

// `d` ±10 % (jitter in [-1, 1]), saturating.
int64_t Jittered(std::chrono::nanoseconds d, double jitter) {
  const double scaled = static_cast<double>(d.count()) * (1.0 + 0.1 * std::clamp(jitter, -1.0, 1.0));
  // 2^63 as a double: anything at or above it does not fit.
  if (scaled >= 9223372036854775808.0) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(scaled);
}

bool Passed(int64_t since, std::chrono::nanoseconds limit, int64_t now) {
  return now >= SaturatingAddNanos(since, limit.count());
}

}  // namespace

ConnectionKeeper::ConnectionKeeper(const KeepaliveOptions& keepalive, const ConnectionLifetime* lifetime, bool pings,
                                   int64_t now_nanos, double jitter)
    : keepalive_(keepalive),
      pings_(pings && keepalive.time.count() > 0),
      max_idle_(lifetime != nullptr ? lifetime->max_idle : std::chrono::nanoseconds(0)),
      max_age_grace_(lifetime != nullptr ? lifetime->max_age_grace : std::chrono::nanoseconds(0)),
      age_limit_at_(lifetime == nullptr || lifetime->max_age.count() <= 0
                        ? 0
                        : SaturatingAddNanos(now_nanos, Jittered(lifetime->max_age, jitter))),
      last_heard_(now_nanos),
      last_busy_(now_nanos) {}

std::chrono::nanoseconds ConnectionKeeper::CheckInterval(const KeepaliveOptions& keepalive,
                                                         const ConnectionLifetime* lifetime) {
  bool any = false;
  std::chrono::nanoseconds shortest = std::chrono::nanoseconds::max();
  auto consider = [&](std::chrono::nanoseconds d) {
    if (d.count() <= 0) return;
    any = true;
    shortest = std::min(shortest, d);
  };
  if (keepalive.time.count() > 0) {
    consider(keepalive.time);
    consider(keepalive.timeout);
  }
  if (lifetime != nullptr) {
    consider(lifetime->max_idle);
    consider(lifetime->max_age);
    consider(lifetime->max_age_grace);
  }
  if (!any) return std::chrono::nanoseconds(0);
  return std::clamp<std::chrono::nanoseconds>(shortest / 8, std::chrono::milliseconds(1), std::chrono::seconds(1));
}

void ConnectionKeeper::GoAwayNow(int64_t now_nanos) {
  go_away_ = GoAway::kRefused;
  go_away_at_ = now_nanos;
}

ConnectionKeeper::Action ConnectionKeeper::Check(int64_t now, bool has_calls, const std::string& peer) {
  Action action;
  // Keepalive: any frame since the last check proves the peer alive, and
  // answers an outstanding ping as well as its ack would.
  if (const uint64_t frames = frames_.load(std::memory_order_relaxed); frames != frames_seen_) {
    frames_seen_ = frames;
    last_heard_ = now;
    ping_sent_at_ = 0;
  }
  if (ping_sent_at_ != 0) {
    if (Passed(ping_sent_at_, keepalive_.timeout, now)) {
      action.close = absl::UnavailableError(
          absl::StrCat("keepalive: ", peer, " sent nothing for ", Millis(std::chrono::nanoseconds(now - last_heard_)),
                       ", nor answered a ping within keepalive timeout ", Millis(keepalive_.timeout),
                       ": it is dead or unreachable"));
      return action;
    }
  } else if (pings_ && Passed(last_heard_, keepalive_.time, now)) {
    action.send_ping = true;
    ping_sent_at_ = now;
  }

  // Idleness: calls running now, or started since the last check.
  if (const uint64_t calls = calls_.load(std::memory_order_relaxed); calls != calls_seen_ || has_calls) {
    calls_seen_ = calls;
    last_busy_ = now;
  }
  if (go_away_ == GoAway::kNone) {
    if (age_limit_at_ != 0 && now >= age_limit_at_) {
      action.send_go_away = true;
      go_away_ = GoAway::kAge;
      go_away_at_ = now;
    } else if (max_idle_.count() > 0 && Passed(last_busy_, max_idle_, now)) {
      action.send_go_away = true;
      go_away_ = GoAway::kIdle;
      go_away_at_ = now;
    }
    return action;
  }
  // After the go-away: the client should close once its calls end. A
  // refused connection's requests never run, so they do not keep it open:
  // its linger counts from the refusal alone.
  const int64_t quiet_since = go_away_ == GoAway::kRefused ? go_away_at_ : std::max(go_away_at_, last_busy_);
  const char* why = go_away_ == GoAway::kAge    ? "its age (max_connection_age)"
                    : go_away_ == GoAway::kIdle ? "idleness (max_connection_idle)"
                                                : "the listener's connection limit (max_connections_per_listener)";
  if (!has_calls && Passed(quiet_since, kGoAwayLinger, now)) {
    action.close = absl::UnavailableError(
        absl::StrCat("the server closed its connection with ", peer, " after a go-away for ", why));
  } else if (grace_over_at_ != 0 && Passed(grace_over_at_, kGoAwayLinger, now)) {
    // The age's grace ended the calls a linger ago (their replies are out);
    // a handler that ignored it, or a client still sending, does not keep
    // the connection.
    action.close = absl::UnavailableError(absl::StrCat("the server closed its connection with ", peer,
                                                       ": max_connection_age and its grace passed"));
  } else if (go_away_ == GoAway::kAge && grace_over_at_ == 0 && max_age_grace_.count() > 0 &&
             Passed(go_away_at_, max_age_grace_, now)) {
    grace_over_at_ = now;
    action.end_calls = absl::UnavailableError(
        absl::StrCat("the server ended the call: its connection reached max_connection_age and the grace of ",
                     Millis(max_age_grace_), " for calls still running passed"));
  }
  return action;
}

}  // namespace zcrpc::internal
