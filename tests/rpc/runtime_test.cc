// The runtime (Channel, Server, the call model) in one process over the
// loopback:// transport, with the deadline sweep on an injected clock where
// time matters: method identity, server deadlines, re-entrancy, shutdown,
// URI checks and connecting. Cross-process behaviour is tests/e2e/.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "test_service.zcrpc.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using std::chrono::milliseconds;
using test::EchoMessage;
using test::TestService;

// Waits (real time, generously) until `done()`.
template <typename F>
bool Eventually(F done, milliseconds limit = milliseconds(10'000)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

constexpr uint64_t kThrow = 0xdead;

class Service final : public TestService::Service {
 public:
  Status Echo(ServerContext* ctx, const EchoMessage* request, EchoMessage* reply) override {
    if (request->id() == kThrow) throw std::runtime_error("boom");
    for (const auto& [key, value] : ctx->client_metadata()) {
      ZCRPC_RETURN_IF_ERROR(ctx->AddTrailingMetadata("echo-" + key, value));
    }
    if (nested_ && !nested_once_.exchange(true)) {  // the nested call itself does not nest
      // A blocking call from inside a handler: fine on a worker thread,
      // FAILED_PRECONDITION when the handler runs inline.
      EchoMessage inner;
      ClientContext inner_ctx;
      Status s = TestService::NewStub(nested_)->Echo(&inner_ctx, EchoMessage(), &inner);
      nested_status_.set_value(s);
    }
    reply->set_payload(request->payload());
    reply->set_id(request->id());
    return Status();
  }
  // Sleeps until cancelled or `ms` of real time passed.
  Status Sleep(ServerContext* ctx, const test::SleepRequest* request, EchoMessage*) override {
    started_.fetch_add(1);
    const auto until = std::chrono::steady_clock::now() + milliseconds(request->ms());
    while (std::chrono::steady_clock::now() < until) {
      if (ctx->IsCancelled()) {
        cancels_seen_.fetch_add(1);
        return absl::CancelledError("cancelled while sleeping");
      }
      std::this_thread::sleep_for(milliseconds(1));
    }
    return Status();
  }
  Status Stats(ServerContext*, const test::Empty*, test::StatsReply* reply) override {
    reply->set_cancels_seen(cancels_seen_.load());
    return Status();
  }

  std::atomic<int> started_{0};
  std::atomic<uint64_t> cancels_seen_{0};
  std::shared_ptr<Channel> nested_;
  std::atomic<bool> nested_once_{false};
  std::promise<Status> nested_status_;
};

struct Fixture {
  explicit Fixture(ServerOptions server_options = {}, ChannelOptions channel_options = {})
      : server(server_options) {
    EXPECT_TRUE(server.RegisterService(&service).ok());
    auto bound = server.AddListener("loopback://runtime-*");
    EXPECT_TRUE(bound.ok()) << bound.status();
    uri = bound.value_or("");
    auto created = Channel::Create(uri, channel_options);
    EXPECT_TRUE(created.ok()) << created.status();
    channel = created.value_or(nullptr);
    stub = TestService::NewStub(channel);
  }
  Service service;
  Server server;
  std::string uri;
  std::shared_ptr<Channel> channel;
  std::unique_ptr<TestService::Stub> stub;
};

// A callback Sleep call of `ms`; the caller waits for the handler to start.
struct SleepingCall {
  SleepingCall(Fixture& f, uint32_t ms) {
    request.set_ms(ms);
    f.stub->Sleep(&ctx, request, &reply, [this](Status s) { done.set_value(s); });
  }
  test::SleepRequest request;
  EchoMessage reply;
  ClientContext ctx;
  std::promise<Status> done;
};

TEST(Runtime, EchoesThroughLoopback) {
  Fixture f;
  EchoMessage request, reply;
  request.set_payload("hello");
  request.set_id(7);
  ClientContext ctx;
  ASSERT_TRUE(ctx.AddMetadata("k", "v").ok());
  ASSERT_TRUE(f.stub->Echo(&ctx, request, &reply).ok());
  EXPECT_EQ(reply.payload(), "hello");
  EXPECT_EQ(reply.id(), 7u);
  ASSERT_EQ(ctx.server_metadata().size(), 1u);
  EXPECT_EQ(ctx.server_metadata()[0].first, "echo-k");
}

TEST(Runtime, ManyCallsOfOneMethodReuseItsBinding) {
  // The first call announces the path; the rest name the binding. Either
  // way every call must reach Echo, from several threads at once.
  Fixture f;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        EchoMessage request, reply;
        request.set_id(static_cast<uint64_t>(i));
        ClientContext ctx;
        if (f.stub->Echo(&ctx, request, &reply).ok() && reply.id() == static_cast<uint64_t>(i)) ok.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 800);
}

TEST(Runtime, UnknownServiceIsUnimplementedNamingThePath) {
  Fixture f;
  auto stub = test::UnregisteredService::NewStub(f.channel);
  for (int i = 0; i < 3; ++i) {  // the first announces the path, the next reuse the binding
    EchoMessage reply;
    ClientContext ctx;
    Status s = stub->Echo(&ctx, EchoMessage(), &reply);
    EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
    EXPECT_NE(s.message().find("unknown service zcrpc.test.UnregisteredService"), std::string::npos) << s;
    EXPECT_NE(s.message().find("/zcrpc.test.UnregisteredService/Echo"), std::string::npos) << s;
  }
}

TEST(Runtime, UnknownMethodOfAKnownServiceIsUnimplementedNamingIt) {
  Fixture f;
  static constexpr MethodDescriptor kMissing{"/zcrpc.test.TestService/Missing", MethodKind::kUnary};
  EchoMessage request, reply;
  ClientContext ctx;
  Status s = f.channel->CallUnary(kMissing, &ctx, request, &reply);
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("unknown method /zcrpc.test.TestService/Missing"), std::string::npos) << s;
  // The connection is fine: a registered method still works.
  ClientContext ok_ctx;
  EXPECT_TRUE(f.stub->Echo(&ok_ctx, request, &reply).ok());
}

