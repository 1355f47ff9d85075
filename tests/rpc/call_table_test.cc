#include "zcrpc/rpc/call_table.h"

#include <gtest/gtest.h>

#include "zcrpc/base/clock.h"

namespace zcrpc {
namespace {

struct FakeCall {
  int value = 0;
};

TEST(CallTable, InsertsAndRemovesByCallId) {
  CallTable<FakeCall> table(4);
  FakeCall a{1}, b{2};
  CallId ida = *table.Insert(&a);
  CallId idb = *table.Insert(&b);
  EXPECT_NE(ida, idb);
  EXPECT_NE(ida, 0u);
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(table.Remove(idb), &b);
  EXPECT_EQ(table.Remove(ida), &a);
  EXPECT_EQ(table.size(), 0u);
}

TEST(CallTable, FullTableIsResourceExhausted) {
  CallTable<FakeCall> table(2);
  FakeCall c;
  ASSERT_TRUE(table.Insert(&c).ok());
  ASSERT_TRUE(table.Insert(&c).ok());
  EXPECT_EQ(table.Insert(&c).status().code(), StatusCode::kResourceExhausted);
}

TEST(CallTable, StaleGenerationReplyIsDropped) {
  CallTable<FakeCall> table(1);
  FakeCall first, second;
  CallId old_id = *table.Insert(&first);
  ASSERT_EQ(table.Remove(old_id), &first);
  // The slot is reused with a new generation...
  CallId new_id = *table.Insert(&second);
  EXPECT_EQ(CallIdSlot(new_id), CallIdSlot(old_id));
  EXPECT_NE(CallIdGeneration(new_id), CallIdGeneration(old_id));
  // ...so a late reply carrying the old id finds nothing, and the new call is untouched.
  EXPECT_EQ(table.Remove(old_id), nullptr);
  EXPECT_EQ(table.Remove(new_id), &second);
}

TEST(CallTable, UnknownAndDoubleRemovesFindNothing) {
  CallTable<FakeCall> table(2);
  FakeCall c;
  CallId id = *table.Insert(&c);
  EXPECT_EQ(table.Remove(MakeCallId(99, 1)), nullptr);  // slot out of range
  EXPECT_EQ(table.Remove(id), &c);
  EXPECT_EQ(table.Remove(id), nullptr);
}

TEST(CallTable, ExpiresCallPastDeadlineBySweep) {
  FakeClock clock;
  CallTable<FakeCall> table(8);
  FakeCall soon{1}, later{2}, never{3};
  CallId id_soon = *table.Insert(&soon);
  CallId id_later = *table.Insert(&later);
  CallId id_never = *table.Insert(&never);
  const int64_t t0 = clock.NowNanos();
  table.Arm(id_soon, t0 + 1'000'000);
  table.Arm(id_later, t0 + 5'000'000);

  std::vector<FakeCall*> expired;
  auto collect = [&](CallId, FakeCall* c) { expired.push_back(c); };
  // Before any deadline: nothing.
  EXPECT_EQ(table.SweepExpired(clock.NowNanos(), collect), 0u);
  // At the first deadline, exactly that call.
  clock.Advance(std::chrono::milliseconds(1));
  EXPECT_EQ(table.SweepExpired(clock.NowNanos(), collect), 1u);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0], &soon);
  // The swept call is gone: its reply would be dropped.
  EXPECT_EQ(table.Remove(id_soon), nullptr);
  // Far later: the armed one, never the unarmed one.
  clock.Advance(std::chrono::seconds(10));
  EXPECT_EQ(table.SweepExpired(clock.NowNanos(), collect), 1u);
  EXPECT_EQ(expired.back(), &later);
  EXPECT_EQ(table.Remove(id_later), nullptr);
  EXPECT_EQ(table.Remove(id_never), &never);
}

