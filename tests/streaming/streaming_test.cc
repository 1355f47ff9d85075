// Streams end to end, client and server in this process, on every transport
// (loopback, tcp, shm): the three kinds with 0, 1 and 10,000 messages,
// order, sizes up to 4 MiB, half-close from each side, trailing metadata,
// cancel at each point, a deadline mid-stream, flow control, a message over
// the receiver's limit, attachments, and 1,000 streams on one connection.
// The service is grpc.testing.TestService through the generated stubs.
#include <atomic>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "examples/interop/grpc_test_service.h"
#include "zcrpc/base/copy_stats.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using grpc::testing::StreamingInputCallRequest;
using grpc::testing::StreamingInputCallResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;
using grpc::testing::TestService;

StreamingOutputCallRequest AskFor(std::vector<int> sizes) {
  StreamingOutputCallRequest request;
  for (int size : sizes) request.add_response_parameters()->set_size(size);
  return request;
}

// Sizes 0, 1, 2, ... (mod 251): a message's size says where it belongs.
std::vector<int> Sequence(int n) {
  std::vector<int> sizes;
  for (int i = 0; i < n; ++i) sizes.push_back(i % 251);
  return sizes;
}

// Stream methods the TestService lacks: the server tries writes of 1 KiB
// without waiting until the client's window is full, and reports how many
// went in trailing metadata ("written"); a bidirectional echo that sends
// each message's attachments back; and a handler that sets its own
// receive window and reads only when the test lets it.
class WindowProbe final : public Service {
 public:
  static constexpr MethodDescriptor kFillMethod{"/zcrpc.test.WindowProbe/Fill", MethodKind::kServerStreaming};
  static constexpr MethodDescriptor kBounceMethod{"/zcrpc.test.WindowProbe/Bounce", MethodKind::kBidiStreaming};
  static constexpr MethodDescriptor kHoldMethod{"/zcrpc.test.WindowProbe/Hold", MethodKind::kBidiStreaming};

  WindowProbe() : Service("zcrpc.test.WindowProbe") {
    AddServerStreamingMethod(kFillMethod, this, &WindowProbe::Fill);
    AddBidiStreamingMethod(kBounceMethod, this, &WindowProbe::Bounce);
    AddBidiStreamingMethod(kHoldMethod, this, &WindowProbe::Hold);
  }

  // Sets the window the client's "window" metadata names, says "ready",
  // waits for `read_first`, reads the number of messages the client's
  // "drain" metadata names, says "drained", waits for `read_rest`, then
  // reads to the end.
  std::latch read_first{1};
  std::latch read_rest{1};
  Status Hold(ServerContext* ctx, ServerReaderWriter<StreamingOutputCallResponse, StreamingOutputCallRequest>* stream) {
    uint64_t window = 0;
    int drain = 0;
    for (const auto& [key, value] : ctx->client_metadata()) {
      if (key == "window") window = std::stoull(value);
      if (key == "drain") drain = std::stoi(value);
    }
    ctx->set_stream_window_bytes(window);
    StreamingOutputCallResponse said;
    said.mutable_payload()->set_body("ready");
    if (!stream->Write(said)) return absl::CancelledError("the client went away");
    read_first.wait();
    StreamingOutputCallRequest request;
    for (int i = 0; i < drain; ++i) {
      if (!stream->Read(&request)) return absl::InternalError(absl::StrCat("the stream ended after ", i, " messages"));
    }
    said.mutable_payload()->set_body("drained");
    if (!stream->Write(said)) return absl::CancelledError("the client went away");
    read_rest.wait();
    while (stream->Read(&request)) {
    }
    return Status();
  }

  Status Fill(ServerContext* ctx, const StreamingOutputCallRequest*, ServerWriter<StreamingOutputCallResponse>* writer) {
    StreamingOutputCallResponse response;
    response.mutable_payload()->set_body(std::string(1024, 'x'));
    int written = 0;
    while (writer->TryWrite(response) == WriteStatus::kWritten) ++written;
    (void)ctx->AddTrailingMetadata("written", std::to_string(written));
    return Status();
  }

