// The callback API (reactor.h) end to end, on every transport: server
// reactors for each kind (grpc.testing.TestService's CallbackService),
// client reactors for each streaming kind, against both the callback and
// the blocking server; 0, 1 and 10,000 messages; a unary reply from
// another thread; cancel and deadline mid-stream (OnCancel, then OnDone);
// flow control with a client that stops reading; attachments; Shutdown
// with reactors in flight; reactions never inside the caller's Start*().
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/streaming/grpc_callback_test_service.h"
#include "examples/interop/grpc_test_service.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using grpc::testing::StreamingInputCallRequest;
using grpc::testing::StreamingInputCallResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;
using grpc::testing::TestService;

// How long a reaction may take to come: a liveness bound, not a speed
// one. A shm ping-pong of 10,000 rounds takes ~170 ms here, but ran past
// 60 s with both cores busy compiling (both sides spin-wait, docs/streaming.md).
constexpr auto kWait = std::chrono::seconds(240);

// The status OnDone gave, or DEADLINE_EXCEEDED if it never came.
Status WaitFor(std::promise<Status>& done) {
  auto future = done.get_future();
  if (future.wait_for(kWait) != std::future_status::ready) return absl::DeadlineExceededError("OnDone never came");
  return future.get();
}

StreamingOutputCallRequest AskFor(int n, int size_mod = 251) {
  StreamingOutputCallRequest request;
  for (int i = 0; i < n; ++i) request.add_response_parameters()->set_size(i % size_mod);
  return request;
}

// Reads every message of a server stream; checks sizes say 0, 1, 2, ...
class Collector final : public ClientReadReactor<StreamingOutputCallResponse> {
 public:
  void Start() {
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (response_.payload().body().size() != static_cast<size_t>(got_ % 251)) out_of_order_ = true;
    ++got_;
    if (pause_reads_.load()) {
      paused_.set_value();
      return;  // Resume() starts the next read
    }
    StartRead(&response_);
  }
  void OnDone(const Status& status) override { done_.set_value(status); }

  Status Wait() { return WaitFor(done_); }
  int got() const { return got_; }
  bool out_of_order() const { return out_of_order_; }
  std::atomic<bool> pause_reads_{false};
  std::promise<void> paused_;
  void Resume() {
    pause_reads_ = false;
    StartRead(&response_);
  }

 private:
  StreamingOutputCallResponse response_;
  int got_ = 0;
  bool out_of_order_ = false;
  std::promise<Status> done_;
};

// Writes `n` messages of size i % 100, then writes-done.
class Uploader final : public ClientWriteReactor<StreamingInputCallRequest> {
 public:
  explicit Uploader(int n) : n_(n) {}
  void Start() {
    Next();
    StartCall();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return;
    Next();
  }
  void OnWritesDoneDone(bool ok) override { writes_done_ok_ = ok; }
  void OnDone(const Status& status) override { done_.set_value(status); }
  Status Wait() { return WaitFor(done_); }
  int64_t total() const { return total_; }
  bool writes_done_ok() const { return writes_done_ok_; }

 private:
  void Next() {
    if (sent_ == n_) return StartWritesDone();
    request_.mutable_payload()->set_body(std::string(static_cast<size_t>(sent_ % 100), 'a'));
    total_ += sent_ % 100;
    ++sent_;
    StartWrite(&request_);
  }
  const int n_;
  int sent_ = 0;
  int64_t total_ = 0;
  bool writes_done_ok_ = false;
  StreamingInputCallRequest request_;
  std::promise<Status> done_;
};

// Ping-pong: one request of one 64 B response at a time, `n` rounds.
class PingPong final : public ClientBidiReactor<StreamingOutputCallRequest, StreamingOutputCallResponse> {
 public:
  explicit PingPong(int n) : n_(n) { request_.add_response_parameters()->set_size(64); }
  void Start() {
    if (n_ == 0) {
      StartWritesDone();
    } else {
      StartWrite(&request_);
      StartRead(&response_);
    }
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (response_.payload().body().size() == 64) ++rounds_;
    if (rounds_ == n_) return StartWritesDone();
    StartWrite(&request_);
    StartRead(&response_);
  }
  void OnDone(const Status& status) override { done_.set_value(status); }
  Status Wait() { return WaitFor(done_); }
  int rounds() const { return rounds_; }

