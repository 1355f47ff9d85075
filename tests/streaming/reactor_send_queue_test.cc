// A reactor's writes wait for the connection's send queue as well as for the
// stream's window: with a reader whose window would take every message, a
// link that delivers each frame 100 ms late (loopback's delay_us) and a
// send budget of one message, the writer may run at most a couple of
// messages ahead of the reader, on either side, and every message still
// arrives (the queue's OnWritable brings the writer back).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <string>

#include <gtest/gtest.h>

#include "grpc/testing/messages.pb.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using grpc::testing::StreamingInputCallRequest;
using grpc::testing::StreamingInputCallResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;

constexpr int kMessages = 16;
constexpr size_t kMessageBytes = 64 << 10;
constexpr uint64_t kSendBudget = 64 << 10;  // one message
constexpr uint64_t kWindow = 4 << 20;       // room for every message
// A liveness bound: a writer never brought back fails here, not at ctest's timeout.
constexpr auto kWait = std::chrono::seconds(60);

// Counts both ends of one writer and reader pair (one process).
struct Pace {
  std::atomic<int> written{0};
  std::atomic<int> received{0};
  std::atomic<int> most_ahead{0};
  void Wrote() { ++written; }
  void Received() {
    const int ahead = written.load() - ++received;
    for (int seen = most_ahead.load(); ahead > seen && !most_ahead.compare_exchange_weak(seen, ahead);) {
    }
  }
};

StreamingOutputCallResponse BigResponse() {
  StreamingOutputCallResponse message;
  message.mutable_payload()->set_body(std::string(kMessageBytes, 'x'));
  return message;
}

class Pacer final : public Service {
 public:
  static constexpr MethodDescriptor kPush{"/zcrpc.test.Pacer/Push", MethodKind::kServerStreaming};
  static constexpr MethodDescriptor kTake{"/zcrpc.test.Pacer/Take", MethodKind::kClientStreaming};

  explicit Pacer(Pace* pace) : Service("zcrpc.test.Pacer"), pace_(pace) {
    AddCallbackServerStreamingMethod(kPush, this, &Pacer::Push);
    AddClientStreamingMethod(kTake, this, &Pacer::Take);
  }

  // A reactor that writes kMessages as fast as it is let.
  ServerWriteReactor<StreamingOutputCallResponse>* Push(ServerContext*, const StreamingOutputCallRequest*) {
    class Writer final : public ServerWriteReactor<StreamingOutputCallResponse> {
     public:
      explicit Writer(Pace* pace) : pace_(pace) { StartWrite(&message_); }
      void OnWriteDone(bool ok) override {
        if (!ok) return Finish(absl::CancelledError("a write failed"));
        pace_->Wrote();
        if (++sent_ == kMessages) return Finish(Status());
        StartWrite(&message_);
      }
      void OnDone() override { delete this; }

     private:
      Pace* const pace_;
      const StreamingOutputCallResponse message_ = BigResponse();
      int sent_ = 0;
    };
    return new Writer(pace_);
  }

  Status Take(ServerContext*, ServerReader<StreamingInputCallRequest>* reader, StreamingInputCallResponse* response) {
    StreamingInputCallRequest request;
    int got = 0;
    while (reader->Read(&request)) {
      pace_->Received();
      ++got;
    }
    response->set_aggregated_payload_size(got);
    return Status();
  }

 private:
  Pace* const pace_;
};

TEST(ReactorSendQueue, AServerReactorWaitsForTheSendQueueNotOnlyTheWindow) {
  Pace pace;
  Pacer pacer(&pace);
  ServerOptions server_options;
  server_options.send_budget_bytes = kSendBudget;
  Server server(server_options);
  ASSERT_TRUE(server.RegisterService(&pacer).ok());
  auto uri = server.AddListener("loopback://send-queue-*");
  ASSERT_TRUE(uri.ok()) << uri.status();
  auto channel = Channel::Create(*uri + "?delay_us=100000");  // the client gets each frame 100 ms late
  ASSERT_TRUE(channel.ok()) << channel.status();

  ClientContext ctx;
  ctx.set_timeout(kWait);
  ctx.set_stream_window_bytes(kWindow);
  ClientReader<StreamingOutputCallResponse> reader(
      OpenServerStream(**channel, Pacer::kPush, &ctx, StreamingOutputCallRequest()));
  StreamingOutputCallResponse response;
  int got = 0;
  while (reader.Read(&response)) {
    pace.Received();
    ++got;
  }
  const Status status = reader.Finish();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(got, kMessages);
  // The queue holds one message (the budget); one more may be on its way
  // into it, and one counted written before its reader counted it.
  EXPECT_LE(pace.most_ahead.load(), 3) << "the writer ran ahead of the connection's send queue";
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5));
}

TEST(ReactorSendQueue, AClientReactorWaitsForTheSendQueueNotOnlyTheWindow) {
  Pace pace;
  Pacer pacer(&pace);
  ServerOptions server_options;
  server_options.stream_window_bytes = kWindow;
  Server server(server_options);
  ASSERT_TRUE(server.RegisterService(&pacer).ok());
  auto uri = server.AddListener("loopback://send-queue-*?delay_us=100000");  // the server gets each frame late
  ASSERT_TRUE(uri.ok()) << uri.status();
  ChannelOptions channel_options;
  channel_options.send_budget_bytes = kSendBudget;
  auto channel = Channel::Create(*uri, channel_options);
  ASSERT_TRUE(channel.ok()) << channel.status();

  class Uploader final : public ClientWriteReactor<StreamingInputCallRequest> {
   public:
    explicit Uploader(Pace* pace) : pace_(pace) { request_.mutable_payload()->set_body(std::string(kMessageBytes, 'x')); }
    void Begin() {
      StartWrite(&request_);
      StartCall();
    }
    void OnWriteDone(bool ok) override {
      if (!ok) return;  // the call is over: OnDone says why
      pace_->Wrote();
      if (++sent_ == kMessages) return StartWritesDone();
      StartWrite(&request_);
    }
    void OnDone(const Status& status) override { done.set_value(status); }
    std::promise<Status> done;

   private:
    Pace* const pace_;
    StreamingInputCallRequest request_;
    int sent_ = 0;
  } uploader(&pace);
  ClientContext ctx;
  ctx.set_timeout(kWait);
  StreamingInputCallResponse response;
  uploader.Bind(*channel, Pacer::kTake, &ctx, nullptr, &response);
  uploader.Begin();
  auto done = uploader.done.get_future();
  ASSERT_EQ(done.wait_for(kWait), std::future_status::ready);
  const Status status = done.get();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(response.aggregated_payload_size(), kMessages);
  EXPECT_LE(pace.most_ahead.load(), 3) << "the writer ran ahead of the connection's send queue";
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5));
}

}  // namespace
}  // namespace zcrpc
