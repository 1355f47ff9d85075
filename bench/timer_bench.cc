// Arming and disarming a call's timeout: the CallTable's deadline slot (one
// store each way) against an ordered timer list (absl::btree_multimap and
// std::multimap keyed by deadline), each with 10,000 calls in flight.
// docs/timers.md records the figures.
#include <benchmark/benchmark.h>

#include <map>
#include <random>
#include <vector>

#include "absl/container/btree_map.h"
#include "zcrpc/rpc/call_table.h"

namespace {

constexpr int kInFlight = 10'000;

struct Call {};

// Deadlines spread over 0..1 s, as for calls with mixed timeouts.
std::vector<int64_t> Deadlines() {
  std::mt19937_64 rng(42);
  std::vector<int64_t> d(kInFlight);
  for (auto& x : d) x = 1'000'000'000 + static_cast<int64_t>(rng() % 1'000'000'000);
  return d;
}

void BM_CallTableArmDisarm(benchmark::State& state) {
  zcrpc::CallTable<Call> table(kInFlight + 1);
  Call call;
  std::vector<zcrpc::CallId> ids;
  auto deadlines = Deadlines();
  for (int i = 0; i < kInFlight; ++i) {
    ids.push_back(*table.Insert(&call));
    table.Arm(ids.back(), deadlines[i]);
  }
  size_t i = 0;
  for (auto _ : state) {
    zcrpc::CallId id = ids[i];
    table.Disarm(id);
    table.Arm(id, deadlines[i] + 1);
    if (++i == ids.size()) i = 0;
  }
}
BENCHMARK(BM_CallTableArmDisarm);

// The whole life of a call's slot: insert, arm, disarm, remove.
void BM_CallTableInsertArmRemove(benchmark::State& state) {
  zcrpc::CallTable<Call> table(kInFlight + 1);
  Call call;
  auto deadlines = Deadlines();
  for (int i = 0; i < kInFlight; ++i) table.Arm(*table.Insert(&call), deadlines[i]);
  size_t i = 0;
  for (auto _ : state) {
    zcrpc::CallId id = *table.Insert(&call);
    table.Arm(id, deadlines[i]);
    benchmark::DoNotOptimize(table.Remove(id));
    if (++i == deadlines.size()) i = 0;
  }
}
BENCHMARK(BM_CallTableInsertArmRemove);

template <typename Map>
void BM_OrderedArmDisarm(benchmark::State& state) {
  Map timers;
  Call call;
  auto deadlines = Deadlines();
  std::vector<typename Map::iterator> handles;
  for (int i = 0; i < kInFlight; ++i) handles.push_back(timers.emplace(deadlines[i], &call));
  size_t i = 0;
  for (auto _ : state) {
    timers.erase(handles[i]);  // disarm
    handles[i] = timers.emplace(deadlines[i] + 1, &call);  // arm
    if (++i == handles.size()) i = 0;
  }
}
BENCHMARK(BM_OrderedArmDisarm<std::multimap<int64_t, Call*>>)->Name("BM_StdMultimapArmDisarm");
// btree iterators are invalidated by inserts, so the btree pays a lookup by
// key on disarm, as a timer list keyed by (deadline, call) would.
void BM_BtreeArmDisarm(benchmark::State& state) {
  absl::btree_multimap<int64_t, Call*> timers;
  Call call;
  auto deadlines = Deadlines();
  for (int i = 0; i < kInFlight; ++i) timers.emplace(deadlines[i], &call);
  size_t i = 0;
  for (auto _ : state) {
    timers.erase(timers.find(deadlines[i]));
    deadlines[i] += 1;
    timers.emplace(deadlines[i], &call);
    if (++i == deadlines.size()) i = 0;
  }
}
BENCHMARK(BM_BtreeArmDisarm);

}  // namespace

BENCHMARK_MAIN();
