// Scale on this machine (2 cores): 1,000 concurrent connections to one
// server, each with a call in flight at the same moment; and 10,000
// concurrent calls held by one server at once on one channel. Nothing
// fails, nothing is refused, and every call completes once released. On
// tcp and shm (1,000 shm connections map 1,000 regions: about 1 GB of RSS
// here, in this one process holding both ends).
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_service.zcrpc.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using std::chrono::milliseconds;
using test::EchoMessage;
using test::TestService;

// Holds every Echo until Release(): calls stay in flight together.
class HoldingService final : public TestService::CallbackService {
 public:
  ServerUnaryReactor* Echo(ServerContext*, const EchoMessage* request, EchoMessage* response) override {
    response->set_id(request->id());
    auto* reactor = new Held;
    std::lock_guard lock(mu_);
    if (released_) {
      reactor->Finish(Status());
    } else {
      held_.push_back(reactor);
    }
    return reactor;
  }
  size_t held() {
    std::lock_guard lock(mu_);
    return held_.size();
  }
  void Release() {
    std::vector<Held*> held;
    {
      std::lock_guard lock(mu_);
      released_ = true;
      held.swap(held_);
    }
    for (Held* r : held) r->Finish(Status());
  }

 private:
  struct Held final : ServerUnaryReactor {
    void OnDone() override { delete this; }
  };
  std::mutex mu_;
  bool released_ = false;
  std::vector<Held*> held_;
};

// Each connection costs a descriptor on both ends, in this one process.
void RaiseDescriptorLimit(rlim_t want) {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = std::min(limit.rlim_max, std::max(limit.rlim_cur, want));
  ::setrlimit(RLIMIT_NOFILE, &limit);
}

bool Eventually(const std::function<bool()>& done, milliseconds limit = milliseconds(60'000)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

struct Scale {
  std::string listen;
  int connections;
};

class ScaleTest : public ::testing::TestWithParam<Scale> {};

TEST_P(ScaleTest, ConcurrentConnectionsEachWithACallInFlight) {
  const int n = GetParam().connections;
  RaiseDescriptorLimit(static_cast<rlim_t>(4 * n + 256));
  HoldingService service;
  Server server;
  ASSERT_TRUE(server.RegisterService(&service).ok());
  auto bound = server.AddListener(GetParam().listen);
  ASSERT_TRUE(bound.ok()) << bound.status();

  std::vector<std::unique_ptr<TestService::Stub>> stubs;
  std::vector<std::unique_ptr<ClientContext>> contexts(n);
  std::vector<EchoMessage> replies(n);
  std::vector<std::promise<Status>> done(n);
  for (int i = 0; i < n; ++i) {
    auto channel = Channel::Create(*bound);
    ASSERT_TRUE(channel.ok()) << channel.status();
    stubs.push_back(TestService::NewStub(*channel));
    EchoMessage request;
    request.set_id(static_cast<uint64_t>(i));
    contexts[i] = std::make_unique<ClientContext>();
    contexts[i]->set_timeout(std::chrono::seconds(120));
    stubs.back()->Echo(contexts[i].get(), request, &replies[i], [&done, i](Status s) { done[i].set_value(s); });
  }
  // All n are in the server at once, each on its own connection.
  ASSERT_TRUE(Eventually([&] { return service.held() == static_cast<size_t>(n); }))
      << service.held() << " of " << n << " calls arrived";
  EXPECT_EQ(server.calls_in_flight(), static_cast<uint32_t>(n));
  service.Release();
  for (int i = 0; i < n; ++i) {
    const Status status = done[i].get_future().get();
    ASSERT_TRUE(status.ok()) << "call " << i << ": " << status;
    ASSERT_EQ(replies[i].id(), static_cast<uint64_t>(i));
  }
}

TEST_P(ScaleTest, TenThousandConcurrentCallsOnOneChannel) {
  constexpr int kCalls = 10'000;
  HoldingService service;
  Server server;
  ASSERT_TRUE(server.RegisterService(&service).ok());
  auto bound = server.AddListener(GetParam().listen);
  ASSERT_TRUE(bound.ok()) << bound.status();
  ChannelOptions options;
  options.max_calls_in_flight = kCalls;
  auto channel = Channel::Create(*bound, options);
  ASSERT_TRUE(channel.ok());
  auto stub = TestService::NewStub(*channel);

  std::vector<std::unique_ptr<ClientContext>> contexts(kCalls);
  std::vector<EchoMessage> replies(kCalls);
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::mutex first_error_mu;
  Status first_error;
  for (int i = 0; i < kCalls; ++i) {
    EchoMessage request;
    request.set_id(static_cast<uint64_t>(i));
    contexts[i] = std::make_unique<ClientContext>();
    contexts[i]->set_timeout(std::chrono::seconds(120));
    stub->Echo(contexts[i].get(), request, &replies[i], [&](Status s) {
      if (s.ok()) {
        ok.fetch_add(1);
        return;
      }
      std::lock_guard lock(first_error_mu);
      if (failed.fetch_add(1) == 0) first_error = s;
    });
  }
  ASSERT_TRUE(Eventually([&] { return service.held() == static_cast<size_t>(kCalls) || failed.load() > 0; }))
      << service.held() << " of " << kCalls << " calls arrived";
  ASSERT_EQ(failed.load(), 0) << first_error;
  EXPECT_EQ(server.calls_in_flight(), static_cast<uint32_t>(kCalls));
  service.Release();
  ASSERT_TRUE(Eventually([&] { return ok.load() + failed.load() == kCalls; }));
  EXPECT_EQ(ok.load(), kCalls) << first_error;
  for (int i = 0; i < kCalls; ++i) ASSERT_EQ(replies[i].id(), static_cast<uint64_t>(i));
}

INSTANTIATE_TEST_SUITE_P(Transports, ScaleTest,
                         ::testing::Values(Scale{"tcp://127.0.0.1:0", 1'000}, Scale{"shm://scale-*", 1'000}),
                         [](const auto& info) { return info.index == 0 ? std::string("tcp") : std::string("shm"); });

}  // namespace
}  // namespace zcrpc
