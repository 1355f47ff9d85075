// Faults end to end: a unary call and a bidirectional stream go through a
// chaos proxy (chaos_proxy.h) that delays, splits into 1-byte writes,
// truncates, corrupts, stalls or resets the byte stream between a real
// client and a real server, and through loopback://'s frame-level fault
// hooks. Under each fault every call ends with the status the fault calls
// for before its deadline (or, for a stall, at it), nothing hangs, and the
// server goes on serving a client that connects to it directly.
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "examples/interop/grpc_test_service.h"
#include "tests/fault/chaos_proxy.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;
using grpc::testing::TestService;
using std::chrono::milliseconds;
using testing::ChaosFault;
using Kind = ChaosFault::Kind;
using Direction = ChaosFault::Direction;

constexpr milliseconds kGenerous{10'000};
// A stalled call can only end at its deadline: a short one.
constexpr milliseconds kStallDeadline{1'000};
// The preface is 64 bytes each way; the first frame's header follows it.
constexpr uint64_t kPreface = 64;

milliseconds Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
}

struct Case {
  ChaosFault fault;
  StatusCode expected;  // for the unary call and the stream alike
};

ChaosFault Fault(std::string name, Kind kind, Direction direction, uint64_t after_bytes = 0,
                 milliseconds delay = milliseconds(0)) {
  ChaosFault f;
  f.name = std::move(name);
  f.kind = kind;
  f.direction = direction;
  f.after_bytes = after_bytes;
  f.delay = delay;
  return f;
}

class ChaosTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.RegisterService(&service_).ok());
    auto bound = server_.AddListener("tcp://127.0.0.1:0");
    ASSERT_TRUE(bound.ok()) << bound.status();
    server_uri_ = *bound;
    proxy_ = std::make_unique<testing::ChaosProxy>(server_uri_, GetParam().fault);
    ASSERT_TRUE(proxy_->ok());
    auto channel = Channel::Create(proxy_->uri());
    ASSERT_TRUE(channel.ok()) << channel.status();
    stub_ = TestService::NewStub(*channel);
  }

  milliseconds Deadline() const {
    return GetParam().expected == StatusCode::kDeadlineExceeded ? kStallDeadline : kGenerous;
  }

  // The call ended as it should, in time.
  void ExpectEnded(const Status& status, std::chrono::steady_clock::time_point start) {
    EXPECT_EQ(status.code(), GetParam().expected) << status;
    if (GetParam().expected == StatusCode::kDeadlineExceeded) {
      EXPECT_GE(Since(start), kStallDeadline - milliseconds(50));
    }
    EXPECT_LT(Since(start), kGenerous - milliseconds(1'000)) << "the call waited for (nearly) its whole deadline";
  }

  // The server still serves a client that reaches it directly.
  void ExpectServerServes() {
    auto direct = Channel::Create(server_uri_);
    ASSERT_TRUE(direct.ok());
    auto stub = TestService::NewStub(*direct);
    SimpleRequest request;
    request.set_response_size(10);
    SimpleResponse response;
    ClientContext ctx;
    ctx.set_timeout(kGenerous);
    EXPECT_TRUE(stub->UnaryCall(&ctx, request, &response).ok());
  }

  testing::GrpcTestService service_;
  Server server_;
  std::string server_uri_;
  std::unique_ptr<testing::ChaosProxy> proxy_;
  std::unique_ptr<TestService::Stub> stub_;
};

TEST_P(ChaosTest, UnaryCall) {
  SimpleRequest request;
  request.mutable_payload()->set_body(std::string(20'000, 'q'));  // spills past the inline window
  request.set_response_size(100'000);
  SimpleResponse response;
  ClientContext ctx;
  ctx.set_timeout(Deadline());
  const auto start = std::chrono::steady_clock::now();
  const Status status = stub_->UnaryCall(&ctx, request, &response);
  ExpectEnded(status, start);
  if (status.ok()) {
    EXPECT_EQ(response.payload().body().size(), 100'000u);
  }
  ExpectServerServes();
}

TEST_P(ChaosTest, BidirectionalStream) {
  ClientContext ctx;
  ctx.set_timeout(Deadline());
  const auto start = std::chrono::steady_clock::now();
  auto stream = stub_->FullDuplexCall(&ctx);
  StreamingOutputCallRequest request;
  request.add_response_parameters()->set_size(3'000);
  request.mutable_payload()->set_body(std::string(1'000, 'p'));
  StreamingOutputCallResponse response;
  int answered = 0;
  for (int i = 0; i < 5; ++i) {
    if (!stream->Write(request) || !stream->Read(&response)) break;
    ++answered;
  }
  stream->WritesDone();
  while (stream->Read(&response)) {
  }
  const Status status = stream->Finish();
  ExpectEnded(status, start);
  if (status.ok()) {
    EXPECT_EQ(answered, 5);
  }
  ExpectServerServes();
}

INSTANTIATE_TEST_SUITE_P(
    Faults, ChaosTest,
    ::testing::Values(
        Case{Fault("none", Kind::kNone, Direction::kBoth), StatusCode::kOk},
        Case{Fault("delay_20ms", Kind::kDelay, Direction::kBoth, 0, milliseconds(20)), StatusCode::kOk},
        Case{Fault("one_byte_writes", Kind::kOneByteWrites, Direction::kBoth), StatusCode::kOk},
        // Cut inside the first request's header, and inside the first reply's.
        Case{Fault("truncate_request", Kind::kTruncate, Direction::kToServer, kPreface + 30), StatusCode::kUnavailable},
        Case{Fault("truncate_reply", Kind::kTruncate, Direction::kToClient, kPreface + 30), StatusCode::kUnavailable},
        // The first frame's magic, either way: the receiver closes the connection.
        Case{Fault("corrupt_request", Kind::kCorrupt, Direction::kToServer, kPreface), StatusCode::kUnavailable},
        Case{Fault("corrupt_reply", Kind::kCorrupt, Direction::kToClient, kPreface), StatusCode::kUnavailable},
        Case{Fault("stall_request", Kind::kStall, Direction::kToServer, kPreface + 10), StatusCode::kDeadlineExceeded},
        Case{Fault("stall_reply", Kind::kStall, Direction::kToClient, kPreface), StatusCode::kDeadlineExceeded},
        Case{Fault("reset", Kind::kReset, Direction::kBoth, kPreface + 100), StatusCode::kUnavailable}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.fault.name; });

// The same for frames: loopback://'s fault hooks on the client's end of a
// stream (zcrpc/transport/loopback/loopback_address.h).
struct HookCase {
  std::string name;
  std::string options;  // appended to the client's URI
  StatusCode expected;
};

class LoopbackHooks : public ::testing::TestWithParam<HookCase> {};

TEST_P(LoopbackHooks, BidirectionalStreamEndsWithTheRightStatus) {
  testing::GrpcTestService service;
  Server server;
  ASSERT_TRUE(server.RegisterService(&service).ok());
  auto bound = server.AddListener("loopback://chaos-*");
  ASSERT_TRUE(bound.ok()) << bound.status();
  auto channel = Channel::Create(*bound + "?" + GetParam().options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto stub = TestService::NewStub(*channel);

  const milliseconds deadline = GetParam().expected == StatusCode::kDeadlineExceeded ? kStallDeadline : kGenerous;
  ClientContext ctx;
  ctx.set_timeout(deadline);
  const auto start = std::chrono::steady_clock::now();
  auto stream = stub->FullDuplexCall(&ctx);
  StreamingOutputCallRequest request;
  request.add_response_parameters()->set_size(100);
  StreamingOutputCallResponse response;
  for (int i = 0; i < 10; ++i) {
    if (!stream->Write(request) || !stream->Read(&response)) break;
  }
  stream->WritesDone();
  while (stream->Read(&response)) {
  }
  const Status status = stream->Finish();
  EXPECT_EQ(status.code(), GetParam().expected) << status;
  EXPECT_LT(Since(start), kGenerous - milliseconds(1'000));

  // A clean client on the same server is served.
  auto clean = Channel::Create(*bound);
  ASSERT_TRUE(clean.ok());
  SimpleRequest unary;
  SimpleResponse reply;
  ClientContext clean_ctx;
  clean_ctx.set_timeout(kGenerous);
  EXPECT_TRUE(TestService::NewStub(*clean)->UnaryCall(&clean_ctx, unary, &reply).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Hooks, LoopbackHooks,
    ::testing::Values(HookCase{"delay", "delay_us=2000", StatusCode::kOk},
                      // Frame 3 to the client: the second message's answer.
                      HookCase{"close_at_frame", "close_at_frame=3", StatusCode::kUnavailable},
                      HookCase{"fail_send", "fail_send_at=3", StatusCode::kUnavailable},
                      // A lost frame: the stream waits for it until its deadline.
                      HookCase{"drop_every_2", "drop_every=2", StatusCode::kDeadlineExceeded},
                      HookCase{"stall", "stall=1", StatusCode::kDeadlineExceeded}),
    [](const ::testing::TestParamInfo<HookCase>& info) { return info.param.name; });

}  // namespace
}  // namespace zcrpc
