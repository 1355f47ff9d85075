// The transport conformance suite: the same calls against a server in a
// separate process, once per transport (tcp and shm today; the others add
// their listen URI to the instantiation at the bottom).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "zcrpc/base/copy_stats.h"
#include "tests/e2e/server_process.h"
#include "test_service.zcrpc.h"

namespace zcrpc {
namespace {

using std::chrono::milliseconds;
using test::EchoMessage;
using test::TestService;
using testing::ServerProcess;

std::string Payload(size_t n, uint64_t seed = 7) {
  std::string s(n, '\0');
  uint64_t x = seed;
  for (char& c : s) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    c = static_cast<char>(x >> 56);
  }
  return s;
}

// Polls the server's count of cancelled handlers for up to 2 s.
uint64_t CancelsSeenByServer(TestService::Stub& stub) {
  for (int i = 0; i < 200; ++i) {
    test::StatsReply stats;
    ClientContext ctx;
    if (stub.Stats(&ctx, test::Empty(), &stats).ok() && stats.cancels_seen() > 0) return stats.cancels_seen();
    std::this_thread::sleep_for(milliseconds(10));
  }
  return 0;
}

// Each transport with handlers on a worker pool (the default) and inline
// on the thread that read the request (the opt-in fast path).
struct Setup {
  std::string listen;
  int workers;
};

class Conformance : public ::testing::TestWithParam<Setup> {
 protected:
  static const std::string& ListenUri() { return GetParam().listen; }
  static std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--listen", ListenUri(), "--workers", std::to_string(GetParam().workers)};
    args.insert(args.end(), extra.begin(), extra.end());
    auto server = std::make_unique<ServerProcess>(ZCRPC_TEST_SERVER, args);
    EXPECT_FALSE(server->uri().empty()) << "test server did not start";
    return server;
  }
  static std::shared_ptr<Channel> Connect(const std::string& uri, ChannelOptions options = {}) {
    auto channel = Channel::Create(uri, options);
    EXPECT_TRUE(channel.ok()) << channel.status();
    return channel.ok() ? *channel : nullptr;
  }
};

TEST_P(Conformance, EchoesPayloadsOfEverySize) {
  auto server = StartServer();
  auto stub = TestService::NewStub(Connect(server->uri()));
  for (size_t size : {size_t{0}, size_t{64}, size_t{1} << 20, size_t{16} << 20}) {
    SCOPED_TRACE(size);
    EchoMessage request, reply;
    request.set_payload(Payload(size, size));
    request.set_id(size + 1);
    ClientContext ctx;
    ASSERT_TRUE(stub->Echo(&ctx, request, &reply).ok());
    EXPECT_EQ(reply.id(), size + 1);
    EXPECT_TRUE(reply.payload() == request.payload());
  }
}

TEST_P(Conformance, DeadlineExceededWithinTwoTicksAndServerSeesCancel) {
  auto server = StartServer();
  auto stub = TestService::NewStub(Connect(server->uri()));

  // A handler that sleeps 3 s, called with a 100 ms deadline.
  test::SleepRequest request;
  request.set_ms(3000);
  EchoMessage reply;
  ClientContext ctx;
  const auto timeout = milliseconds(100);
  auto start = std::chrono::steady_clock::now();
  ctx.set_deadline(start + timeout);
  Status status = stub->Sleep(&ctx, request, &reply);
  auto elapsed = std::chrono::steady_clock::now() - start;

  // The client gives up at the deadline (a sweep tick is 1 ms; the bound is
  // generous, for a loaded machine: tests assert behaviour, bench/ measures)...
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status;
  EXPECT_GE(elapsed, timeout);
  EXPECT_LE(elapsed, timeout + std::chrono::seconds(1))
      << std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count() << " us";

  // ...and the server's handler is cancelled (by the server's own sweep, or
  // the cancel frame, whichever comes first) and stops early.
  EXPECT_EQ(CancelsSeenByServer(*stub), 1u);
}

TEST_P(Conformance, TryCancelEndsCallAndServerSeesCancelFrame) {
  auto server = StartServer();
  auto stub = TestService::NewStub(Connect(server->uri()));

  // No deadline: the server can only learn of the cancel from the cancel frame.
  test::SleepRequest request;
  request.set_ms(5000);
  EchoMessage reply;
  ClientContext ctx;
  auto cancel = std::async(std::launch::async, [&ctx] {
    std::this_thread::sleep_for(milliseconds(100));
    ctx.TryCancel();
  });
  auto start = std::chrono::steady_clock::now();
  Status status = stub->Sleep(&ctx, request, &reply);
  cancel.get();
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));

  // An inline handler holds the thread that would read the cancel frame:
  // it runs to its end, as documented (ServerOptions::worker_threads).
  if (GetParam().workers == 0) return;
  EXPECT_EQ(CancelsSeenByServer(*stub), 1u);
}

