// A stream's idle timeout (docs/streaming.md, "Idle streams"), on every
// transport, on a fake clock both sides sweep with: activity either way
// keeps a stream alive, silence ends it with DEADLINE_EXCEEDED on both
// sides, whichever side set the timeout, and a deadline that passes first
// still reads as the deadline.
#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "examples/interop/grpc_test_service.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;
using grpc::testing::TestService;
using std::chrono::milliseconds;
using Duplex = ClientReaderWriter<StreamingOutputCallRequest, StreamingOutputCallResponse>;

template <typename F>
bool Eventually(F done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

class StreamIdle : public ::testing::TestWithParam<std::string> {
 protected:
  void Start(milliseconds server_idle_timeout) {
    ServerOptions server_options;
    server_options.sweeper = &sweeper_;
    server_options.stream_idle_timeout = server_idle_timeout;
    server_ = std::make_unique<Server>(server_options);
    ASSERT_TRUE(server_->RegisterService(&service_).ok());
    auto uri = server_->AddListener(GetParam());
    ASSERT_TRUE(uri.ok()) << uri.status();
    ChannelOptions channel_options;
    channel_options.sweeper = &sweeper_;
    auto channel = Channel::Create(*uri, channel_options);
    ASSERT_TRUE(channel.ok()) << channel.status();
    channel_ = *channel;
    stub_ = TestService::NewStub(channel_);
  }
  void TearDown() override {
    stub_.reset();
    channel_.reset();
    if (server_) server_->Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  }

  // One request, one 5-byte answer: activity both ways.
  static void RoundTrip(Duplex& stream) {
    StreamingOutputCallRequest request;
    request.add_response_parameters()->set_size(5);
    ASSERT_TRUE(stream.Write(request));
    StreamingOutputCallResponse response;
    ASSERT_TRUE(stream.Read(&response));
    ASSERT_EQ(response.payload().body().size(), 5u);
  }
  void Pass(milliseconds time) {
    clock_.Advance(time);
    sweeper_.SweepOnce();
  }

  FakeClock clock_;
  DeadlineSweeper sweeper_{DeadlineSweeper::kDefaultTick, &clock_, /*run_thread=*/false};
  testing::GrpcTestService service_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<Channel> channel_;
  std::unique_ptr<TestService::Stub> stub_;
};

TEST_P(StreamIdle, TheClientsTimeoutEndsAQuietStreamNotABusyOne) {
  Start(milliseconds(0));
  ClientContext ctx;
  ctx.set_stream_idle_timeout(milliseconds(100));
  auto stream = stub_->FullDuplexCall(&ctx);
  RoundTrip(*stream);
  // 180 ms in all, but never 100 ms without a frame.
  for (int i = 0; i < 3; ++i) {
    Pass(milliseconds(60));
    RoundTrip(*stream);
  }
  Pass(milliseconds(101));
  StreamingOutputCallResponse response;
  EXPECT_FALSE(stream->Read(&response));
  const Status status = stream->Finish();
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status;
  EXPECT_NE(status.message().find("idle"), std::string::npos) << status;
  // The server was told (a cancel) and let the call go.
  EXPECT_TRUE(Eventually([&] { return server_->calls_in_flight() == 0; }));
}

TEST_P(StreamIdle, TheServersTimeoutEndsTheStreamAndTellsTheClient) {
  Start(milliseconds(100));
  ClientContext ctx;
  auto stream = stub_->FullDuplexCall(&ctx);
  RoundTrip(*stream);
  Pass(milliseconds(60));
  ASSERT_EQ(server_->calls_in_flight(), 1u);
  Pass(milliseconds(60));
  StreamingOutputCallResponse response;
  EXPECT_FALSE(stream->Read(&response));  // waits for the server's word
  const Status status = stream->Finish();
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status;
  EXPECT_NE(status.message().find("idle"), std::string::npos) << status;
  EXPECT_TRUE(Eventually([&] { return server_->calls_in_flight() == 0; }));
}

TEST_P(StreamIdle, ADeadlineThatComesFirstIsTheDeadline) {
  Start(milliseconds(0));
  ClientContext ctx;
  ctx.set_stream_idle_timeout(milliseconds(1000));
  ctx.set_deadline(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(clock_.NowNanos() + 50'000'000)));
  auto stream = stub_->FullDuplexCall(&ctx);
  RoundTrip(*stream);
  Pass(milliseconds(60));
  const Status status = stream->Finish();
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status;
  EXPECT_EQ(status.message(), "deadline exceeded") << status;
}

TEST_P(StreamIdle, ANegativeTimeoutTurnsTheChannelsOff) {
  Start(milliseconds(0));
  ChannelOptions options;
  options.sweeper = &sweeper_;
  options.stream_idle_timeout = milliseconds(100);
  auto channel = Channel::Create(channel_->target(), options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto stub = TestService::NewStub(*channel);
  ClientContext quiet, never;
  never.set_stream_idle_timeout(milliseconds(-1));
  auto times_out = stub->FullDuplexCall(&quiet);
  auto stays = stub->FullDuplexCall(&never);
  RoundTrip(*times_out);
  RoundTrip(*stays);
  Pass(milliseconds(150));
  EXPECT_EQ(times_out->Finish().code(), StatusCode::kDeadlineExceeded);
  RoundTrip(*stays);
  ASSERT_TRUE(stays->WritesDone());
  EXPECT_TRUE(stays->Finish().ok());
}

INSTANTIATE_TEST_SUITE_P(Transports, StreamIdle,
                         ::testing::Values("loopback://stream-idle-*", "tcp://127.0.0.1:0", "shm://stream-idle-*"),
                         [](const auto& info) { return info.param.substr(0, info.param.find(':')); });

}  // namespace
}  // namespace zcrpc
