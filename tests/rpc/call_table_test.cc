#include "zcrpc/rpc/call_table.h"

#include <atomic>
#include <thread>
#include <vector>

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

TEST(CallTable, ADueCallThatMovedItsDeadlineIsReArmedNotExpired) {
  FakeClock clock;
  CallTable<FakeCall> table(2);
  FakeCall c;
  const int64_t t0 = clock.NowNanos();
  CallId id = *table.Insert(&c, t0 + 1'000'000);
  int64_t moved_to = t0 + 3'000'000;  // what the call says when asked (a stream's activity)
  int asked = 0;
  auto due = [&](FakeCall*) {
    ++asked;
    return moved_to;
  };
  int expired = 0;
  auto count = [&](CallId, FakeCall*) { ++expired; };
  clock.Advance(std::chrono::milliseconds(2));
  EXPECT_EQ(table.SweepExpired(clock.NowNanos(), due, count), 0u);
  EXPECT_EQ(asked, 1);
  // Re-armed at the new time: not due (nor asked) before it.
  EXPECT_EQ(table.SweepExpired(clock.NowNanos(), due, count), 0u);
  EXPECT_EQ(asked, 1);
  clock.Advance(std::chrono::milliseconds(1));
  EXPECT_EQ(table.SweepExpired(clock.NowNanos(), due, count), 1u);
  EXPECT_EQ(asked, 2);
  EXPECT_EQ(expired, 1);
  EXPECT_EQ(table.Remove(id), nullptr);
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

TEST(CallTable, AcquirePinsAndFindsOnlyLiveCalls) {
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

TEST(CallTable, RemoveWaitsForAPinToBeLetGo) {
  CallTable<FakeCall> table(4);
  FakeCall c{1};
  CallId id = *table.Insert(&c);
  std::atomic<bool> pinned{false}, let_go{false}, removed{false};
  std::thread pinner([&] {
    table.Acquire(id, [&](FakeCall*) {
      pinned = true;
      while (!let_go) std::this_thread::yield();
    });
  });
  while (!pinned) std::this_thread::yield();
  std::thread remover([&] {
    EXPECT_EQ(table.Remove(id), &c);
    removed = true;
  });
  // The remover cannot finish while the pin holds; there is no bound on how
  // long it could take to get here, so this checks only that it has not.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(removed);
  let_go = true;
  pinner.join();
  remover.join();
  EXPECT_TRUE(removed);
  EXPECT_EQ(table.size(), 0u);
}

// Threads insert, pin, sweep and race to remove the same calls: every call
// leaves the table exactly once, and the table ends empty with every slot
// usable again.
TEST(CallTable, ConcurrentInsertRemoveAndSweepEndEachCallOnce) {
  constexpr int kThreads = 4;
  constexpr int kCallsPerThread = 5000;
  CallTable<FakeCall> table(64);
  std::vector<FakeCall> calls(kThreads * kCallsPerThread);
  std::vector<std::atomic<int>> ended(calls.size());
  std::atomic<bool> stop_sweeping{false};
  std::atomic<int64_t> now{0};
  std::thread sweeper([&] {
    while (!stop_sweeping) {
      table.SweepExpired(now.load(), [&](CallId, FakeCall* call) { ended[call->value].fetch_add(1); });
      table.AnyOf([](FakeCall*) { return false; });
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        const int n = t * kCallsPerThread + i;
        calls[n].value = n;
        StatusOr<CallId> id = table.Insert(&calls[n], /*deadline_nanos=*/(n % 3 == 0) ? 1 : 0);
        if (!id.ok()) {  // full for a moment: the others hold every slot
          ended[n].fetch_add(1);
          continue;
        }
        table.Acquire(*id, [](FakeCall*) {});
        if (n % 5 == 0) now.store(n);  // lets the sweeper expire armed calls
        // Two removers race; at most one (or the sweeper) wins.
        FakeCall* a = nullptr;
        std::thread other([&] { a = table.Remove(*id); });
        FakeCall* b = table.Remove(*id);
        other.join();
        EXPECT_FALSE(a != nullptr && b != nullptr);
        if (a != nullptr) ended[a->value].fetch_add(1);
        if (b != nullptr) ended[b->value].fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  stop_sweeping = true;
  sweeper.join();
  for (size_t n = 0; n < ended.size(); ++n) ASSERT_EQ(ended[n].load(), 1) << "call " << n;
  EXPECT_EQ(table.size(), 0u);
  std::vector<FakeCall> refill(64);
  for (auto& c : refill) EXPECT_TRUE(table.Insert(&c).ok());
  EXPECT_FALSE(table.Insert(&refill[0]).ok());
}

}  // namespace
}  // namespace zcrpc
