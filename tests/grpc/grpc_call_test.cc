// zcrpc's generated stubs calling a stock gRPC C++ server
// (tests/grpc/stock_grpc_server.cc, its own process) through grpc://: all
// four kinds, payloads and order, metadata both ways (initial and trailing,
// a -bin key included), status codes with non-ASCII messages, the deadline,
// a cancel mid-stream, an unimplemented method, and a server that is not
// there.
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "grpc/testing/test.zcrpc.h"
#include "tests/e2e/server_process.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using grpc::testing::Empty;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using grpc::testing::StreamingInputCallRequest;
using grpc::testing::StreamingInputCallResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;
using grpc::testing::TestService;

class GrpcCall : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<testing::ServerProcess>(ZCRPC_STOCK_GRPC_SERVER, std::vector<std::string>{"0"});
    ASSERT_FALSE(server_->uri().empty()) << "the stock gRPC server did not start";
    auto channel = Channel::Create(server_->uri());
    ASSERT_TRUE(channel.ok()) << channel.status();
    channel_ = *channel;
    stub_ = TestService::NewStub(channel_);
  }

  std::string Find(const Metadata& md, std::string_view key) {
    for (const auto& [k, v] : md) {
      if (k == key) return v;
    }
    return "<missing>";
  }

  std::unique_ptr<testing::ServerProcess> server_;
  std::shared_ptr<Channel> channel_;
  std::unique_ptr<TestService::Stub> stub_;
};

