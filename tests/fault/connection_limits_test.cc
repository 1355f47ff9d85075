// The connection guarantees of docs/reliability.md, each shown once with a
// peer that misbehaves on purpose: a raw socket that never finishes its
// handshake, one that sends a header and falls silent, one that stops
// answering; a server process frozen with SIGSTOP (a partitioned host); a
// listener over its connection limit; connections past their idle and age
// limits. Real sockets and shared memory on loopback, real processes.
//
// Time bounds are generous (the machine may be loaded); lower bounds show
// that a limit, not something else, ended the connection.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "test_service.zcrpc.h"
#include "tests/e2e/server_process.h"
#include "tests/fault/raw_peer.h"
#include "zcrpc/transport/tcp/stream_layout.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using std::chrono::milliseconds;
using test::EchoMessage;
using test::TestService;
using testing::RawPeer;

constexpr milliseconds kGenerous{10'000};

class Service final : public TestService::Service {
 public:
  Status Echo(ServerContext*, const EchoMessage* request, EchoMessage* reply) override {
    reply->set_payload(request->payload());
    reply->set_id(request->id());
    return Status();
  }
  Status Sleep(ServerContext* ctx, const test::SleepRequest* request, EchoMessage*) override {
    const auto until = std::chrono::steady_clock::now() + milliseconds(request->ms());
    while (std::chrono::steady_clock::now() < until) {
      if (ctx->IsCancelled()) return absl::CancelledError("cancelled while sleeping");
      std::this_thread::sleep_for(milliseconds(1));
    }
    return Status();
  }
};

// Everything off that a test does not turn on: each test shows one limit.
ServerOptions Quiet() {
  ServerOptions options;
  options.keepalive.time = std::chrono::nanoseconds(0);
  options.connection_lifetime.max_idle = std::chrono::nanoseconds(0);
  return options;
}

ChannelOptions QuietChannel() {
  ChannelOptions options;
  options.keepalive.time = std::chrono::nanoseconds(0);
  return options;
}

struct TestServer {
  explicit TestServer(ServerOptions options, const std::string& listen = "tcp://127.0.0.1:0") : server(options) {
    EXPECT_TRUE(server.RegisterService(&service).ok());
    auto bound = server.AddListener(listen);
    EXPECT_TRUE(bound.ok()) << bound.status();
    uri = bound.value_or("");
  }
  Service service;
  Server server;
  std::string uri;
};

std::unique_ptr<TestService::Stub> StubFor(const std::string& uri, ChannelOptions options = QuietChannel()) {
  auto channel = Channel::Create(uri, options);
  EXPECT_TRUE(channel.ok()) << channel.status();
  return TestService::NewStub(*channel);
}

Status Echo(TestService::Stub& stub, milliseconds timeout = kGenerous) {
  EchoMessage request, reply;
  request.set_payload("ping");
  ClientContext ctx;
  ctx.set_timeout(timeout);
  return stub.Echo(&ctx, request, &reply);
}

bool Eventually(const std::function<bool()>& done) {
  const auto until = std::chrono::steady_clock::now() + kGenerous;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

// The header of a request whose body is a message of `message_len` bytes,
// laid out as tcp lays it out (stream_layout.h), for a raw peer to send.
WireHeader RequestHeader(uint32_t message_len) {
  WireHeader header;
  header.type = FrameType::kRequest;
  header.call_id = 1;
  header.method_id = 1;
  header.message_len = message_len;
  transport::tcp::StreamLayout layout;
  layout.Next(0);
  layout.Next(message_len);
  layout.Finish();
  header.padding_len = layout.padding();
  return header;
}

milliseconds Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
}

TEST(ConnectionLimits, AConnectionThatNeverFinishesItsHandshakeIsClosed) {
  ServerOptions options = Quiet();
  options.handshake_timeout = milliseconds(300);
  TestServer server(options);
  RawPeer silent(server.uri);
  ASSERT_TRUE(silent.connected());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(silent.ClosedWithin(kGenerous));
  EXPECT_GE(Since(start), milliseconds(250));
}

// The first 10 bytes of a request whose header promised 100: a slow-loris
// peer. The server closes it after receive_stall_timeout, and serves
// another client without a hitch meanwhile.
TEST(ConnectionLimits, AHeaderFollowedBySilenceIsClosedAndOthersAreServed) {
  ServerOptions options = Quiet();
  options.receive_stall_timeout = milliseconds(300);
  TestServer server(options);
  RawPeer loris(server.uri);
  ASSERT_TRUE(loris.connected());
  ASSERT_TRUE(loris.Handshake());
  ASSERT_TRUE(loris.SendHeader(RequestHeader(100)));
  std::array<uint8_t, 10> start_of_body{};
  ASSERT_TRUE(loris.SendAll(start_of_body));
  const auto start = std::chrono::steady_clock::now();

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::thread bystander([&] {
    auto stub = StubFor(server.uri);
    while (!stop.load()) {
      if (!Echo(*stub).ok()) failures.fetch_add(1);
      std::this_thread::sleep_for(milliseconds(5));
    }
  });
  EXPECT_TRUE(loris.ClosedWithin(kGenerous));
  EXPECT_GE(Since(start), milliseconds(250));
  stop.store(true);
  bystander.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(ConnectionLimits, AServerPingsASilentClientAndClosesItWhenItDoesNotAnswer) {
  ServerOptions options = Quiet();
  options.keepalive.time = milliseconds(200);
  options.keepalive.timeout = milliseconds(300);
  TestServer server(options);
  RawPeer mute(server.uri);
  ASSERT_TRUE(mute.connected());
  ASSERT_TRUE(mute.Handshake());
  const auto start = std::chrono::steady_clock::now();
  std::optional<WireHeader> ping = mute.ReadFrame(kGenerous);
  ASSERT_TRUE(ping.has_value());
  EXPECT_EQ(ping->type, FrameType::kPing);
  EXPECT_NE(ping->call_id, 0u);
  EXPECT_TRUE(mute.ClosedWithin(kGenerous));
  EXPECT_GE(Since(start), milliseconds(450));  // keepalive time + timeout, less a check interval
}

TEST(ConnectionLimits, AClientThatAnswersPingsStaysConnected) {
  ServerOptions options = Quiet();
  options.keepalive.time = milliseconds(100);
  options.keepalive.timeout = milliseconds(200);
  TestServer server(options);
  RawPeer polite(server.uri);
  ASSERT_TRUE(polite.connected());
  ASSERT_TRUE(polite.Handshake());
  int pings = 0;
  const auto until = std::chrono::steady_clock::now() + milliseconds(1'500);
  while (std::chrono::steady_clock::now() < until) {
    std::optional<WireHeader> frame = polite.ReadFrame(milliseconds(1'000));
    ASSERT_TRUE(frame.has_value()) << "the server closed a connection whose client answered every ping";
    ASSERT_EQ(frame->type, FrameType::kPing);
    ++pings;
    WireHeader ack;
    ack.type = FrameType::kPingAck;
    ack.call_id = frame->call_id;
    ASSERT_TRUE(polite.SendHeader(ack));
  }
  EXPECT_GE(pings, 3);
}

TEST(ConnectionLimits, AServerAnswersAClientsPing) {
  TestServer server(Quiet());
  RawPeer peer(server.uri);
  ASSERT_TRUE(peer.connected());
  ASSERT_TRUE(peer.Handshake());
  WireHeader ping;
  ping.type = FrameType::kPing;
  ping.call_id = 0x1234'5678'9abcULL;
  ASSERT_TRUE(peer.SendHeader(ping));
  std::optional<WireHeader> ack = peer.ReadFrame(kGenerous);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->type, FrameType::kPingAck);
  EXPECT_EQ(ack->call_id, ping.call_id);
}

// A server process frozen mid-call (SIGSTOP: what a partitioned or hung
// host looks like from here): the client's keepalive ends the call with
// UNAVAILABLE long before its deadline, on tcp and on shm.
class FrozenServer : public ::testing::TestWithParam<std::string> {};

TEST_P(FrozenServer, ClientKeepaliveEndsTheCallsOfAServerThatStoppedAnswering) {
#if defined(__SANITIZE_THREAD__)
  // Debian's libgrpc is not built with TSan, which then reports its
  // internals as races (the grpc label does not run under TSan either).
  if (GetParam().rfind("grpc://", 0) == 0) GTEST_SKIP() << "grpc:// under TSan: libgrpc is not instrumented";
#endif
  testing::ServerProcess process(ZCRPC_TEST_SERVER, {"--listen", GetParam()});
  ASSERT_FALSE(process.uri().empty());
  ChannelOptions options = QuietChannel();
  options.keepalive.time = milliseconds(200);
  options.keepalive.timeout = milliseconds(300);
  auto stub = StubFor(process.uri(), options);
  ASSERT_TRUE(Echo(*stub).ok());

  test::SleepRequest request;
  request.set_ms(60'000);
  EchoMessage reply;
  ClientContext ctx;
  ctx.set_timeout(std::chrono::seconds(60));
  // Shared with the callback: a failing test must not leave it a dangling promise.
  auto done = std::make_shared<std::promise<Status>>();
  stub->Sleep(&ctx, request, &reply, [done](Status s) { done->set_value(s); });
  std::this_thread::sleep_for(milliseconds(50));  // the request is out
  ::kill(process.pid(), SIGSTOP);
  const auto start = std::chrono::steady_clock::now();
  std::future<Status> result = done->get_future();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  const Status status = result.get();
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find("keepalive"), absl::string_view::npos) << status;
  EXPECT_GE(Since(start), milliseconds(300));
  ::kill(process.pid(), SIGCONT);
}

// grpc://: gRPC's own HTTP/2 keepalive, set from the same options.
INSTANTIATE_TEST_SUITE_P(Transports, FrozenServer,
                         ::testing::Values("tcp://127.0.0.1:0", "shm://fault-frozen-*", "grpc://127.0.0.1:0"),
                         [](const auto& info) { return std::string(info.param.substr(0, info.param.find(':'))); });

// Idle and age limits move clients to a new connection without failing a
// call; only a call that outlives the age's grace is cut off.
class Lifetime : public ::testing::TestWithParam<std::string> {};

TEST_P(Lifetime, AnIdleConnectionGetsAGoAwayAndTheNextCallReconnects) {
  ServerOptions options = Quiet();
  options.connection_lifetime.max_idle = milliseconds(200);
  TestServer server(options, GetParam());
  auto stub = StubFor(server.uri);
  ASSERT_TRUE(Echo(*stub).ok());
  std::this_thread::sleep_for(milliseconds(1'500));  // idle: go-away, then closed
  EXPECT_TRUE(Echo(*stub).ok());
}

TEST_P(Lifetime, CallsGoOnAcrossConnectionAgeLimits) {
  ServerOptions options = Quiet();
  options.connection_lifetime.max_age = milliseconds(100);
  TestServer server(options, GetParam());
  auto stub = StubFor(server.uri);
  const auto until = std::chrono::steady_clock::now() + milliseconds(1'500);
  int calls = 0;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(Echo(*stub).ok()) << "call " << calls;
    ++calls;
    std::this_thread::sleep_for(milliseconds(2));
  }
  EXPECT_GT(calls, 10);
}

TEST_P(Lifetime, ACallThatOutlivesTheAgesGraceEndsUnavailable) {
  ServerOptions options = Quiet();
  options.connection_lifetime.max_age = milliseconds(200);
  options.connection_lifetime.max_age_grace = milliseconds(300);
  TestServer server(options, GetParam());
  auto stub = StubFor(server.uri);
  test::SleepRequest request;
  request.set_ms(30'000);
  EchoMessage reply;
  ClientContext ctx;
  ctx.set_timeout(std::chrono::seconds(30));
  const auto start = std::chrono::steady_clock::now();
  const Status status = stub->Sleep(&ctx, request, &reply);
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find("max_connection_age"), absl::string_view::npos) << status;
  EXPECT_GE(Since(start), milliseconds(400));
  EXPECT_LT(Since(start), milliseconds(20'000));
}

INSTANTIATE_TEST_SUITE_P(Transports, Lifetime, ::testing::Values("tcp://127.0.0.1:0", "shm://fault-lifetime-*"),
                         [](const auto& info) { return info.index == 0 ? std::string("tcp") : std::string("shm"); });

TEST(ConnectionLimits, AListenerOverItsConnectionLimitRefusesWithResourceExhaustedThenRecovers) {
  ServerOptions options = Quiet();
  options.max_connections_per_listener = 2;
  TestServer server(options);
  auto first = StubFor(server.uri);
  auto second = StubFor(server.uri);
  ASSERT_TRUE(Echo(*first).ok());
  ASSERT_TRUE(Echo(*second).ok());
  auto third = StubFor(server.uri);
  const Status refused = Echo(*third);
  EXPECT_EQ(refused.code(), StatusCode::kResourceExhausted) << refused;
  EXPECT_NE(refused.message().find("max_connections_per_listener"), absl::string_view::npos) << refused;
  // The two admitted clients are unaffected.
  EXPECT_TRUE(Echo(*first).ok());
  EXPECT_TRUE(Echo(*second).ok());
  // One leaves: its slot frees, and a newcomer gets in.
  first.reset();
  bool admitted = false;
  const auto until = std::chrono::steady_clock::now() + kGenerous;
  while (!admitted && std::chrono::steady_clock::now() < until) {
    auto newcomer = StubFor(server.uri);
    admitted = Echo(*newcomer).ok();
    if (!admitted) std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_TRUE(admitted);
}

// Peers that announce big bodies and then stall can hold no more than the
// memory quota, however many connections they use: a body that does not
// fit is discarded and its call fails RESOURCE_EXHAUSTED naming the quota;
// the connection keeps serving, and once the stalled peer is gone the
// quota is back.
TEST(ConnectionLimits, BodiesStillArrivingStayWithinTheMemoryQuota) {
  auto quota_owner = std::make_shared<MemoryQuota>(4 << 20);
  MemoryQuota& quota = *quota_owner;
  ServerOptions options = Quiet();
  options.memory_quota = quota_owner;
  TestServer server(options);
  auto stalled = std::make_unique<RawPeer>(server.uri);
  ASSERT_TRUE(stalled->connected());
  ASSERT_TRUE(stalled->Handshake());
  ASSERT_TRUE(stalled->SendHeader(RequestHeader(3 << 20)));  // 3 MiB promised, 10 bytes sent
  std::array<uint8_t, 10> start_of_body{};
  ASSERT_TRUE(stalled->SendAll(start_of_body));
  ASSERT_TRUE(Eventually([&] { return quota.reserved() == (3u << 20); })) << quota.reserved();

  auto stub = StubFor(server.uri);
  EchoMessage request, reply;
  request.set_payload(std::string(2 << 20, 'x'));
  ClientContext refused_ctx;
  refused_ctx.set_timeout(kGenerous);
  const Status refused = stub->Echo(&refused_ctx, request, &reply);
  EXPECT_EQ(refused.code(), StatusCode::kResourceExhausted) << refused;
  EXPECT_NE(refused.message().find("memory quota"), absl::string_view::npos) << refused;
  EXPECT_TRUE(Echo(*stub).ok());  // small bodies need no reservation; same connection

  stalled.reset();  // its connection ends: the reservation goes back
  ASSERT_TRUE(Eventually([&] { return quota.reserved() == 0; })) << quota.reserved();
  ClientContext ctx;
  ctx.set_timeout(kGenerous);
  const Status admitted = stub->Echo(&ctx, request, &reply);
  EXPECT_TRUE(admitted.ok()) << admitted;
  EXPECT_EQ(reply.payload().size(), request.payload().size());
  EXPECT_EQ(quota.reserved(), 0u);
}

// A body the system has no memory for fails its call, not the process:
// with the address space capped (RLIMIT_AS) 256 MiB above what the process
// maps, a peer's 384 MiB request is read past and answered
// RESOURCE_EXHAUSTED, and the server goes on serving.
TEST(ConnectionLimits, ABodyTheSystemHasNoMemoryForFailsOnlyItsCall) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizers map terabytes of shadow memory, so an address-space cap cannot be set; "
                  "run in the release build";
#endif
  ServerOptions options = Quiet();
  options.limits.max_body_bytes = 1u << 30;
  options.memory_quota = std::make_shared<MemoryQuota>(uint64_t{2} << 30);
  TestServer server(options);
  auto stub = StubFor(server.uri);
  ASSERT_TRUE(Echo(*stub).ok());  // every thread and connection is up before the cap
  RawPeer peer(server.uri);
  ASSERT_TRUE(peer.connected());
  ASSERT_TRUE(peer.Handshake());

  size_t mapped_pages = 0;
  {
    std::FILE* statm = std::fopen("/proc/self/statm", "r");
    ASSERT_NE(statm, nullptr);
    ASSERT_EQ(std::fscanf(statm, "%zu", &mapped_pages), 1);
    std::fclose(statm);
  }
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_AS, &saved), 0);
  rlimit capped = saved;
  capped.rlim_cur = static_cast<rlim_t>(mapped_pages * static_cast<size_t>(::sysconf(_SC_PAGESIZE)) + (256u << 20));
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &capped), 0);

  const WireHeader header = RequestHeader(384u << 20);
  bool sent = peer.SendHeader(header);
  static const std::array<uint8_t, 1 << 16> kZeros{};
  for (uint64_t left = header.wire_body_len(); sent && left > 0;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, kZeros.size()));
    sent = peer.SendAll(std::span<const uint8_t>(kZeros.data(), n));
    left -= n;
  }
  std::string body;
  const std::optional<WireHeader> reply = peer.ReadFrame(kGenerous, &body);
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &saved), 0);
  ASSERT_TRUE(sent);
  ASSERT_TRUE(reply.has_value()) << "no answer: the server closed the connection or did not answer";
  EXPECT_EQ(static_cast<StatusCode>(reply->status_code), StatusCode::kResourceExhausted);
  EXPECT_NE(body.find("out of memory"), std::string::npos) << body;
  EXPECT_TRUE(Echo(*stub).ok());
}

