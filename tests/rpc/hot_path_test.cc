// The blocking unary call's steady-state cost in the client process,
// counted rather than timed: heap allocations, mutex acquisitions and
// epoll_ctl calls per call, against a server in a separate process (so its
// costs are not counted). Issue "runtime v2", item 9: at most one mutex,
// no heap allocation, no epoll_ctl per call.
//
// The counts come from interposing malloc and friends (forwarded to glibc's
// __libc_* entry points), pthread_mutex_lock and epoll_ctl in this
// executable: zcrpc is linked in statically, so its calls bind here. A
// sanitizer build interposes the same functions, so there this test skips
// and says so.
#include <dlfcn.h>
#include <execinfo.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "tests/e2e/server_process.h"
#include "test_service.zcrpc.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ZCRPC_HOT_PATH_COUNTING 0
#else
#define ZCRPC_HOT_PATH_COUNTING 1
#endif

namespace {

// Counting is on only inside a measured window; the counters are plain
// atomics so that counting itself neither allocates nor locks.
std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_allocations{0};
std::atomic<uint64_t> g_mutex_locks{0};
std::atomic<uint64_t> g_epoll_ctls{0};
thread_local uint64_t t_allocations = 0;
thread_local uint64_t t_mutex_locks = 0;

// ZCRPC_HOT_PATH_TRACE=N prints the stacks of the first N counted events,
// to find where a lock or an allocation comes from (addr2line -f -C -e
// hot_path_test on the offsets).
std::atomic<int> g_trace_left{0};
thread_local bool t_in_trace = false;

void MaybeTrace(const char* what) {
  if (t_in_trace || g_trace_left.load(std::memory_order_relaxed) <= 0) return;
  if (g_trace_left.fetch_sub(1) <= 0) return;
  t_in_trace = true;
  void* frames[12];
  int n = backtrace(frames, 12);
  char line[64];
  int len = std::snprintf(line, sizeof line, "--- %s\n", what);
  (void)!write(STDERR_FILENO, line, static_cast<size_t>(len));
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  t_in_trace = false;
}

inline void CountAllocation() {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    ++t_allocations;
    MaybeTrace("allocation");
  }
}

}  // namespace

#if ZCRPC_HOT_PATH_COUNTING
extern "C" {
void* __libc_malloc(size_t);
void __libc_free(void*);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
// glibc keeps the real lock under this name only as a compatibility
// symbol: bind to that version explicitly.
__asm__(".symver real_pthread_mutex_lock, __pthread_mutex_lock@GLIBC_2.2.5");
int real_pthread_mutex_lock(pthread_mutex_t*);

void* malloc(size_t n) {
  CountAllocation();
  return __libc_malloc(n);
}
void free(void* p) { __libc_free(p); }
void* calloc(size_t n, size_t m) {
  CountAllocation();
  return __libc_calloc(n, m);
}
void* realloc(void* p, size_t n) {
  CountAllocation();
  return __libc_realloc(p, n);
}
void* memalign(size_t alignment, size_t n) {
  CountAllocation();
  return __libc_memalign(alignment, n);
}
void* aligned_alloc(size_t alignment, size_t n) {
  CountAllocation();
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, size_t alignment, size_t n) {
  CountAllocation();
  void* p = __libc_memalign(alignment, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
int pthread_mutex_lock(pthread_mutex_t* m) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_mutex_locks.fetch_add(1, std::memory_order_relaxed);
    ++t_mutex_locks;
    MaybeTrace("mutex");
  }
  return real_pthread_mutex_lock(m);
}
int epoll_ctl(int epfd, int op, int fd, struct epoll_event* event) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_epoll_ctls.fetch_add(1, std::memory_order_relaxed);
    MaybeTrace("epoll_ctl");
  }
  return static_cast<int>(::syscall(SYS_epoll_ctl, epfd, op, fd, event));
}
}  // extern "C"
#endif