TEST(Runtime, ServerSweepCancelsTheHandlerAtTheDeadline) {
  // Both sides sweep on one fake clock that only moves when told to.
  FakeClock clock;
  DeadlineSweeper sweeper(DeadlineSweeper::kDefaultTick, &clock, /*run_thread=*/false);
  ServerOptions server_options;
  server_options.sweeper = &sweeper;
  ChannelOptions channel_options;
  channel_options.sweeper = &sweeper;
  Fixture f(server_options, channel_options);

  // A call with a 50 ms deadline (fake time) to a handler that sleeps 20 s
  // of real time unless cancelled.
  test::SleepRequest request;
  request.set_ms(20'000);
  EchoMessage reply;
  ClientContext ctx;
  ctx.set_deadline(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(clock.NowNanos() + 50'000'000)));
  std::promise<Status> done;
  f.stub->Sleep(&ctx, request, &reply, [&](Status s) { done.set_value(s); });
  ASSERT_TRUE(Eventually([&] { return f.service.started_.load() == 1; }));

  // Before the deadline a sweep ends nothing.
  clock.Advance(milliseconds(40));
  sweeper.SweepOnce();
  EXPECT_EQ(f.server.calls_in_flight(), 1u);
  // Past it, the client's sweep fails the call and the server's sweep
  // cancels the handler, which stops early.
  clock.Advance(milliseconds(20));
  sweeper.SweepOnce();
  auto result = done.get_future();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(result.get().code(), StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(Eventually([&] { return f.service.cancels_seen_.load() == 1; }));
  EXPECT_TRUE(Eventually([&] { return f.server.calls_in_flight() == 0; }));
}

TEST(Runtime, HugeTimeoutFromAPeerMeansNoDeadlineNotAnExpiredOne) {
  Fixture f;
  EchoMessage reply;
  ClientContext ctx;
  ctx.set_deadline(std::chrono::steady_clock::time_point::max() - std::chrono::hours(1));
  EXPECT_TRUE(f.stub->Echo(&ctx, EchoMessage(), &reply).ok());
}

TEST(Runtime, BlockingCallInsideACallbackFailsAtOnce) {
  Fixture f;
  std::promise<Status> inner;
  EchoMessage reply;
  ClientContext ctx;
  f.stub->Echo(&ctx, EchoMessage(), &reply, [&](Status) {
    // This thread delivers the connection's frames: a blocking call here
    // could only be answered by this same thread.
    EchoMessage inner_reply;
    ClientContext inner_ctx;
    inner.set_value(f.stub->Echo(&inner_ctx, EchoMessage(), &inner_reply));
  });
  auto status = inner.get_future();
  ASSERT_EQ(status.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  Status s = status.get();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("callback form"), std::string::npos) << s;
}

TEST(Runtime, BlockingCallInsideAnInlineHandlerFailsAtOnce) {
  ServerOptions inline_handlers;
  inline_handlers.worker_threads = 0;
  Fixture f(inline_handlers);
  f.service.nested_ = f.channel;
  EchoMessage reply;
  ClientContext ctx;
  ASSERT_TRUE(f.stub->Echo(&ctx, EchoMessage(), &reply).ok());
  auto nested = f.service.nested_status_.get_future();
  ASSERT_EQ(nested.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(nested.get().code(), StatusCode::kFailedPrecondition);
}

TEST(Runtime, BlockingCallInsideAPooledHandlerWorks) {
  Fixture f;  // the default: a worker pool
  f.service.nested_ = f.channel;
  EchoMessage reply;
  ClientContext ctx;
  ASSERT_TRUE(f.stub->Echo(&ctx, EchoMessage(), &reply).ok());
  auto nested = f.service.nested_status_.get_future();
  ASSERT_EQ(nested.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(nested.get().ok());
}

TEST(Runtime, ABlockedHandlerDoesNotStallOtherCallsByDefault) {
  Fixture f;
  SleepingCall sleeping(f, 20'000);
  ASSERT_TRUE(Eventually([&] { return f.service.started_.load() == 1; }));
  // The Sleep handler holds a worker; an Echo on the same connection is
  // served meanwhile.
  EchoMessage reply;
  ClientContext ctx;
  EXPECT_TRUE(f.stub->Echo(&ctx, EchoMessage(), &reply).ok());
  EXPECT_EQ(f.server.calls_in_flight(), 1u);
  sleeping.ctx.TryCancel();
  EXPECT_EQ(sleeping.done.get_future().get().code(), StatusCode::kCancelled);
}

TEST(Runtime, ShutdownLetsCallsFinishUntilItsDeadlineThenCancelsThem) {
  Fixture f;
  SleepingCall sleeping(f, 20'000);
  ASSERT_TRUE(Eventually([&] { return f.service.started_.load() == 1; }));

  // Wait() returns only once another thread has shut the server down.
  std::atomic<bool> waited{false};
  std::thread waiter([&] {
    f.server.Wait();
    waited = true;
  });
  f.server.Shutdown(std::chrono::steady_clock::now() + milliseconds(100));
  // The call outlived the deadline: its client got exactly one status,
  // CANCELLED, and its handler saw the cancel.
  auto result = sleeping.done.get_future();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(result.get().code(), StatusCode::kCancelled);
  EXPECT_TRUE(Eventually([&] { return f.service.cancels_seen_.load() == 1; }));
  waiter.join();
  EXPECT_TRUE(waited.load());
  // After shutdown, calls fail; nothing hangs.
  EchoMessage reply;
  ClientContext ctx;
  ctx.set_timeout(std::chrono::seconds(5));
  EXPECT_FALSE(f.stub->Echo(&ctx, EchoMessage(), &reply).ok());
}

TEST(Runtime, ShutdownWaitsForAQuickCallToFinish) {
  Fixture f;
  SleepingCall sleeping(f, 200);
  ASSERT_TRUE(Eventually([&] { return f.service.started_.load() == 1; }));
  f.server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(30));
  Status quick = sleeping.done.get_future().get();
  EXPECT_TRUE(quick.ok()) << quick;
}

// After the server's go-away the link only drains; a call on it that the
// client cancels must still tell the server, and the link then closes.
TEST(Runtime, ACancelOnADrainingConnectionStillReachesTheServer) {
  Fixture f;
  SleepingCall sleeping(f, 60'000);
  ASSERT_TRUE(Eventually([&] { return f.service.started_.load() == 1; }));

  std::thread shutdown([&] { f.server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(60)); });
  // Time for the go-away to reach the client (if it has not, the cancel
  // goes out on a live connection and this checks less, but still passes).
  std::this_thread::sleep_for(milliseconds(300));
  sleeping.ctx.TryCancel();
  auto result = sleeping.done.get_future();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(result.get().code(), StatusCode::kCancelled);
  // Long before Shutdown's 60 s deadline would have cancelled it.
  EXPECT_TRUE(Eventually([&] { return f.service.cancels_seen_.load() == 1; }, milliseconds(20'000)));
  shutdown.join();
}

// TryCancel names its channel by id: racing the channel's destruction, it
// finds nothing rather than a freed channel (ASan would see the latter).
TEST(Runtime, TryCancelRacingTheChannelsDestructionIsSafe) {
  Fixture f;
  for (int i = 0; i < 200; ++i) {
    auto channel = Channel::Create(f.uri);
    ASSERT_TRUE(channel.ok());
    auto stub = TestService::NewStub(*channel);
    test::SleepRequest sleep;
    sleep.set_ms(5'000);
    EchoMessage reply;
    ClientContext ctx;
    std::promise<Status> done;
    stub->Sleep(&ctx, sleep, &reply, [&](Status s) { done.set_value(s); });
    std::atomic<bool> stop{false};
    std::thread canceller([&] {
      while (!stop) ctx.TryCancel();
    });
    stub.reset();
    channel->reset();  // the last reference: the destructor ends the call
    auto result = done.get_future();
    ASSERT_EQ(result.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_EQ(result.get().code(), StatusCode::kCancelled);
    stop = true;
    canceller.join();
  }
}

TEST(Runtime, BadUrisFailAtCreateAndAddListener) {
  EXPECT_EQ(Channel::Create("loopback://x?no_such_option=1").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Channel::Create("nope://x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Channel::Create("not a uri").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Channel::Create("tcp://127.0.0.1:notaport").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Channel::Create("shm://x?slab_mb=banana").status().code(), StatusCode::kInvalidArgument);
  Server server;
  EXPECT_EQ(server.AddListener("tcp://127.0.0.1:0?no_such_option=1").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(server.AddListener("loopback://x?no_such_option=1").status().code(), StatusCode::kInvalidArgument);
}

TEST(Runtime, FailedConnectBacksOffThenFailsFastNamingTheError) {
  ChannelOptions options;
  options.initial_backoff = std::chrono::seconds(30);
  auto channel = Channel::Create("loopback://nobody-listens-here", options);
  ASSERT_TRUE(channel.ok());
  auto stub = TestService::NewStub(*channel);
  EchoMessage reply;
  ClientContext first;
  Status s = stub->Echo(&first, EchoMessage(), &reply);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  // Backing off: the next call fails at once, saying when it will retry.
  ClientContext second;
  s = stub->Echo(&second, EchoMessage(), &reply);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("next attempt in"), std::string::npos) << s;
}

TEST(Runtime, CallbackCallsEachCompleteExactlyOnce) {
  Fixture f;
  constexpr int kCalls = 500;
  std::vector<EchoMessage> replies(kCalls);
  std::vector<std::unique_ptr<ClientContext>> contexts;
  std::atomic<int> completions{0};
  for (int i = 0; i < kCalls; ++i) contexts.push_back(std::make_unique<ClientContext>());
  for (int i = 0; i < kCalls; ++i) {
    EchoMessage request;
    request.set_id(static_cast<uint64_t>(i));
    f.stub->Echo(contexts[i].get(), request, &replies[i], [&](Status s) {
      EXPECT_TRUE(s.ok()) << s;
      completions.fetch_add(1);
    });
  }
  ASSERT_TRUE(Eventually([&] { return completions.load() == kCalls; }));
  for (int i = 0; i < kCalls; ++i) EXPECT_EQ(replies[i].id(), static_cast<uint64_t>(i));
  std::this_thread::sleep_for(milliseconds(20));
  EXPECT_EQ(completions.load(), kCalls);
}

TEST(Runtime, AllocateBufferNeverFailsAndSharedAttachmentsGoOutWithoutACopy) {
  Fixture f;
  Buffer attachment = f.channel->AllocateBuffer(64 << 10);
  ASSERT_EQ(attachment.size(), 64u << 10);
  for (size_t i = 0; i < attachment.size(); ++i) attachment.data()[i] = static_cast<uint8_t>(i);
  // Keep one handle, send the other.
  Buffer kept = attachment.Share();
  const uint64_t copied_before = CopyStats::TotalBytesCopied();
  ClientContext ctx;
  ctx.AddAttachment(std::move(attachment));
  EchoMessage reply;
  ASSERT_TRUE(f.stub->Echo(&ctx, EchoMessage(), &reply).ok());
  EXPECT_EQ(CopyStats::TotalBytesCopied(), copied_before);
  EXPECT_EQ(kept.data()[1000], static_cast<uint8_t>(1000 & 0xff));
}

TEST(Runtime, AHandlerThatThrowsFailsItsCallNotTheProcess) {
  for (int workers : {0, 2}) {  // inline on the poller, and on the pool
    ServerOptions options;
    options.worker_threads = workers;
    Fixture f(options);
    EchoMessage request, reply;
    request.set_id(kThrow);
    ClientContext ctx;
    Status s = f.stub->Echo(&ctx, request, &reply);
    EXPECT_EQ(s.code(), StatusCode::kInternal) << s;
    EXPECT_NE(s.message().find("threw: boom"), std::string::npos) << s;
    // The server serves on, and nothing is left in flight.
    ClientContext again;
    request.set_id(1);
    EXPECT_TRUE(f.stub->Echo(&again, request, &reply).ok());
    EXPECT_EQ(f.server.calls_in_flight(), 0u);
  }
}

}  // namespace
}  // namespace zcrpc