// No thread to be had fails the call that needed one, not the process:
// with the address space capped (RLIMIT_AS) below what a thread's stack
// takes, a grpc:// channel's connect (which waits on a thread of its own)
// fails with a status naming the missing thread; once the cap is lifted,
// the same channel connects and calls.
TEST(ConnectionLimits, NoThreadToBeHadFailsTheCallNotTheProcess) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizers map terabytes of shadow memory, so an address-space cap cannot be set; "
                  "run in the release build";
#endif
  TestServer server(Quiet(), "grpc://127.0.0.1:0");
  ChannelOptions channel_options = QuietChannel();
  channel_options.initial_backoff = milliseconds(1);
  auto warm_up = StubFor(server.uri, channel_options);  // gRPC's own threads start here, before the cap
  ASSERT_TRUE(Echo(*warm_up).ok());
  auto stub = StubFor(server.uri, channel_options);
  // glibc keeps the stacks of threads that ended (up to 40 MiB) for new
  // ones; threads parked here take them, so the next thread needs new memory.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::vector<std::thread> stack_holders;
  for (int i = 0; i < 8; ++i) stack_holders.emplace_back([released] { released.wait(); });

  size_t mapped_pages = 0;
  {
    std::FILE* statm = std::fopen("/proc/self/statm", "r");
    ASSERT_NE(statm, nullptr);
    ASSERT_EQ(std::fscanf(statm, "%zu", &mapped_pages), 1);
    std::fclose(statm);
  }
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_AS, &saved), 0);
  rlimit capped = saved;
  // Room for small allocations, not for a thread's 8 MiB stack.
  capped.rlim_cur = static_cast<rlim_t>(mapped_pages * static_cast<size_t>(::sysconf(_SC_PAGESIZE)) + (2u << 20));
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &capped), 0);
  const Status refused = Echo(*stub);
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &saved), 0);
  release.set_value();
  for (auto& holder : stack_holders) holder.join();
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("no thread"), absl::string_view::npos) << refused;

  ASSERT_TRUE(Eventually([&] { return Echo(*stub).ok(); }));
}