TEST_P(Conformance, UnknownMethodAndServiceAreUnimplemented) {
  auto server = StartServer();
  auto channel = Connect(server->uri());

  // A method the registered service does not have.
  static constexpr MethodDescriptor kNoSuchMethod{"/zcrpc.test.TestService/NoSuchMethod", MethodKind::kUnary};
  EchoMessage request, reply;
  ClientContext ctx1;
  EXPECT_EQ(channel->CallUnary(kNoSuchMethod, &ctx1, request, &reply).code(), StatusCode::kUnimplemented);

  // A service the server never registered.
  auto unregistered = test::UnregisteredService::NewStub(channel);
  ClientContext ctx2;
  Status status = unregistered->Echo(&ctx2, request, &reply);
  EXPECT_EQ(status.code(), StatusCode::kUnimplemented) << status;

  // The connection is still good.
  ClientContext ctx3;
  EXPECT_TRUE(TestService::NewStub(channel)->Echo(&ctx3, request, &reply).ok());
}

TEST_P(Conformance, MetadataTravelsBothWays) {
  auto server = StartServer();
  auto stub = TestService::NewStub(Connect(server->uri()));
  const std::string binary("\x00\x01\xfe\xff zc", 7);
  ClientContext ctx;
  ASSERT_TRUE(ctx.AddMetadata("x-trace", "abc-123").ok());
  ASSERT_TRUE(ctx.AddMetadata("x-blob-bin", binary).ok());
  EXPECT_FALSE(ctx.AddMetadata("Bad Key", "v").ok());
  EXPECT_FALSE(ctx.AddMetadata("x-text", std::string("\x01", 1)).ok());
  EchoMessage request, reply;
  ASSERT_TRUE(stub->Echo(&ctx, request, &reply).ok());
  Metadata expected = {{"echo-x-trace", "abc-123"}, {"echo-x-blob-bin", binary}};
  EXPECT_EQ(ctx.server_metadata(), expected);
}

TEST_P(Conformance, AttachmentsTravelBothWaysWithoutClientCopies) {
  auto server = StartServer();
  auto channel = Connect(server->uri());
  auto stub = TestService::NewStub(channel);
  const std::vector<size_t> sizes = {1 << 20, 100, 4096};
  ClientContext ctx;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Buffer buffer = channel->AllocateBuffer(sizes[i]);
    ASSERT_EQ(buffer.size(), sizes[i]);
    const std::string pattern = Payload(sizes[i], i + 1);
    std::memcpy(buffer.data(), pattern.data(), pattern.size());
    ctx.AddAttachment(std::move(buffer));
  }
  EchoMessage request, reply;
  request.set_id(3);
  const uint64_t copied_before = CopyStats::TotalBytesCopied();
  ASSERT_TRUE(stub->Echo(&ctx, request, &reply).ok());
  EXPECT_EQ(CopyStats::TotalBytesCopied() - copied_before, 0u) << "the client copied attachment bytes";
  ASSERT_EQ(ctx.response_attachments().size(), sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    const Buffer& back = ctx.response_attachments()[i];
    EXPECT_EQ(reinterpret_cast<uintptr_t>(back.data()) % 4096, 0u) << "attachment " << i << " is page-aligned";
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(back.data()), back.size()), Payload(sizes[i], i + 1));
  }
}