TEST(CallTable, DisarmedCallDoesNotExpire) {
  FakeClock clock;
  CallTable<FakeCall> table(2);
  FakeCall c;
  CallId id = *table.Insert(&c);
  table.Arm(id, clock.NowNanos() + 1);
  table.Disarm(id);
  clock.Advance(std::chrono::seconds(1));
  EXPECT_EQ(table.SweepExpired(clock.NowNanos(), [](CallId, FakeCall*) {}), 0u);
  EXPECT_EQ(table.Remove(id), &c);
}

TEST(CallTable, ReusedSlotStartsDisarmed) {
  FakeClock clock;
  CallTable<FakeCall> table(1);
  FakeCall a, b;
  CallId id = *table.Insert(&a);
  table.Arm(id, clock.NowNanos() + 1);
  ASSERT_EQ(table.Remove(id), &a);
  CallId id2 = *table.Insert(&b);
  clock.Advance(std::chrono::seconds(1));
  EXPECT_EQ(table.SweepExpired(clock.NowNanos(), [](CallId, FakeCall*) {}), 0u);
  EXPECT_EQ(table.Remove(id2), &b);
}

TEST(CallTable, RemoveIfTakesMatchingCalls) {
  CallTable<FakeCall> table(4);
  FakeCall a{1}, b{2}, c{1};
  CallId ia = *table.Insert(&a), ib = *table.Insert(&b), ic = *table.Insert(&c);
  int removed = 0;
  table.RemoveIf([](FakeCall* f) { return f->value == 1; }, [&](CallId, FakeCall*) { ++removed; });
  EXPECT_EQ(removed, 2);
  EXPECT_EQ(table.Remove(ia), nullptr);
  EXPECT_EQ(table.Remove(ic), nullptr);
  EXPECT_EQ(table.Remove(ib), &b);
}

TEST(CallTable, InsertArmsAtOnce) {
  FakeClock clock;
  CallTable<FakeCall> table(2);
  FakeCall c;
  // Armed as it enters the table: there is no moment without its deadline.
  CallId id = *table.Insert(&c, clock.NowNanos() + 10);
  clock.Advance(std::chrono::nanoseconds(10));
  std::vector<CallId> expired;
  table.SweepExpired(clock.NowNanos(), [&](CallId e, FakeCall*) { expired.push_back(e); });
  EXPECT_EQ(expired, std::vector<CallId>{id});
}

TEST(CallTable, ArmingARemovedCallNeverTouchesTheSlotsNextCall) {
  FakeClock clock;
  CallTable<FakeCall> table(1);
  FakeCall first, second;
  // A call leaves the table (its reply came, or its connection failed)
  // before a late Arm() for it runs...
  CallId old_id = *table.Insert(&first);
  ASSERT_EQ(table.Remove(old_id), &first);
  // ...and the next call takes the same slot, with no deadline.
  CallId new_id = *table.Insert(&second);
  ASSERT_EQ(CallIdSlot(new_id), CallIdSlot(old_id));
  // The late Arm() finds its call gone and leaves the new one alone: the
  // new call must not expire at once.
  EXPECT_FALSE(table.Arm(old_id, clock.NowNanos()));
  clock.Advance(std::chrono::seconds(1));
  size_t expired = table.SweepExpired(clock.NowNanos(), [](CallId, FakeCall*) {});
  EXPECT_EQ(expired, 0u);
  EXPECT_EQ(table.Remove(new_id), &second);
}

TEST(CallTable, AcquirePinsUnderTheLockAndFindsOnlyLiveCalls) {
  CallTable<FakeCall> table(2);
  FakeCall c{5};
  CallId id = *table.Insert(&c);
  int pins = 0;
  EXPECT_EQ(table.Acquire(id, [&](FakeCall* call) { pins += call->value; }), &c);
  EXPECT_EQ(pins, 5);
  ASSERT_EQ(table.Remove(id), &c);
  // Gone: nothing is pinned.
  EXPECT_EQ(table.Acquire(id, [&](FakeCall*) { ++pins; }), nullptr);
  EXPECT_EQ(pins, 5);
}

}  // namespace
}  // namespace zcrpc