// accept() out of descriptors (EMFILE) leaves the connection in the
// backlog and the listening socket readable: a server that re-armed at once
// would spin. It backs off instead, and accepts the waiting connections
// once descriptors are free again.
TEST(ConnectionLimits, AcceptOutOfDescriptorsBacksOffWithoutSpinningAndRecovers) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The sanitizers' own checks need descriptors (UBSan's vptr check opens a
  // pipe to probe memory): out of them, they report errors that are not.
  GTEST_SKIP() << "runs out of file descriptors, which the sanitizers' runtime needs; run in the release build";
#endif
  TestServer server(Quiet());
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  // Client sockets made first, so the clients need no descriptor later.
  constexpr int kClients = 24;
  std::vector<int> sockets;
  for (int i = 0; i < kClients; ++i) sockets.push_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int highest = 0;
  for (int fd = 0; fd < 65536 && fd < static_cast<int>(saved.rlim_cur); ++fd) {
    if (::fcntl(fd, F_GETFD) != -1) highest = fd;
  }
  // Fill the holes below the highest descriptor (the lowest free number is
  // always taken first), so the limit below leaves exactly 4 free.
  std::vector<int> fillers;
  for (;;) {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    fillers.push_back(fd);
    if (fd > highest) break;  // every number up to it is taken now
  }
  if (!fillers.empty()) highest = std::max(highest, fillers.back());
  // Room for a few accepted connections, not for all of them.
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(highest + 1 + 4);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &tight), 0);
  const int port = std::stoi(server.uri.substr(server.uri.rfind(':') + 1));
  sockaddr_in where{};
  where.sin_family = AF_INET;
  where.sin_port = htons(static_cast<uint16_t>(port));
  where.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int fd : sockets) {
    ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&where), sizeof where), 0) << std::strerror(errno);
  }
  auto cpu_seconds = [] {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  };
  const double cpu_before = cpu_seconds();
  std::this_thread::sleep_for(milliseconds(1'000));
  const double cpu_used = cpu_seconds() - cpu_before;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  for (int fd : fillers) ::close(fd);
  // A spinning accept loop burns a whole core for that second.
  EXPECT_LT(cpu_used, 0.5) << "the process used " << cpu_used << " s of CPU in 1 s while out of descriptors";

  // Descriptors are back: every waiting client is accepted and answered.
  std::array<uint8_t, kPrefaceSize> preface{};
  Preface mine;
  EncodePreface(mine, std::span<uint8_t, kPrefaceSize>(preface));
  for (int fd : sockets) {
    ASSERT_EQ(::send(fd, preface.data(), preface.size(), MSG_NOSIGNAL), static_cast<ssize_t>(preface.size()));
  }
  for (int fd : sockets) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, static_cast<int>(kGenerous.count())), 1) << "a client waiting in the backlog got no answer";
    std::array<uint8_t, kPrefaceSize> theirs{};
    EXPECT_EQ(::recv(fd, theirs.data(), theirs.size(), MSG_WAITALL), static_cast<ssize_t>(theirs.size()));
    EXPECT_TRUE(DecodePreface(std::span<const uint8_t, kPrefaceSize>(theirs), PrefaceRole::kServer).ok());
    ::close(fd);
  }
}