TEST_P(Conformance, ServerKilledMidCallGivesUnavailableAndNextCallReconnects) {
  auto server = StartServer();
  const std::string uri = server->uri();
  auto stub = TestService::NewStub(Connect(uri));

  // A call in flight when the server dies with SIGKILL...
  auto pending = std::async(std::launch::async, [&] {
    test::SleepRequest request;
    request.set_ms(10000);
    EchoMessage reply;
    ClientContext ctx;
    return stub->Sleep(&ctx, request, &reply);
  });
  std::this_thread::sleep_for(milliseconds(200));
  server->Kill(SIGKILL);
  // ...ends with UNAVAILABLE, promptly.
  ASSERT_EQ(pending.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(pending.get().code(), StatusCode::kUnavailable);

  // A server on the same address: the same channel reconnects.
  ServerProcess restarted(ZCRPC_TEST_SERVER, {"--listen", uri});
  ASSERT_EQ(restarted.uri(), uri);
  EchoMessage request, reply;
  request.set_id(42);
  ClientContext ctx;
  ASSERT_TRUE(stub->Echo(&ctx, request, &reply).ok());
  EXPECT_EQ(reply.id(), 42u);
}

TEST_P(Conformance, ThousandConcurrentCallsFromEightThreads) {
  auto server = StartServer();
  auto stub = TestService::NewStub(Connect(server->uri()));
  constexpr int kThreads = 8, kCallsPerThread = 125;
  std::atomic<int> correct{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      struct Call {
        ClientContext ctx;
        EchoMessage request, reply;
        std::promise<Status> done;
      };
      std::vector<std::unique_ptr<Call>> calls;
      for (int i = 0; i < kCallsPerThread; ++i) {
        auto call = std::make_unique<Call>();
        uint64_t id = static_cast<uint64_t>(t) * 1000 + i;
        call->request.set_id(id);
        call->request.set_payload(Payload(64 + i, id));
        stub->Echo(&call->ctx, call->request, &call->reply,
                   [c = call.get()](Status s) { c->done.set_value(std::move(s)); });
        calls.push_back(std::move(call));
      }
      for (auto& call : calls) {
        Status s = call->done.get_future().get();
        if (s.ok() && call->reply.id() == call->request.id() && call->reply.payload() == call->request.payload()) {
          correct.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(correct.load(), kThreads * kCallsPerThread);
}

TEST_P(Conformance, OversizedFrameIsResourceExhaustedAndServerKeepsServing) {
  auto server = StartServer({"--max-body-bytes", std::to_string(1 << 20)});
  auto channel = Connect(server->uri());
  auto stub = TestService::NewStub(channel);
  EchoMessage big, reply;
  big.set_payload(Payload(2 << 20));
  ClientContext ctx;
  Status status = stub->Echo(&ctx, big, &reply);
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted) << status;

  // The same connection and a new one both keep working.
  EchoMessage small;
  small.set_id(5);
  ClientContext ctx2;
  EXPECT_TRUE(stub->Echo(&ctx2, small, &reply).ok());
  ClientContext ctx3;
  EXPECT_TRUE(TestService::NewStub(Connect(server->uri()))->Echo(&ctx3, small, &reply).ok());
}

TEST_P(Conformance, GarbageBytesCloseThatConnectionOnly) {
  if (ListenUri().rfind("tcp://", 0) != 0) GTEST_SKIP() << "raw bytes are sent over TCP only";
  auto server = StartServer();
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(transport::SplitHostPort(server->address(), &host, &port).ok());

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string garbage = "GET / HTTP/1.1\r\nHost: zcrpc\r\n\r\n" + std::string(100, 'x');
  ASSERT_EQ(send(fd, garbage.data(), garbage.size(), MSG_NOSIGNAL), static_cast<ssize_t>(garbage.size()));
  // The server closes this connection: recv sees EOF (or a reset).
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[64];
  EXPECT_LE(recv(fd, buf, sizeof buf, 0), 0);
  close(fd);

  // Other clients are still served.
  EchoMessage request, reply;
  request.set_id(9);
  ClientContext ctx;
  EXPECT_TRUE(TestService::NewStub(Connect(server->uri()))->Echo(&ctx, request, &reply).ok());
  EXPECT_EQ(reply.id(), 9u);
}

TEST_P(Conformance, UnreachableServerIsUnavailable) {
  // Bind a port and close it, so nothing listens there.
  auto server = StartServer();
  const std::string uri = server->uri();
  server->Kill(SIGKILL);
  auto stub = TestService::NewStub(Connect(uri));
  EchoMessage request, reply;
  ClientContext ctx;
  EXPECT_EQ(stub->Echo(&ctx, request, &reply).code(), StatusCode::kUnavailable);
}

// "*" in an shm name becomes a unique token, as port 0 picks a free port.
INSTANTIATE_TEST_SUITE_P(Transports, Conformance,
                         ::testing::Values(Setup{"tcp://127.0.0.1:0", 2}, Setup{"tcp://127.0.0.1:0", 0},
                                           Setup{"shm://conformance-*", 2}, Setup{"shm://conformance-*", 0}),
                         [](const auto& info) {
                           return info.param.listen.substr(0, info.param.listen.find(':')) +
                                  (info.param.workers > 0 ? "_pool" : "_inline");
                         });

}  // namespace
}  // namespace zcrpc
