// ConnectionKeeper's decisions with made-up times: when a ping goes out,
// when silence after it closes the connection, when idleness or age sends a
// go-away and when the connection closes after it. The end-to-end side is
// tests/fault/connection_limits_test.cc.
#include "zcrpc/rpc/internal/connection_keeper.h"

#include <limits>

#include <gtest/gtest.h>

namespace zcrpc::internal {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kStart = 1'000 * kMs;

KeepaliveOptions Keepalive(int64_t time_ms, int64_t timeout_ms) {
  KeepaliveOptions k;
  k.time = std::chrono::milliseconds(time_ms);
  k.timeout = std::chrono::milliseconds(timeout_ms);
  return k;
}

ConnectionLifetime NoLimits() {
  ConnectionLifetime l;
  l.max_idle = std::chrono::nanoseconds(0);
  return l;
}

TEST(ConnectionKeeper, PingsAfterSilenceAndClosesWhenNothingAnswers) {
  ConnectionKeeper keeper(Keepalive(100, 50), nullptr, /*pings=*/true, kStart);
  EXPECT_FALSE(keeper.Check(kStart + 99 * kMs, false, "peer").send_ping);
  ConnectionKeeper::Action ping = keeper.Check(kStart + 100 * kMs, false, "peer");
  EXPECT_TRUE(ping.send_ping);
  // One ping at a time.
  EXPECT_FALSE(keeper.Check(kStart + 120 * kMs, false, "peer").send_ping);
  EXPECT_TRUE(keeper.Check(kStart + 149 * kMs, false, "peer").close.ok());
  const Status dead = keeper.Check(kStart + 150 * kMs, false, "peer").close;
  EXPECT_EQ(dead.code(), StatusCode::kUnavailable);
  EXPECT_NE(dead.message().find("keepalive"), absl::string_view::npos) << dead;
}

TEST(ConnectionKeeper, AnyFrameAnswersThePingAndRestartsTheClock) {
  ConnectionKeeper keeper(Keepalive(100, 50), nullptr, true, kStart);
  ASSERT_TRUE(keeper.Check(kStart + 100 * kMs, false, "peer").send_ping);
  keeper.NoteFrame();
  ConnectionKeeper::Action later = keeper.Check(kStart + 140 * kMs, false, "peer");
  EXPECT_TRUE(later.close.ok());
  EXPECT_FALSE(later.send_ping);
  // Heard at 140 ms: the next ping is due at 240 ms, and then death at 290.
  EXPECT_FALSE(keeper.Check(kStart + 239 * kMs, false, "peer").send_ping);
  EXPECT_TRUE(keeper.Check(kStart + 240 * kMs, false, "peer").send_ping);
  EXPECT_FALSE(keeper.Check(kStart + 290 * kMs, false, "peer").close.ok());
}

TEST(ConnectionKeeper, NoPingsWhenThePeerCannotAnswerOrTimeIsZero) {
  ConnectionKeeper no_feature(Keepalive(100, 50), nullptr, /*pings=*/false, kStart);
  ConnectionKeeper off(Keepalive(0, 50), nullptr, true, kStart);
  for (int64_t t = 0; t < 10'000; t += 100) {
    EXPECT_FALSE(no_feature.Check(kStart + t * kMs, false, "peer").send_ping);
    EXPECT_FALSE(off.Check(kStart + t * kMs, false, "peer").send_ping);
  }
  EXPECT_EQ(ConnectionKeeper::CheckInterval(Keepalive(0, 50), nullptr).count(), 0);
}

TEST(ConnectionKeeper, IdleConnectionGetsAGoAwayThenClosesAfterTheLinger) {
  ConnectionLifetime lifetime = NoLimits();
  lifetime.max_idle = std::chrono::milliseconds(300);
  ConnectionKeeper keeper(Keepalive(0, 0), &lifetime, true, kStart);
  // Calls running keep it busy however long they take.
  EXPECT_FALSE(keeper.Check(kStart + 1'000 * kMs, /*has_calls=*/true, "peer").send_go_away);
  EXPECT_FALSE(keeper.Check(kStart + 1'299 * kMs, false, "peer").send_go_away);
  ConnectionKeeper::Action go = keeper.Check(kStart + 1'300 * kMs, false, "peer");
  EXPECT_TRUE(go.send_go_away);
  EXPECT_TRUE(keeper.going_away());
  EXPECT_FALSE(keeper.Check(kStart + 1'400 * kMs, false, "peer").send_go_away);  // once
  // A request that crossed the go-away is served; the linger counts from it.
  keeper.NoteCall();
  EXPECT_TRUE(keeper.Check(kStart + 1'500 * kMs, true, "peer").close.ok());
  EXPECT_TRUE(keeper.Check(kStart + 2'499 * kMs, false, "peer").close.ok());
  const Status closed = keeper.Check(kStart + 2'500 * kMs, false, "peer").close;
  EXPECT_EQ(closed.code(), StatusCode::kUnavailable);
  EXPECT_NE(closed.message().find("max_connection_idle"), absl::string_view::npos) << closed;
}

TEST(ConnectionKeeper, AgeLimitIsJitteredByTenPercentAndItsGraceEndsLongCalls) {
  ConnectionLifetime lifetime = NoLimits();
  lifetime.max_age = std::chrono::milliseconds(1'000);
  lifetime.max_age_grace = std::chrono::milliseconds(200);
  ConnectionKeeper early(Keepalive(0, 0), &lifetime, true, kStart, /*jitter=*/-1);
  ConnectionKeeper late(Keepalive(0, 0), &lifetime, true, kStart, /*jitter=*/1);
  EXPECT_FALSE(early.Check(kStart + 899 * kMs, true, "peer").send_go_away);
  EXPECT_TRUE(early.Check(kStart + 900 * kMs, true, "peer").send_go_away);
  EXPECT_FALSE(late.Check(kStart + 1'099 * kMs, true, "peer").send_go_away);
  EXPECT_TRUE(late.Check(kStart + 1'100 * kMs, true, "peer").send_go_away);
  // A call still running at go-away + grace is cut off.
  EXPECT_TRUE(early.Check(kStart + 1'099 * kMs, true, "peer").end_calls.ok());
  const Status cut = early.Check(kStart + 1'100 * kMs, true, "peer").end_calls;
  EXPECT_EQ(cut.code(), StatusCode::kUnavailable);
  EXPECT_NE(cut.message().find("max_connection_age"), absl::string_view::npos) << cut;
  EXPECT_TRUE(early.Check(kStart + 1'101 * kMs, true, "peer").end_calls.ok());  // once
  // A linger later it closes, even with a handler that ignored the end.
  EXPECT_TRUE(early.Check(kStart + 2'099 * kMs, true, "peer").close.ok());
  EXPECT_FALSE(early.Check(kStart + 2'100 * kMs, true, "peer").close.ok());
}

TEST(ConnectionKeeper, AgeWithoutGraceWaitsForCallsAsLongAsTheyTake) {
  ConnectionLifetime lifetime = NoLimits();
  lifetime.max_age = std::chrono::milliseconds(100);
  ConnectionKeeper keeper(Keepalive(0, 0), &lifetime, true, kStart);
  ASSERT_TRUE(keeper.Check(kStart + 200 * kMs, true, "peer").send_go_away);
  EXPECT_TRUE(keeper.Check(kStart + 3'600'000 * kMs, true, "peer").close.ok());
  EXPECT_FALSE(keeper.Check(kStart + 3'601'000 * kMs, false, "peer").close.ok());
}

TEST(ConnectionKeeper, ARefusedConnectionClosesOnceItsClientLetsGo) {
  ConnectionLifetime lifetime = NoLimits();
  ConnectionKeeper keeper(Keepalive(0, 0), &lifetime, true, kStart);
  keeper.GoAwayNow(kStart);
  EXPECT_TRUE(keeper.going_away());
  EXPECT_FALSE(keeper.Check(kStart + 10 * kMs, false, "peer").send_go_away);  // the owner sent it
  // Its refused requests do not keep it open: a client that never stops
  // sending is closed a linger after the refusal all the same.
  keeper.NoteCall();
  EXPECT_TRUE(keeper.Check(kStart + 500 * kMs, false, "peer").close.ok());
  keeper.NoteCall();
  const Status closed = keeper.Check(kStart + 1'000 * kMs, false, "peer").close;
  EXPECT_NE(closed.message().find("max_connections_per_listener"), absl::string_view::npos) << closed;
}

TEST(ConnectionKeeper, HugeLimitsNeverWrapIntoThePast) {
  ConnectionLifetime lifetime;
  lifetime.max_idle = std::chrono::nanoseconds::max();
  lifetime.max_age = std::chrono::nanoseconds::max();
  lifetime.max_age_grace = std::chrono::nanoseconds::max();
  KeepaliveOptions forever{std::chrono::nanoseconds::max(), std::chrono::nanoseconds::max()};
  const int64_t late_start = std::numeric_limits<int64_t>::max() / 2;
  ConnectionKeeper keeper(forever, &lifetime, true, late_start, 1);
  for (int64_t t : {late_start, late_start + 1'000 * kMs, std::numeric_limits<int64_t>::max() - 1}) {
    ConnectionKeeper::Action action = keeper.Check(t, false, "peer");
    EXPECT_FALSE(action.send_ping);
    EXPECT_FALSE(action.send_go_away);
    EXPECT_TRUE(action.close.ok());
  }
  EXPECT_EQ(ConnectionKeeper::CheckInterval(forever, &lifetime), std::chrono::seconds(1));
}

TEST(ConnectionKeeper, CheckIntervalIsAnEighthOfTheShortestTimerWithinBounds) {
  ConnectionLifetime lifetime = NoLimits();
  EXPECT_EQ(ConnectionKeeper::CheckInterval(Keepalive(800, 400), &lifetime), std::chrono::milliseconds(50));
  EXPECT_EQ(ConnectionKeeper::CheckInterval(Keepalive(2, 2), &lifetime), std::chrono::milliseconds(1));
  EXPECT_EQ(ConnectionKeeper::CheckInterval(KeepaliveOptions{}, &lifetime), std::chrono::seconds(1));
  EXPECT_EQ(ConnectionKeeper::CheckInterval(Keepalive(0, 0), &lifetime).count(), 0);
}

}  // namespace
}  // namespace zcrpc::internal