namespace zcrpc {
namespace {

using test::EchoMessage;
using test::TestService;
using testing::ServerProcess;

struct PerCall {
  double process_allocations;
  double caller_allocations;
  double process_mutex_locks;
  double caller_mutex_locks;
  double epoll_ctls;
  double milliseconds;  // the measured window
};

// Makes `calls` blocking Echo calls of a 64-byte payload after `warm_up`
// uncounted ones, and returns the client process's costs per call.
PerCall MeasureEcho(TestService::Stub& stub, int warm_up, int calls, bool with_deadline) {
  EchoMessage request;
  request.set_payload(std::string(64, 'x'));
  EchoMessage response;
  auto one_call = [&](int i) {
    ClientContext context;
    if (with_deadline) context.set_timeout(std::chrono::seconds(10));
    request.set_id(static_cast<uint64_t>(i));
    Status status = stub.Echo(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_EQ(response.id(), static_cast<uint64_t>(i));
  };
  for (int i = 0; i < warm_up; ++i) one_call(i);
  if (const char* trace = std::getenv("ZCRPC_HOT_PATH_TRACE")) {
    void* warm[1];
    (void)backtrace(warm, 1);  // loads the unwinder now, not while counting
    g_trace_left = std::atoi(trace);
  }
  t_allocations = 0;
  t_mutex_locks = 0;
  g_allocations = 0;
  g_mutex_locks = 0;
  g_epoll_ctls = 0;
  const auto start = std::chrono::steady_clock::now();
  g_counting = true;
  for (int i = 0; i < calls; ++i) one_call(i);
  g_counting = false;
  const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const double n = calls;
  return {g_allocations / n, t_allocations / n, g_mutex_locks / n, t_mutex_locks / n, g_epoll_ctls / n, elapsed};
}

class HotPath : public ::testing::TestWithParam<std::string> {};

void ExpectAtMostOneMutexAndNoAllocation(const std::string& listen, bool with_deadline) {
  if (!ZCRPC_HOT_PATH_COUNTING) {
    GTEST_SKIP() << "a sanitizer build interposes malloc and pthread_mutex_lock itself: nothing to count here";
  }
  // A worker pool on the server, as by default: the server's side is in
  // another process either way.
  ServerProcess server(ZCRPC_TEST_SERVER, {"--listen", listen});
  ASSERT_FALSE(server.uri().empty()) << "test server did not start";
  auto channel = Channel::Create(server.uri());
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto stub = TestService::NewStub(*channel);

  PerCall cost = MeasureEcho(*stub, /*warm_up=*/2000, /*calls=*/5000, with_deadline);
  std::printf("per call on %s%s: %.3f allocations (%.3f on the caller's thread), %.3f mutex locks (%.3f on the "
              "caller's thread), %.3f epoll_ctl\n",
              listen.c_str(), with_deadline ? " with a deadline" : "", cost.process_allocations,
              cost.caller_allocations, cost.process_mutex_locks, cost.caller_mutex_locks, cost.epoll_ctls);
  // Whole-process figures: a reply read by a poller thread counts too. A
  // few incidental events over 5,000 calls are not "per call"; one per call
  // would be. With calls in flight the deadline sweeper takes its lock
  // twice per 1 ms tick whatever the call rate (deadline_sweeper.h): that
  // is allowed for, by the clock, since a loaded machine makes fewer calls
  // per tick.
  const double sweeper_locks = 2.0 * (cost.milliseconds / 1.0 + 2) / 5000;
  EXPECT_LT(cost.process_allocations, 0.01);
  EXPECT_LE(cost.process_mutex_locks, 1.05 + sweeper_locks);
  EXPECT_LT(cost.epoll_ctls, 0.01);
}

TEST_P(HotPath, BlockingUnaryCallTakesAtMostOneMutexAndNoAllocation) {
  ExpectAtMostOneMutexAndNoAllocation(GetParam(), /*with_deadline=*/false);
}

// With a deadline the call is also armed in the call table and swept.
TEST_P(HotPath, WithADeadlineToo) { ExpectAtMostOneMutexAndNoAllocation(GetParam(), /*with_deadline=*/true); }

INSTANTIATE_TEST_SUITE_P(Transports, HotPath, ::testing::Values("tcp://127.0.0.1:0", "shm://hot-path-*"),
                         [](const auto& info) { return info.param.rfind("tcp", 0) == 0 ? "tcp" : "shm"; });

}  // namespace
}  // namespace zcrpc