// Deadlines of "infinity", whichever way a user spells it, mean none.
TEST(ConnectionLimits, HugeTimeoutsAndDeadlinesSaturateInsteadOfExpiring) {
  TestServer server(Quiet());
  auto stub = StubFor(server.uri);
  EchoMessage request, reply;
  {
    ClientContext ctx;
    ctx.set_timeout(std::chrono::nanoseconds::max());
    EXPECT_EQ(ctx.deadline_nanos(), 0);
    EXPECT_TRUE(stub->Echo(&ctx, request, &reply).ok());
  }
  {
    ClientContext ctx;
    ctx.set_timeout(std::chrono::hours(24 * 365 * 200));
    EXPECT_TRUE(stub->Echo(&ctx, request, &reply).ok());
  }
  {
    ClientContext ctx;
    ctx.set_deadline(std::chrono::steady_clock::time_point::max());
    EXPECT_EQ(ctx.deadline_nanos(), 0);
    EXPECT_TRUE(stub->Echo(&ctx, request, &reply).ok());
  }
  {
    ClientContext ctx;
    ctx.set_timeout(std::chrono::nanoseconds::min());  // long past: expired, not wrapped into the future
    EXPECT_EQ(stub->Echo(&ctx, request, &reply).code(), StatusCode::kDeadlineExceeded);
  }
}

}  // namespace
}  // namespace zcrpc