 private:
  const int n_;
  int rounds_ = 0;
  StreamingOutputCallRequest request_;
  StreamingOutputCallResponse response_;
  std::promise<Status> done_;
};

struct Param {
  std::string uri;
  bool callback_server;
};

class Reactors : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.limits.max_body_bytes = 8u << 20;
    server_ = std::make_unique<Server>(options);
    Service* service = GetParam().callback_server ? static_cast<Service*>(&callback_service_)
                                                  : static_cast<Service*>(&blocking_service_);
    ASSERT_TRUE(server_->RegisterService(service).ok());
    auto uri = server_->AddListener(GetParam().uri);
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
  bool callback_server() const { return GetParam().callback_server; }

  testing::GrpcCallbackTestService callback_service_;
  testing::GrpcTestService blocking_service_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<Channel> channel_;
  std::unique_ptr<TestService::Stub> stub_;
};

TEST_P(Reactors, ServerStreamingZeroOneAndTenThousandMessagesInOrder) {
  for (int n : {0, 1, 10'000}) {
    ClientContext ctx;
    StreamingOutputCallRequest request = AskFor(n);
    Collector reader;
    stub_->StreamingOutputCall(&ctx, &request, &reader);
    reader.Start();
    Status status = reader.Wait();
    ASSERT_TRUE(status.ok()) << status << " n=" << n;
    EXPECT_EQ(reader.got(), n);
    EXPECT_FALSE(reader.out_of_order());
  }
}

TEST_P(Reactors, ClientStreamingZeroOneAndTenThousandMessages) {
  for (int n : {0, 1, 10'000}) {
    ClientContext ctx;
    StreamingInputCallResponse response;
    Uploader writer(n);
    stub_->StreamingInputCall(&ctx, &response, &writer);
    writer.Start();
    Status status = writer.Wait();
    ASSERT_TRUE(status.ok()) << status << " n=" << n;
    EXPECT_TRUE(writer.writes_done_ok());
    EXPECT_EQ(response.aggregated_payload_size(), writer.total());
  }
}

TEST_P(Reactors, BidiPingPongZeroOneAndTenThousandRounds) {
  for (int n : {0, 1, 10'000}) {
    ClientContext ctx;
    PingPong stream(n);
    stub_->FullDuplexCall(&ctx, &stream);
    stream.Start();
    Status status = stream.Wait();
    ASSERT_TRUE(status.ok()) << status << " n=" << n;
    EXPECT_EQ(stream.rounds(), n);
  }
}

TEST_P(Reactors, UnaryReplyFromAnotherThreadReachesBlockingAndCallbackClients) {
  grpc::testing::SimpleRequest request;
  request.set_response_size(1000);
  grpc::testing::SimpleResponse response;
  ClientContext ctx;
  Status status = stub_->UnaryCall(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(response.payload().body().size(), 1000u);

  request.mutable_response_status()->set_code(static_cast<int>(StatusCode::kAborted));
  request.mutable_response_status()->set_message("asked to");
  std::promise<Status> done;
  ClientContext ctx2;
  grpc::testing::SimpleResponse response2;
  stub_->UnaryCall(&ctx2, request, &response2, [&done](Status s) { done.set_value(std::move(s)); });
  status = done.get_future().get();
  EXPECT_EQ(status.code(), StatusCode::kAborted) << status;
  EXPECT_EQ(status.message(), "asked to");
}

TEST_P(Reactors, TrailingMetadataAndStatusReachTheReactor) {
  ClientContext ctx;
  ASSERT_TRUE(ctx.AddMetadata("x-grpc-test-echo-trailing-bin", std::string("\x01\x02", 2)).ok());
  StreamingOutputCallRequest request = AskFor(3);
  request.mutable_response_status()->set_code(static_cast<int>(StatusCode::kFailedPrecondition));
  request.mutable_response_status()->set_message("as asked");
  Collector reader;
  stub_->StreamingOutputCall(&ctx, &request, &reader);
  reader.Start();
  Status status = reader.Wait();
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(status.message(), "as asked");
  EXPECT_EQ(reader.got(), 3);
  bool echoed = false;
  for (const auto& [key, value] : ctx.server_metadata()) {
    if (key == "x-grpc-test-echo-trailing-bin" && value == std::string("\x01\x02", 2)) echoed = true;
  }
  EXPECT_TRUE(echoed);
}

TEST_P(Reactors, CancelMidStreamEndsBothSides) {
  ClientContext ctx;
  StreamingOutputCallRequest request = AskFor(1'000'000, 10);
  Collector reader;
  reader.pause_reads_ = true;
  stub_->StreamingOutputCall(&ctx, &request, &reader);
  reader.Start();
  reader.paused_.get_future().wait();  // the first message arrived
  ctx.TryCancel();
  reader.Resume();
  Status status = reader.Wait();
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status;
  if (callback_server()) {
    // The server's reactor saw OnCancel, then finished and reached OnDone.
    for (int i = 0; i < 6000 && callback_service_.done.load() < 1; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(callback_service_.cancelled.load(), 1);
    EXPECT_EQ(callback_service_.done.load(), 1);
  }
}

TEST_P(Reactors, ACancelFromInsideAReactionEndsTheCall) {
  // The reaction runs on the thread that delivered the message; the cancel
  // inside it must not wait for that same delivery to let go of the call.
  ClientContext ctx;
  StreamingOutputCallRequest request = AskFor(1'000'000, 10);
  class CancelOnFirst final : public ClientReadReactor<StreamingOutputCallResponse> {
   public:
    explicit CancelOnFirst(ClientContext* ctx) : ctx_(ctx) {}
    void OnReadDone(bool ok) override {
      if (!ok) return;
      ctx_->TryCancel();
      StartRead(&response);
    }
    void OnDone(const Status& status) override { done.set_value(status); }
    ClientContext* const ctx_;
    StreamingOutputCallResponse response;
    std::promise<Status> done;
  } reader(&ctx);
  stub_->StreamingOutputCall(&ctx, &request, &reader);
  reader.StartRead(&reader.response);
  reader.StartCall();
  auto done = reader.done.get_future();
  ASSERT_EQ(done.wait_for(kWait), std::future_status::ready) << "the cancel inside a reaction hung";
  EXPECT_EQ(done.get().code(), StatusCode::kCancelled);
}

TEST_P(Reactors, TheDeadlineEndsAStreamMidway) {
  ClientContext ctx;
  ctx.set_timeout(std::chrono::milliseconds(200));
  PingPong stream(1'000'000'000);  // far more rounds than 200 ms allow
  stub_->FullDuplexCall(&ctx, &stream);
  stream.Start();
  Status status = stream.Wait();
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status;
  EXPECT_GT(stream.rounds(), 0);
}

TEST_P(Reactors, AReaderThatStopsHoldsTheWriterAtTheWindowAndLosesNothing) {
  ClientContext ctx;
  ctx.set_stream_window_bytes(64 << 10);
  // 2,000 messages of ~1 KiB: 2 MiB, far over the 64 KiB window.
  StreamingOutputCallRequest request;
  for (int i = 0; i < 2000; ++i) request.add_response_parameters()->set_size(1000);
  class SlowReader final : public ClientReadReactor<StreamingOutputCallResponse> {
   public:
    void OnReadDone(bool ok) override {
      if (!ok) return;
      ++got;
      if (got == 1) {
        first.set_value();
        return;  // stops reading: the writer must stop at the window
      }
      StartRead(&response);
    }
    void OnDone(const Status& status) override { done.set_value(status); }
    StreamingOutputCallResponse response;
    int got = 0;
    std::promise<void> first;
    std::promise<Status> done;
  } reader;
  stub_->StreamingOutputCall(&ctx, &request, &reader);
  reader.StartRead(&reader.response);
  reader.StartCall();
  reader.first.get_future().wait();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto done = reader.done.get_future();
  EXPECT_EQ(done.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout)
      << "the stream ended while the reader held it";
  reader.StartRead(&reader.response);  // reads again: everything arrives
  ASSERT_EQ(done.wait_for(kWait), std::future_status::ready);
  Status status = done.get();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(reader.got, 2000);
}

TEST_P(Reactors, ReactionsNeverRunOnTheCallersThread) {
  // The test's thread reads no connection and runs no reaction of its own:
  // a reaction seen on it ran inside a Start*() call, under the caller.
  ClientContext ctx;
  StreamingInputCallResponse response;
  class Probe final : public ClientWriteReactor<StreamingInputCallRequest> {
   public:
    void OnWriteDone(bool) override {
      if (std::this_thread::get_id() == caller) ran_on_caller = true;
      if (++writes < 100) return StartWrite(&request);
      StartWritesDone();
    }
    void OnDone(const Status& status) override { done.set_value(status); }
    std::thread::id caller = std::this_thread::get_id();
    std::atomic<bool> ran_on_caller{false};
    int writes = 0;
    std::promise<Status> done;
    StreamingInputCallRequest request;
  } probe;
  stub_->StreamingInputCall(&ctx, &response, &probe);
  probe.StartCall();
  probe.StartWrite(&probe.request);
  Status status = probe.done.get_future().get();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_FALSE(probe.ran_on_caller.load());
}

TEST_P(Reactors, ASecondReadWhileOneIsOutstandingFailsAlone) {
  ClientContext ctx;
  StreamingOutputCallRequest request = AskFor(2);
  class Twice final : public ClientReadReactor<StreamingOutputCallResponse> {
   public:
    void OnReadDone(bool ok) override { (ok ? oks : fails)++; if (ok && oks == 1) StartRead(&b); }
    void OnDone(const Status& status) override { done.set_value(status); }
    std::atomic<int> oks{0}, fails{0};
    StreamingOutputCallResponse a, b;
    std::promise<Status> done;
  } reader;
  stub_->StreamingOutputCall(&ctx, &request, &reader);
  reader.StartRead(&reader.a);
  reader.StartRead(&reader.a);  // refused: one is outstanding
  reader.StartCall();
  Status status = reader.done.get_future().get();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(reader.fails.load(), 1);
  EXPECT_EQ(reader.oks.load(), 2);
}

TEST_P(Reactors, AStreamThatCannotOpenEndsInOnDone) {
  auto channel = Channel::Create("tcp://127.0.0.1:1");  // nothing listens there
  ASSERT_TRUE(channel.ok());
  auto stub = TestService::NewStub(*channel);
  ClientContext ctx;
  ctx.set_timeout(std::chrono::seconds(5));
  PingPong stream(3);
  stub->FullDuplexCall(&ctx, &stream);
  stream.Start();
  Status status = stream.Wait();
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status;
  EXPECT_EQ(stream.rounds(), 0);
}

TEST_P(Reactors, ShutdownEndsReactorsInFlightWithOneStatusEach) {
  std::vector<std::unique_ptr<Collector>> readers;
  std::vector<std::unique_ptr<ClientContext>> contexts;
  StreamingOutputCallRequest request = AskFor(1'000'000, 10);
  for (int i = 0; i < 4; ++i) {
    contexts.push_back(std::make_unique<ClientContext>());
    readers.push_back(std::make_unique<Collector>());
    readers.back()->pause_reads_ = true;
    stub_->StreamingOutputCall(contexts.back().get(), &request, readers.back().get());
    readers.back()->Start();
    readers.back()->paused_.get_future().wait();
  }
  server_->Shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
  for (auto& reader : readers) {
    reader->Resume();
    Status status = reader->Wait();
    EXPECT_TRUE(status.code() == StatusCode::kCancelled || status.code() == StatusCode::kUnavailable) << status;
  }
  if (callback_server()) {
    EXPECT_EQ(callback_service_.done.load(), 4);  // Shutdown waited for every OnDone
    EXPECT_EQ(callback_service_.cancelled.load(), 4);
  }
  server_.reset();
}

TEST_P(Reactors, AnUnimplementedCallbackMethodSaysSo) {
  ClientContext ctx;
  class Half final : public ClientBidiReactor<StreamingOutputCallRequest, StreamingOutputCallResponse> {
   public:
    void OnDone(const Status& status) override { done.set_value(status); }
    std::promise<Status> done;
  } stream;
  stub_->HalfDuplexCall(&ctx, &stream);
  stream.StartWritesDone();
  stream.StartCall();
  Status status = stream.done.get_future().get();
  if (callback_server()) {
    EXPECT_EQ(status.code(), StatusCode::kUnimplemented) << status;
  } else {
    EXPECT_TRUE(status.ok()) << status;
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, Reactors,
                         ::testing::Values(Param{"loopback://reactors-*", true}, Param{"tcp://127.0.0.1:0", true},
                                           Param{"shm://reactors-*", true}, Param{"tcp://127.0.0.1:0", false},
                                           Param{"shm://reactors-*", false}),
                         [](const auto& info) {
                           return info.param.uri.substr(0, info.param.uri.find(':')) +
                                  (info.param.callback_server ? "_callback_server" : "_blocking_server");
                         });

}  // namespace
}  // namespace zcrpc
