// The server's side of docs/wire.md's "What a receiver does with a
// malformed stream frame", frame by frame: a raw client on a loopback
// connection opens streams and breaks their rules on purpose. Each case
// checks the stream ends with the status the table gives, and whether the
// connection survives it.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>

#include <gtest/gtest.h>

#include "tests/streaming/grpc_callback_test_service.h"
#include "examples/interop/grpc_test_service.h"
#include "zcrpc/transport/registry.h"
#include "zcrpc/transport/transport.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using grpc::testing::StreamingOutputCallRequest;

// Collects what the server sends, and whether it closed the connection.
class Inbox final : public transport::ConnectionHandler {
 public:
  void OnFrame(Frame frame) override {
    std::lock_guard lock(mu_);
    frames_.push_back(std::move(frame));
    changed_.notify_all();
  }
  void OnClosed(const Status& reason) override {
    std::lock_guard lock(mu_);
    closed_ = true;
    reason_ = reason;
    changed_.notify_all();
  }
  // The server's final response to `call_id` (skipping messages and
  // credit), or nullopt if none came within 5 s.
  std::optional<Frame> ResponseTo(uint64_t call_id) {
    std::unique_lock lock(mu_);
    std::optional<Frame> found;
    changed_.wait_for(lock, std::chrono::seconds(5), [&] {
      for (auto it = frames_.begin(); it != frames_.end(); ++it) {
        if (it->header.type == FrameType::kResponse && it->header.call_id == call_id) {
          found = std::move(*it);
          frames_.erase(it);
          return true;
        }
      }
      return closed_;
    });
    return found;
  }
  bool WaitClosed() {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, std::chrono::seconds(5), [&] { return closed_; });
  }
  bool closed() {
    std::lock_guard lock(mu_);
    return closed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Frame> frames_;
  bool closed_ = false;
  Status reason_;
};

class StreamProtocol : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.limits.max_body_bytes = 1 << 20;
    options.stream_window_bytes = kInitialStreamWindow;  // no credit beyond the first 64 KiB until read
    server_ = std::make_unique<Server>(options);
    ASSERT_TRUE(server_->RegisterService(service()).ok());
    auto uri = server_->AddListener("loopback://stream-protocol-*");
    ASSERT_TRUE(uri.ok()) << uri.status();
    transport::Transport* loopback = *transport::Registry::Default().Find("loopback");
    auto connection = transport::ConnectAndWait(*loopback, *transport::Uri::Parse(*uri), {});
    ASSERT_TRUE(connection.ok()) << connection.status();
    connection_ = *std::move(connection);
    inbox_ = std::make_shared<Inbox>();
    connection_->Start(inbox_);
  }
  void TearDown() override {
    connection_.reset();
    server_->Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  }

  // Opens a stream of `path` as call `id` (its path sent along).
  void Open(uint64_t id, std::string_view path = "/grpc.testing.TestService/FullDuplexCall") {
    Frame open;
    open.header.type = FrameType::kRequest;
    open.header.flags = kFlagStream | kFlagMethodPath;
    open.header.call_id = id;
    open.metadata = BufferPool::Default().Allocate(EncodedMethodPathSize(path));
    EncodeMethodPath(path, open.metadata.span());
    ASSERT_TRUE(connection_->Send(std::move(open)).ok());
  }
  // A request message; with `answer_after_us`, it asks for one answer after
  // that long (the handler sleeps meanwhile, reading nothing).
  Status SendMessage(uint64_t id, size_t body_bytes, int answer_after_us = 0) {
    StreamingOutputCallRequest request;
    request.mutable_payload()->set_body(std::string(body_bytes, 'x'));
    if (answer_after_us > 0) request.add_response_parameters()->set_interval_us(answer_after_us);
    Frame message;
    message.header.type = FrameType::kStreamMessage;
    message.header.call_id = id;
    message.message = BufferPool::Default().Allocate(request.ByteSizeLong());
    request.SerializeWithCachedSizesToArray(message.message.data());
    return connection_->Send(std::move(message));
  }
  // A message no protobuf parses: field 3 says 127 bytes follow; none do.
  Status SendUnparsable(uint64_t id) {
    Frame message;
    message.header.type = FrameType::kStreamMessage;
    message.header.call_id = id;
    message.message = BufferPool::Default().Allocate(2);
    message.message.data()[0] = 0x1a;
    message.message.data()[1] = 0x7f;
    return connection_->Send(std::move(message));
  }
  Status SendBodiless(FrameType type, uint64_t id, uint64_t credit = 0) {
    Frame frame;
    frame.header.type = type;
    frame.header.call_id = id;
    frame.header.set_credit_bytes(credit);
    return connection_->Send(std::move(frame));
  }
  // The stream `id` ended with `code`, and the connection is still open.
  void ExpectStreamEnded(uint64_t id, StatusCode code) {
    std::optional<Frame> response = inbox_->ResponseTo(id);
    ASSERT_TRUE(response.has_value()) << "no response to stream " << id;
    EXPECT_EQ(static_cast<StatusCode>(response->header.status_code), code)
        << std::string(reinterpret_cast<const char*>(response->message.data()), response->message.size());
    EXPECT_FALSE(inbox_->closed());
    // And the connection serves another stream.
    const uint64_t next = id + 1000;
    Open(next);
    ASSERT_TRUE(SendBodiless(FrameType::kHalfClose, next).ok());
    std::optional<Frame> fine = inbox_->ResponseTo(next);
    ASSERT_TRUE(fine.has_value());
    EXPECT_EQ(fine->header.status_code, 0u);
  }

  virtual Service* service() { return &service_; }

  testing::GrpcTestService service_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<transport::Connection> connection_;
  std::shared_ptr<Inbox> inbox_;
};