  Status Bounce(ServerContext*, ServerReaderWriter<StreamingOutputCallResponse, StreamingOutputCallRequest>* stream) {
    StreamingOutputCallRequest request;
    std::vector<Buffer> attachments;
    while (stream->Read(&request, &attachments)) {
      StreamingOutputCallResponse response;
      response.mutable_payload()->set_body(request.payload().body());
      if (!stream->Write(response, std::move(attachments))) break;
    }
    return Status();
  }
};

class Streaming : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.limits.max_body_bytes = 8u << 20;
    server_ = std::make_unique<Server>(options);
    ASSERT_TRUE(server_->RegisterService(&service_).ok());
    ASSERT_TRUE(server_->RegisterService(&probe_).ok());
    auto uri = server_->AddListener(GetParam());
    ASSERT_TRUE(uri.ok()) << uri.status();
    auto channel = Channel::Create(*uri);
    ASSERT_TRUE(channel.ok()) << channel.status();
    channel_ = *channel;
    stub_ = TestService::NewStub(channel_);
  }
  void TearDown() override {
    stub_.reset();
    channel_.reset();
    if (server_) server_->Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  }

  testing::GrpcTestService service_;
  WindowProbe probe_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<Channel> channel_;
  std::unique_ptr<TestService::Stub> stub_;
};