TEST_F(GrpcCall, EmptyAndLargeUnary) {
  ClientContext empty_ctx;
  Empty empty;
  Status status = stub_->EmptyCall(&empty_ctx, Empty(), &empty);
  ASSERT_TRUE(status.ok()) << status;

  ClientContext ctx;
  SimpleRequest request;
  request.set_response_size(314159);
  request.mutable_payload()->set_body(std::string(271828, '\0'));
  SimpleResponse response;
  status = stub_->UnaryCall(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(response.payload().body().size(), 314159u);
}

TEST_F(GrpcCall, MetadataBothWaysInitialAndTrailingBinary) {
  ClientContext ctx;
  ASSERT_TRUE(ctx.AddMetadata("x-grpc-test-echo-initial", "test_initial_metadata_value").ok());
  ASSERT_TRUE(ctx.AddMetadata("x-grpc-test-echo-trailing-bin", std::string("\x0a\x0b\x0a\x0b\x0a\x0b", 6)).ok());
  SimpleRequest request;
  request.set_response_size(1);
  SimpleResponse response;
  Status status = stub_->UnaryCall(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(Find(ctx.server_initial_metadata(), "x-grpc-test-echo-initial"), "test_initial_metadata_value");
  EXPECT_EQ(Find(ctx.server_metadata(), "x-grpc-test-echo-initial"), "<missing>") << "initial is not trailing";
  EXPECT_EQ(Find(ctx.server_metadata(), "x-grpc-test-echo-trailing-bin"), std::string("\x0a\x0b\x0a\x0b\x0a\x0b", 6));
}

TEST_F(GrpcCall, StatusCodeAndSpecialMessage) {
  ClientContext ctx;
  SimpleRequest request;
  request.mutable_response_status()->set_code(2);
  request.mutable_response_status()->set_message("\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n");
  SimpleResponse response;
  Status status = stub_->UnaryCall(&ctx, request, &response);
  EXPECT_EQ(status.code(), StatusCode::kUnknown);
  EXPECT_EQ(status.message(), request.response_status().message());
}

TEST_F(GrpcCall, ServerStreamingClientStreamingAndPingPong) {
  {
    ClientContext ctx;
    StreamingOutputCallRequest request;
    for (int size : {31415, 9, 2653, 58979}) request.add_response_parameters()->set_size(size);
    auto reader = stub_->StreamingOutputCall(&ctx, request);
    StreamingOutputCallResponse response;
    for (int size : {31415, 9, 2653, 58979}) {
      ASSERT_TRUE(reader->Read(&response));
      EXPECT_EQ(response.payload().body().size(), static_cast<size_t>(size));
    }
    EXPECT_FALSE(reader->Read(&response));
    Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status;
  }
  {
    ClientContext ctx;
    StreamingInputCallResponse response;
    auto writer = stub_->StreamingInputCall(&ctx, &response);
    for (int size : {27182, 8, 1828, 45904}) {
      StreamingInputCallRequest request;
      request.mutable_payload()->set_body(std::string(static_cast<size_t>(size), '\0'));
      ASSERT_TRUE(writer->Write(request));
    }
    ASSERT_TRUE(writer->WritesDone());
    Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(response.aggregated_payload_size(), 74922);
  }
  {
    ClientContext ctx;
    auto stream = stub_->FullDuplexCall(&ctx);
    for (int size : {31415, 9, 2653, 58979}) {
      StreamingOutputCallRequest request;
      request.add_response_parameters()->set_size(size);
      ASSERT_TRUE(stream->Write(request));
      StreamingOutputCallResponse response;
      ASSERT_TRUE(stream->Read(&response));
      EXPECT_EQ(response.payload().body().size(), static_cast<size_t>(size));
    }
    ASSERT_TRUE(stream->WritesDone());
    StreamingOutputCallResponse response;
    EXPECT_FALSE(stream->Read(&response));
    Status status = stream->Finish();
    EXPECT_TRUE(status.ok()) << status;
  }
}

TEST_F(GrpcCall, TenThousandMessagesEachWay) {
  ClientContext ctx;
  auto stream = stub_->FullDuplexCall(&ctx);
  std::thread writer([&] {
    for (int i = 0; i < 10'000; ++i) {
      StreamingOutputCallRequest request;
      request.add_response_parameters()->set_size(i % 251);
      if (!stream->Write(request)) return;
    }
    stream->WritesDone();
  });
  StreamingOutputCallResponse response;
  int got = 0, first_wrong = -1;
  size_t wrong_size = 0;
  while (stream->Read(&response)) {
    if (first_wrong < 0 && response.payload().body().size() != static_cast<size_t>(got % 251)) {
      first_wrong = got;
      wrong_size = response.payload().body().size();
    }
    ++got;
  }
  writer.join();
  EXPECT_EQ(first_wrong, -1) << "message " << first_wrong << " had " << wrong_size << " bytes";
  EXPECT_EQ(got, 10'000);
  EXPECT_TRUE(stream->Finish().ok());
}

// Calls that end on the server while the client still sends them frames:
// credit for the messages it reads, and writes the server will never read.
// Each such frame once could start a gRPC operation on a call gRPC had
// already freed (the interop run aborted on a call's refcount, 1 time in
// ~100 on a loaded machine); many short calls on four threads make that
// window likely.
TEST_F(GrpcCall, FramesForACallTheServerHasEndedAreDropped) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 150; ++i) {
        {
          ClientContext ctx;
          StreamingOutputCallRequest request;
          // More than the initial window, so reads wait for credit.
          const std::vector<size_t> sizes = {31415, 9, 2653, 58979};
          for (size_t size : sizes) request.add_response_parameters()->set_size(static_cast<int>(size));
          auto reader = stub_->StreamingOutputCall(&ctx, request);
          StreamingOutputCallResponse response;
          std::vector<size_t> got;
          while (reader->Read(&response)) got.push_back(response.payload().body().size());
          if (got != sizes || !reader->Finish().ok()) failures.fetch_add(1);
        }
        {
          ClientContext ctx;
          auto stream = stub_->FullDuplexCall(&ctx);
          StreamingOutputCallRequest ending;
          ending.mutable_response_status()->set_code(static_cast<int>(StatusCode::kAborted));
          ending.mutable_response_status()->set_message("ended early");
          stream->Write(ending);
          StreamingOutputCallRequest more;
          more.add_response_parameters()->set_size(8);
          for (int w = 0; w < 8 && stream->Write(more); ++w) {
          }
          stream->WritesDone();
          StreamingOutputCallResponse response;
          while (stream->Read(&response)) {
          }
          if (stream->Finish().code() != StatusCode::kAborted) failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(GrpcCall, TimeoutOnSleepingServer) {
  ClientContext ctx;
  ctx.set_timeout(std::chrono::milliseconds(100));
  auto stream = stub_->FullDuplexCall(&ctx);
  StreamingOutputCallRequest request;
  auto* params = request.add_response_parameters();
  params->set_size(1);
  params->set_interval_us(2'000'000);
  (void)stream->Write(request);
  StreamingOutputCallResponse response;
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_EQ(stream->Finish().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(GrpcCall, CancelAfterFirstResponse) {
  ClientContext ctx;
  auto stream = stub_->FullDuplexCall(&ctx);
  StreamingOutputCallRequest request;
  request.add_response_parameters()->set_size(31415);
  ASSERT_TRUE(stream->Write(request));
  StreamingOutputCallResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ctx.TryCancel();
  EXPECT_EQ(stream->Finish().code(), StatusCode::kCancelled);
}

TEST_F(GrpcCall, UnimplementedMethodAndService) {
  ClientContext ctx;
  Empty empty;
  Status status = stub_->UnimplementedCall(&ctx, Empty(), &empty);
  EXPECT_EQ(status.code(), StatusCode::kUnimplemented) << status;
  static constexpr MethodDescriptor kNoService{"/grpc.testing.UnimplementedService/UnimplementedCall",
                                               MethodKind::kUnary};
  ClientContext ctx2;
  status = channel_->CallUnary(kNoService, &ctx2, Empty(), &empty);
  EXPECT_EQ(status.code(), StatusCode::kUnimplemented) << status;
}

TEST_F(GrpcCall, AServerThatIsNotThereIsUnavailable) {
  const std::string uri = server_->uri();
  server_->Kill(SIGKILL);
  ChannelOptions options;
  options.connect_timeout = std::chrono::seconds(5);
  auto channel = Channel::Create(uri, options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto stub = TestService::NewStub(*channel);
  ClientContext ctx;
  Empty empty;
  Status status = stub->EmptyCall(&ctx, Empty(), &empty);
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status;
}

}  // namespace
}  // namespace zcrpc