// The same server with reactors (the generated CallbackService).
class CallbackStreamProtocol : public StreamProtocol {
 protected:
  Service* service() override { return &callback_service_; }
  testing::GrpcCallbackTestService callback_service_;
};

TEST_F(CallbackStreamProtocol, AServerStreamingRequestThatDoesNotParseEndsItsStreamOnly) {
  // The server waits for this request with no thread, and must end the
  // stream, not hang.
  Open(1, "/grpc.testing.TestService/StreamingOutputCall");
  ASSERT_TRUE(SendUnparsable(1).ok());
  ExpectStreamEnded(1, StatusCode::kInternal);
}

TEST_F(CallbackStreamProtocol, ABidiMessageThatDoesNotParseEndsItsStreamOnly) {
  Open(1);
  ASSERT_TRUE(SendUnparsable(1).ok());
  ExpectStreamEnded(1, StatusCode::kInternal);
}

TEST_F(StreamProtocol, AWriterThatIgnoresTheWindowLosesItsStreamOnly) {
  // A server streaming handler reads its one request and then sleeps for
  // a second, reading nothing more: the 64 KiB window is never given back.
  Open(1, "/grpc.testing.TestService/StreamingOutputCall");
  ASSERT_TRUE(SendMessage(1, 10, 1'000'000).ok());
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(SendMessage(1, 16 << 10).ok());  // 128 KiB: twice the window
  ExpectStreamEnded(1, StatusCode::kResourceExhausted);
}

TEST_F(StreamProtocol, AMessageAfterTheHalfCloseIsAProtocolError) {
  Open(1);
  ASSERT_TRUE(SendBodiless(FrameType::kHalfClose, 1).ok());
  ASSERT_TRUE(SendMessage(1, 10).ok());
  // The handler may have ended the stream OK at the half-close before the
  // message came (then the message is for a finished stream: dropped).
  std::optional<Frame> response = inbox_->ResponseTo(1);
  ASSERT_TRUE(response.has_value());
  EXPECT_TRUE(response->header.status_code == 0 ||
              response->header.status_code == static_cast<uint32_t>(StatusCode::kInternal));
  EXPECT_FALSE(inbox_->closed());
}

TEST_F(StreamProtocol, CreditPastTheLargestWindowIsAProtocolError) {
  Open(1);
  ASSERT_TRUE(SendBodiless(FrameType::kCredit, 1, kMaxStreamWindow).ok());
  ExpectStreamEnded(1, StatusCode::kInternal);
}

TEST_F(StreamProtocol, AMessageOverTheServersLimitIsRefusedBeforeItLeaves) {
  // The server announced 1 MiB in its preface: the sending side refuses a
  // larger message, naming the limit, so the server never has to discard
  // one (streaming_test shows the stream then ends RESOURCE_EXHAUSTED).
  Open(1);
  Status sent = SendMessage(1, 2 << 20);
  EXPECT_EQ(sent.code(), StatusCode::kResourceExhausted) << sent;
  ASSERT_TRUE(SendBodiless(FrameType::kHalfClose, 1).ok());
  std::optional<Frame> response = inbox_->ResponseTo(1);
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->header.status_code, 0u);
  EXPECT_FALSE(inbox_->closed());
}

TEST_F(StreamProtocol, FramesForAnUnknownStreamAreDropped) {
  ASSERT_TRUE(SendMessage(77, 10).ok());
  ASSERT_TRUE(SendBodiless(FrameType::kCredit, 78, 100).ok());
  ASSERT_TRUE(SendBodiless(FrameType::kHalfClose, 79).ok());
  Open(1);
  ASSERT_TRUE(SendBodiless(FrameType::kHalfClose, 1).ok());
  std::optional<Frame> response = inbox_->ResponseTo(1);
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->header.status_code, 0u);
  EXPECT_FALSE(inbox_->closed());
}

TEST_F(StreamProtocol, AUnaryRequestForAStreamingMethodIsUnimplemented) {
  Frame request;
  request.header.type = FrameType::kRequest;
  request.header.flags = kFlagMethodPath;
  request.header.call_id = 5;
  const std::string_view path = "/grpc.testing.TestService/StreamingOutputCall";
  request.metadata = BufferPool::Default().Allocate(EncodedMethodPathSize(path));
  EncodeMethodPath(path, request.metadata.span());
  ASSERT_TRUE(connection_->Send(std::move(request)).ok());
  std::optional<Frame> response = inbox_->ResponseTo(5);
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(static_cast<StatusCode>(response->header.status_code), StatusCode::kUnimplemented);
  EXPECT_FALSE(inbox_->closed());
}

TEST_F(StreamProtocol, AStreamOpenedForAUnaryMethodIsUnimplemented) {
  Open(1, "/grpc.testing.TestService/UnaryCall");
  std::optional<Frame> response = inbox_->ResponseTo(1);
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(static_cast<StatusCode>(response->header.status_code), StatusCode::kUnimplemented);
  EXPECT_FALSE(inbox_->closed());
}

TEST_F(StreamProtocol, AFrameOnlyAServerSendsClosesTheConnection) {
  Frame response;
  response.header.type = FrameType::kResponse;
  response.header.call_id = 3;
  ASSERT_TRUE(connection_->Send(std::move(response)).ok());
  EXPECT_TRUE(inbox_->WaitClosed());
}

}  // namespace
}  // namespace zcrpc