TEST_P(Streaming, ServerStreamsZeroOneAndTenThousandMessagesInOrder) {
  for (int n : {0, 1, 10'000}) {
    ClientContext ctx;
    auto reader = stub_->StreamingOutputCall(&ctx, AskFor(Sequence(n)));
    StreamingOutputCallResponse response;
    int got = 0;
    while (reader->Read(&response)) {
      ASSERT_EQ(response.payload().body().size(), static_cast<size_t>(got % 251)) << "message " << got;
      ++got;
    }
    EXPECT_EQ(got, n);
    EXPECT_TRUE(reader->Finish().ok());
  }
}

TEST_P(Streaming, ClientStreamsZeroOneAndTenThousandMessages) {
  for (int n : {0, 1, 10'000}) {
    ClientContext ctx;
    StreamingInputCallResponse response;
    auto writer = stub_->StreamingInputCall(&ctx, &response);
    StreamingInputCallRequest request;
    int64_t total = 0;
    for (int i = 0; i < n; ++i) {
      request.mutable_payload()->set_body(std::string(static_cast<size_t>(i % 100), 'a'));
      total += i % 100;
      ASSERT_TRUE(writer->Write(request)) << "message " << i;
    }
    ASSERT_TRUE(writer->WritesDone());
    Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(response.aggregated_payload_size(), total);
  }
}

TEST_P(Streaming, BidiPingPongZeroOneAndTenThousandMessages) {
  for (int n : {0, 1, 10'000}) {
    ClientContext ctx;
    auto stream = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallResponse response;
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(stream->Write(AskFor({i % 251}))) << "message " << i;
      ASSERT_TRUE(stream->Read(&response)) << "message " << i;
      ASSERT_EQ(response.payload().body().size(), static_cast<size_t>(i % 251));
    }
    ASSERT_TRUE(stream->WritesDone());
    EXPECT_FALSE(stream->Read(&response));
    Status status = stream->Finish();
    EXPECT_TRUE(status.ok()) << status;
  }
}

TEST_P(Streaming, HalfDuplexAnswersOnlyAfterTheClientClosesItsWrites) {
  ClientContext ctx;
  auto stream = stub_->HalfDuplexCall(&ctx);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(stream->Write(AskFor({i, i + 1})));
  ASSERT_TRUE(stream->WritesDone());
  StreamingOutputCallResponse response;
  std::vector<size_t> sizes;
  while (stream->Read(&response)) sizes.push_back(response.payload().body().size());
  EXPECT_EQ(sizes, (std::vector<size_t>{0, 1, 1, 2, 2, 3, 3, 4, 4, 5}));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_P(Streaming, MessagesUpToFourMebibytes) {
  ClientContext ctx;
  auto reader = stub_->StreamingOutputCall(&ctx, AskFor({4 << 20, 1, 4 << 20, 3 << 20}));
  StreamingOutputCallResponse response;
  std::vector<size_t> sizes;
  while (reader->Read(&response)) sizes.push_back(response.payload().body().size());
  EXPECT_EQ(sizes, (std::vector<size_t>{4u << 20, 1, 4u << 20, 3u << 20}));
  EXPECT_TRUE(reader->Finish().ok());

  // And the other way, larger than the window each.
  ClientContext ctx2;
  StreamingInputCallResponse total;
  auto writer = stub_->StreamingInputCall(&ctx2, &total);
  StreamingInputCallRequest request;
  request.mutable_payload()->set_body(std::string(4 << 20, 'z'));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(writer->Write(request));
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_EQ(total.aggregated_payload_size(), 3 * (4 << 20));
}

TEST_P(Streaming, TheServersStatusAndTrailingMetadataReachTheClient) {
  ClientContext ctx;
  ASSERT_TRUE(ctx.AddMetadata("x-grpc-test-echo-trailing-bin", std::string("\x00\x01\xff", 3)).ok());
  StreamingOutputCallRequest request = AskFor({10, 20});
  request.mutable_response_status()->set_code(static_cast<int>(StatusCode::kAborted));
  request.mutable_response_status()->set_message("as asked");
  auto reader = stub_->StreamingOutputCall(&ctx, request);
  StreamingOutputCallResponse response;
  int got = 0;
  while (reader->Read(&response)) ++got;
  EXPECT_EQ(got, 2);  // the messages before the status still arrive
  Status status = reader->Finish();
  EXPECT_EQ(status.code(), StatusCode::kAborted);
  EXPECT_EQ(status.message(), "as asked");
  ASSERT_EQ(ctx.server_metadata().size(), 1u);
  EXPECT_EQ(ctx.server_metadata()[0].second, std::string("\x00\x01\xff", 3));
}

TEST_P(Streaming, InitialMetadataComesBeforeTheFirstMessageAndIsNotTrailing) {
  ClientContext ctx;
  ASSERT_TRUE(ctx.AddMetadata("x-grpc-test-echo-initial", "first").ok());
  auto reader = stub_->StreamingOutputCall(&ctx, AskFor({1, 2}));
  StreamingOutputCallResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_EQ(ctx.server_initial_metadata().size(), 1u);
  EXPECT_EQ(ctx.server_initial_metadata()[0], (std::pair<std::string, std::string>("x-grpc-test-echo-initial", "first")));
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(ctx.server_metadata().empty());

  ClientContext unary;  // and with a unary reply
  ASSERT_TRUE(unary.AddMetadata("x-grpc-test-echo-initial", "only").ok());
  grpc::testing::SimpleRequest request;
  grpc::testing::SimpleResponse reply;
  ASSERT_TRUE(stub_->UnaryCall(&unary, request, &reply).ok());
  ASSERT_EQ(unary.server_initial_metadata().size(), 1u);
  EXPECT_EQ(unary.server_initial_metadata()[0].second, "only");
}

TEST_P(Streaming, AServerThatEndsEarlyEndsTheStreamWhileTheClientStillWrites) {
  ClientContext ctx;
  auto stream = stub_->FullDuplexCall(&ctx);
  StreamingOutputCallRequest stop;
  stop.mutable_response_status()->set_code(static_cast<int>(StatusCode::kFailedPrecondition));
  ASSERT_TRUE(stream->Write(stop));
  // The client keeps writing; once the status is in, writes fail.
  StreamingOutputCallRequest more = AskFor({});
  for (int i = 0; i < 100'000 && stream->Write(more); ++i) {
  }
  EXPECT_FALSE(stream->Write(more));
  EXPECT_EQ(stream->Finish().code(), StatusCode::kFailedPrecondition);
}

TEST_P(Streaming, CancelBeforeTheFirstMessage) {
  ClientContext ctx;
  auto stream = stub_->FullDuplexCall(&ctx);
  ctx.TryCancel();
  StreamingOutputCallResponse response;
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_FALSE(stream->Write(AskFor({1})));
  EXPECT_EQ(stream->Finish().code(), StatusCode::kCancelled);
}

TEST_P(Streaming, CancelAfterTheFirstResponse) {
  ClientContext ctx;
  auto stream = stub_->FullDuplexCall(&ctx);
  ASSERT_TRUE(stream->Write(AskFor({7})));
  StreamingOutputCallResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ctx.TryCancel();
  EXPECT_FALSE(stream->Write(AskFor({1})));
  EXPECT_EQ(stream->Finish().code(), StatusCode::kCancelled);
  // The connection carries on.
  ClientContext again;
  auto next = stub_->StreamingOutputCall(&again, AskFor({1, 2}));
  int got = 0;
  while (next->Read(&response)) ++got;
  EXPECT_EQ(got, 2);
  EXPECT_TRUE(next->Finish().ok());
}

TEST_P(Streaming, DestroyingAStreamUnfinishedCancelsItAtTheServer) {
  for (int i = 0; i < 20; ++i) {
    ClientContext ctx;
    auto stream = stub_->FullDuplexCall(&ctx);
    ASSERT_TRUE(stream->Write(AskFor({1})));
  }
  // Every server handler saw its call cancelled and returned.
  for (int i = 0; i < 500 && server_->calls_in_flight() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server_->calls_in_flight(), 0u);
}

TEST_P(Streaming, TheDeadlineEndsAStreamMidway) {
  ClientContext ctx;
  ctx.set_timeout(std::chrono::milliseconds(300));
  StreamingOutputCallRequest request;
  for (int i = 0; i < 100; ++i) {
    auto* params = request.add_response_parameters();
    params->set_size(10);
    params->set_interval_us(50'000);
  }
  auto reader = stub_->StreamingOutputCall(&ctx, request);
  StreamingOutputCallResponse response;
  int got = 0;
  while (reader->Read(&response)) ++got;
  EXPECT_GT(got, 0);
  EXPECT_LT(got, 100);
  EXPECT_EQ(reader->Finish().code(), StatusCode::kDeadlineExceeded);
}

TEST_P(Streaming, AWriterStopsAtTheReadersWindow) {
  ClientContext ctx;
  ctx.set_stream_window_bytes(64 << 10);  // the smallest window
  auto reader = OpenServerStream(*channel_, WindowProbe::kFillMethod, &ctx, StreamingOutputCallRequest());
  ClientReader<StreamingOutputCallResponse> fill(std::move(reader));
  // Read nothing: the server's writes stop once 64 KiB are in flight.
  Status status = fill.Finish();
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(ctx.server_metadata().size(), 1u);
  const int written = std::stoi(ctx.server_metadata()[0].second);
  // Each 1 KiB message costs a page of credit (kStreamMessageMinCredit).
  const int per_message = static_cast<int>(kStreamMessageMinCredit);
  EXPECT_GE(written, (64 << 10) / per_message);
  EXPECT_LE(written, (64 << 10) / per_message + 1);
}

// 1 KiB messages, each a page of credit (kStreamMessageMinCredit), until
// the window is full.
int WritesUntilTheWindowIsFull(ClientReaderWriter<StreamingOutputCallRequest, StreamingOutputCallResponse>& stream) {
  StreamingOutputCallRequest request;
  request.mutable_payload()->set_body(std::string(1024, 'x'));
  int written = 0;
  while (stream.TryWrite(request) == WriteStatus::kWritten) ++written;
  return written;
}

constexpr int kPagesPerMiB = (1 << 20) / static_cast<int>(kStreamMessageMinCredit);

TEST_P(Streaming, AHandlerWidensItsOwnWindow) {
  ClientContext ctx;
  ASSERT_TRUE(ctx.AddMetadata("window", std::to_string(4u << 20)).ok());  // the server's default: 1 MiB
  ClientReaderWriter<StreamingOutputCallRequest, StreamingOutputCallResponse> stream(
      OpenBidiStream(*channel_, WindowProbe::kHoldMethod, &ctx));
  StreamingOutputCallResponse said;
  ASSERT_TRUE(stream.Read(&said));  // the new window's credit came before it
  ASSERT_EQ(said.payload().body(), "ready");
  EXPECT_EQ(WritesUntilTheWindowIsFull(stream), 4 * kPagesPerMiB);
  probe_.read_first.count_down();
  ASSERT_TRUE(stream.Read(&said));
  probe_.read_rest.count_down();
  ASSERT_TRUE(stream.WritesDone());
  EXPECT_TRUE(stream.Finish().ok());
}

TEST_P(Streaming, AHandlerNarrowsItsOwnWindowAsTheClientUsesItsCredit) {
  // The client holds the 1 MiB default already; 64 KiB is asked for.
  ClientContext ctx;
  ASSERT_TRUE(ctx.AddMetadata("window", std::to_string(64u << 10)).ok());
  ASSERT_TRUE(ctx.AddMetadata("drain", std::to_string(kPagesPerMiB)).ok());
  ClientReaderWriter<StreamingOutputCallRequest, StreamingOutputCallResponse> stream(
      OpenBidiStream(*channel_, WindowProbe::kHoldMethod, &ctx));
  StreamingOutputCallResponse said;
  ASSERT_TRUE(stream.Read(&said));
  ASSERT_EQ(said.payload().body(), "ready");
  EXPECT_EQ(WritesUntilTheWindowIsFull(stream), kPagesPerMiB);  // granted before the change
  probe_.read_first.count_down();
  ASSERT_TRUE(stream.Read(&said));  // the server read the whole MiB; its credit came first
  ASSERT_EQ(said.payload().body(), "drained");
  EXPECT_EQ(WritesUntilTheWindowIsFull(stream), (64 << 10) / static_cast<int>(kStreamMessageMinCredit));
  probe_.read_rest.count_down();
  ASSERT_TRUE(stream.WritesDone());
  EXPECT_TRUE(stream.Finish().ok());
}

TEST_P(Streaming, AMessageOverTheReceiversLimitEndsOnlyThatStream) {
  ClientContext ctx;
  StreamingInputCallResponse response;
  auto writer = stub_->StreamingInputCall(&ctx, &response);
  StreamingInputCallRequest request;
  request.mutable_payload()->set_body(std::string(9 << 20, 'x'));  // the server takes 8 MiB
  writer->Write(request);  // may go out before the server refuses it
  Status status = writer->Finish();
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted) << status;
  // Other streams on the same connection carry on.
  ClientContext again;
  auto next = stub_->StreamingOutputCall(&again, AskFor({3}));
  StreamingOutputCallResponse out;
  EXPECT_TRUE(next->Read(&out));
  EXPECT_TRUE(next->Finish().ok());
}

TEST_P(Streaming, AttachmentsTravelWithStreamMessages) {
  ClientContext ctx;
  ClientReaderWriter<StreamingOutputCallRequest, StreamingOutputCallResponse> stream(
      OpenBidiStream(*channel_, WindowProbe::kBounceMethod, &ctx));
  for (int i = 0; i < 10; ++i) {
    Buffer attachment = channel_->AllocateBuffer(256 << 10);
    for (size_t b = 0; b < attachment.size(); b += 4096) attachment.data()[b] = static_cast<uint8_t>(i + b / 4096);
    StreamingOutputCallRequest request;
    request.mutable_payload()->set_body(absl::StrCat("m", i));
    std::vector<Buffer> attachments;
    attachments.push_back(std::move(attachment));
    const uint64_t copied_before = CopyStats::TotalBytesCopied();
    ASSERT_TRUE(stream.Write(request, std::move(attachments)));
    StreamingOutputCallResponse response;
    std::vector<Buffer> back;
    ASSERT_TRUE(stream.Read(&response, &back));
    EXPECT_EQ(CopyStats::TotalBytesCopied() - copied_before, 0u) << "no framework copy of an attachment";
    EXPECT_EQ(response.payload().body(), absl::StrCat("m", i));
    ASSERT_EQ(back.size(), 1u);
    ASSERT_EQ(back[0].size(), 256u << 10);
    for (size_t b = 0; b < back[0].size(); b += 4096) {
      ASSERT_EQ(back[0].data()[b], static_cast<uint8_t>(i + b / 4096));
    }
  }
  ASSERT_TRUE(stream.WritesDone());
  EXPECT_TRUE(stream.Finish().ok());
}

TEST_P(Streaming, AThousandStreamsOnOneConnectionStayApart) {
  constexpr int kStreams = 1000;
  std::vector<std::unique_ptr<ClientContext>> contexts;
  std::vector<std::unique_ptr<ClientReaderWriter<StreamingOutputCallRequest, StreamingOutputCallResponse>>> streams;
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(std::make_unique<ClientContext>());
    streams.push_back(stub_->FullDuplexCall(contexts.back().get()));
  }
  // Interleaved: every stream gets its first request before any is read,
  // then two rounds, each stream's answers sized by its own number.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kStreams; ++i) ASSERT_TRUE(streams[i]->Write(AskFor({i % 300 + round})));
    for (int i = kStreams; i-- > 0;) {
      StreamingOutputCallResponse response;
      ASSERT_TRUE(streams[i]->Read(&response)) << "stream " << i;
      ASSERT_EQ(response.payload().body().size(), static_cast<size_t>(i % 300 + round)) << "stream " << i;
    }
  }
  for (auto& stream : streams) {
    ASSERT_TRUE(stream->WritesDone());
    EXPECT_TRUE(stream->Finish().ok());
  }
}

TEST_P(Streaming, AUnaryMethodOpenedAsAStreamIsUnimplemented) {
  ClientContext ctx;
  static constexpr MethodDescriptor kUnaryAsStream{"/grpc.testing.TestService/UnaryCall",
                                                   MethodKind::kServerStreaming};
  ClientReader<StreamingOutputCallResponse> reader(
      OpenServerStream(*channel_, kUnaryAsStream, &ctx, StreamingOutputCallRequest()));
  StreamingOutputCallResponse response;
  EXPECT_FALSE(reader.Read(&response));
  Status status = reader.Finish();
  EXPECT_EQ(status.code(), StatusCode::kUnimplemented) << status;
  EXPECT_NE(status.message().find("unary"), std::string::npos) << status;
}

// Frames a reader holds live in the writer's shm slab: one stream may hold
// an eighth of it, whatever window it asked for.
TEST(StreamingOnShm, AStreamsWindowIsAnEighthOfTheSlabAtMost) {
  WindowProbe probe;
  Server server;
  ASSERT_TRUE(server.RegisterService(&probe).ok());
  auto uri = server.AddListener("shm://streaming-slab-*?slab_mb=4");
  ASSERT_TRUE(uri.ok()) << uri.status();
  auto channel = Channel::Create(*uri);
  ASSERT_TRUE(channel.ok()) << channel.status();
  ClientContext ctx;
  ctx.set_stream_window_bytes(4u << 20);
  ClientReader<StreamingOutputCallResponse> fill(
      OpenServerStream(**channel, WindowProbe::kFillMethod, &ctx, StreamingOutputCallRequest()));
  Status status = fill.Finish();
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(ctx.server_metadata().size(), 1u);
  const int written = std::stoi(ctx.server_metadata()[0].second);
  const int eighth = (4 << 20) / 8 / static_cast<int>(kStreamMessageMinCredit);
  EXPECT_GE(written, eighth);
  EXPECT_LE(written, eighth + 1);
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5));
}

INSTANTIATE_TEST_SUITE_P(Transports, Streaming,
                         ::testing::Values("loopback://streaming-*", "tcp://127.0.0.1:0", "shm://streaming-*"),
                         [](const auto& info) { return info.param.substr(0, info.param.find(':')); });

}  // namespace
}  // namespace zcrpc
