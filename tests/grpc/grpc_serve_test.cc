// A zcrpc server reached by a stock gRPC client (libgrpc++'s generic stub,
// real HTTP/2 on loopback): grpc.testing.TestService served with zcrpc's
// generated stubs over grpc://, all four kinds, metadata both ways (a -bin
// key included), status codes and non-ASCII messages, the client's deadline
// and cancel, an unknown method and service, a gzip-compressed request, an
// oversize message (gRPC's own RESOURCE_EXHAUSTED; the next call is served),
// and the tcp listener beside it.
// (The gRPC client uses the generic stub because gRPC's generated
// TestService and zcrpc's share one class name: one program cannot link
// both. tests/grpc/interop_test.sh runs generated gRPC clients as their
// own processes.)
#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "examples/interop/grpc_test_service.h"
#include "zcrpc/transport/grpc/bridged_connection.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using grpc::testing::StreamingInputCallRequest;
using grpc::testing::StreamingInputCallResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;

::grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message) {
  const std::string bytes = message.SerializeAsString();
  ::grpc::Slice slice(bytes);
  return ::grpc::ByteBuffer(&slice, 1);
}

template <typename M>
M Parse(const ::grpc::ByteBuffer& buffer) {
  std::vector<::grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  M message;
  EXPECT_TRUE(message.ParseFromString(bytes));
  return message;
}

// A blocking bidirectional gRPC call through the generic stub: what any
// gRPC client sends for any kind.
class GenericCall final : public ::grpc::ClientBidiReactor<::grpc::ByteBuffer, ::grpc::ByteBuffer> {
 public:
  GenericCall(::grpc::GenericStub& stub, ::grpc::ClientContext* ctx, const std::string& method) {
    stub.PrepareBidiStreamingCall(ctx, method, ::grpc::StubOptions(), this);
    StartCall();
  }
  bool Write(const google::protobuf::MessageLite& message, bool last = false) {
    out_ = Serialize(message);
    std::unique_lock lock(mu_);
    write_done_ = false;
    lock.unlock();
    if (last) {
      StartWriteLast(&out_, ::grpc::WriteOptions());
    } else {
      StartWrite(&out_);
    }
    lock.lock();
    cv_.wait(lock, [this] { return write_done_; });
    return write_ok_;
  }
  void WritesDone() { StartWritesDone(); }
  template <typename M>
  bool Read(M* message) {
    std::unique_lock lock(mu_);
    if (done_) return false;  // gRPC's OnDone needs no read outstanding: nothing more can come
    read_done_ = false;
    lock.unlock();
    StartRead(&in_);
    lock.lock();
    cv_.wait(lock, [this] { return read_done_; });
    if (read_ok_) *message = Parse<M>(in_);
    return read_ok_;
  }
  ::grpc::Status Finish() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return status_;
  }

  void OnWriteDone(bool ok) override { Signal([&] { write_ok_ = ok, write_done_ = true; }); }
  void OnWritesDoneDone(bool) override {}
  void OnReadDone(bool ok) override { Signal([&] { read_ok_ = ok, read_done_ = true; }); }
  void OnDone(const ::grpc::Status& status) override { Signal([&] { status_ = status, done_ = true; }); }

 private:
  template <typename F>
  void Signal(F f) {
    std::lock_guard lock(mu_);
    f();
    cv_.notify_all();
  }
  ::grpc::ByteBuffer out_, in_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool write_done_ = false, write_ok_ = false, read_done_ = false, read_ok_ = false, done_ = false;
  ::grpc::Status status_;
};

// Every case runs twice: handlers on the server's worker threads (the
// default), and inline on gRPC's callback thread that delivered the request
// (worker_threads = 0), where a unary call's end runs on gRPC's threads
// without its executor (server_bridge.cc, BridgedUnaryCall).
class GrpcServe : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.worker_threads = GetParam();
    server_ = std::make_unique<Server>(options);
    ASSERT_TRUE(server_->RegisterService(&service_).ok());
    ASSERT_TRUE(server_->RegisterService(&waiting_).ok());
    auto uri = server_->AddListener("grpc://127.0.0.1:0");
    ASSERT_TRUE(uri.ok()) << uri.status();
    uri_ = *uri;
    ASSERT_EQ(uri_.rfind("grpc://127.0.0.1:", 0), 0u) << uri_;
    channel_ = ::grpc::CreateChannel(uri_.substr(7), ::grpc::InsecureChannelCredentials());
    stub_ = std::make_unique<::grpc::GenericStub>(channel_);
  }
  void TearDown() override { server_->Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5)); }

  // grpc.testing.ReconnectService's Start, as a unary method that waits
  // until its call is cancelled (or 20 s) and says which.
  class WaitsForCancel final : public grpc::testing::ReconnectService::Service {
   public:
    Status Start(ServerContext* ctx, const grpc::testing::ReconnectParams*, grpc::testing::Empty*) override {
      started.store(true);
      for (int i = 0; i < 2000 && !ctx->IsCancelled(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      saw_cancel.store(ctx->IsCancelled());
      finished.store(true);
      return Status();
    }
    // Whether the handler ran to its end and saw its call cancelled; false
    // while it has not started or has not finished.
    bool SawCancel() {
      for (int i = 0; i < 2500 && started.load() && !finished.load(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      return finished.load() && saw_cancel.load();
    }
    std::atomic<bool> started{false}, finished{false}, saw_cancel{false};
  };

  testing::GrpcTestService service_;
  WaitsForCancel waiting_;
  std::unique_ptr<Server> server_;
  std::string uri_;
  std::shared_ptr<::grpc::Channel> channel_;
  std::unique_ptr<::grpc::GenericStub> stub_;
};

TEST_P(GrpcServe, UnaryWithPayloadAndEchoedBinaryTrailingMetadata) {
  ::grpc::ClientContext ctx;
  ctx.AddMetadata("x-grpc-test-echo-trailing-bin", std::string("\x00\xff\x01", 3));
  GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/UnaryCall");
  SimpleRequest request;
  request.set_response_size(314159);
  ASSERT_TRUE(call.Write(request, /*last=*/true));
  SimpleResponse response;
  const bool read = call.Read(&response);
  const ::grpc::Status status = call.Finish();
  ASSERT_TRUE(read) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(response.payload().body().size(), 314159u);
  EXPECT_TRUE(status.ok()) << status.error_message();
  auto echoed = ctx.GetServerTrailingMetadata().find("x-grpc-test-echo-trailing-bin");
  ASSERT_NE(echoed, ctx.GetServerTrailingMetadata().end());
  EXPECT_EQ(std::string(echoed->second.data(), echoed->second.size()), std::string("\x00\xff\x01", 3));
}

TEST_P(GrpcServe, StatusCodeAndNonAsciiMessageArriveUnchanged) {
  ::grpc::ClientContext ctx;
  GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/UnaryCall");
  SimpleRequest request;
  request.mutable_response_status()->set_code(2);
  request.mutable_response_status()->set_message("\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n");
  ASSERT_TRUE(call.Write(request, /*last=*/true));
  const ::grpc::Status status = call.Finish();
  EXPECT_EQ(status.error_code(), ::grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(status.error_message(), request.response_status().message());
}

TEST_P(GrpcServe, ServerStreamingClientStreamingAndPingPong) {
  {
    ::grpc::ClientContext ctx;
    GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/StreamingOutputCall");
    StreamingOutputCallRequest request;
    for (int size : {31415, 9, 2653, 58979}) request.add_response_parameters()->set_size(size);
    ASSERT_TRUE(call.Write(request, /*last=*/true));
    StreamingOutputCallResponse response;
    for (int size : {31415, 9, 2653, 58979}) {
      ASSERT_TRUE(call.Read(&response));
      EXPECT_EQ(response.payload().body().size(), static_cast<size_t>(size));
    }
    EXPECT_TRUE(call.Finish().ok());  // (no read after the last: gRPC may be done with the call)
  }
  {
    ::grpc::ClientContext ctx;
    GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/StreamingInputCall");
    for (int size : {27182, 8, 1828, 45904}) {
      StreamingInputCallRequest request;
      request.mutable_payload()->set_body(std::string(static_cast<size_t>(size), 'x'));
      ASSERT_TRUE(call.Write(request));
    }
    call.WritesDone();
    StreamingInputCallResponse response;
    ASSERT_TRUE(call.Read(&response));
    EXPECT_EQ(response.aggregated_payload_size(), 74922);
    EXPECT_TRUE(call.Finish().ok());
  }
  {
    ::grpc::ClientContext ctx;
    GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/FullDuplexCall");
    for (int size : {31415, 9, 2653, 58979}) {
      StreamingOutputCallRequest request;
      request.add_response_parameters()->set_size(size);
      ASSERT_TRUE(call.Write(request));
      StreamingOutputCallResponse response;
      ASSERT_TRUE(call.Read(&response)) << call.Finish().error_message();
      EXPECT_EQ(response.payload().body().size(), static_cast<size_t>(size));
    }
    call.WritesDone();
    StreamingOutputCallResponse response;
    EXPECT_TRUE(call.Finish().ok());  // (no read after the last: gRPC may be done with the call)
  }
}

TEST_P(GrpcServe, TenThousandStreamMessagesThroughTheCreditBridge) {
  ::grpc::ClientContext ctx;
  GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/StreamingOutputCall");
  StreamingOutputCallRequest request;
  for (int i = 0; i < 10'000; ++i) request.add_response_parameters()->set_size(i % 251);
  ASSERT_TRUE(call.Write(request, /*last=*/true));
  StreamingOutputCallResponse response;
  for (int i = 0; i < 10'000; ++i) {
    ASSERT_TRUE(call.Read(&response)) << i;
    ASSERT_EQ(response.payload().body().size(), static_cast<size_t>(i % 251));
  }
  EXPECT_TRUE(call.Finish().ok());
}

TEST_P(GrpcServe, TheClientsDeadlineReachesTheHandler) {
  ::grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/FullDuplexCall");
  StreamingOutputCallRequest request;
  auto* params = request.add_response_parameters();
  params->set_size(1);
  params->set_interval_us(1'000'000);  // the server sleeps past the deadline
  ASSERT_TRUE(call.Write(request));
  EXPECT_EQ(call.Finish().error_code(), ::grpc::StatusCode::DEADLINE_EXCEEDED);
  for (int i = 0; i < 1000 && server_->calls_in_flight() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(server_->calls_in_flight(), 0u);
}

TEST_P(GrpcServe, ACancelFromTheClientEndsTheServersCall) {
  ::grpc::ClientContext ctx;
  GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/FullDuplexCall");
  StreamingOutputCallRequest request;
  request.add_response_parameters()->set_size(5);
  ASSERT_TRUE(call.Write(request));
  StreamingOutputCallResponse response;
  ASSERT_TRUE(call.Read(&response));
  EXPECT_EQ(server_->calls_in_flight(), 1u);
  ctx.TryCancel();
  EXPECT_EQ(call.Finish().error_code(), ::grpc::StatusCode::CANCELLED);
  for (int i = 0; i < 1000 && server_->calls_in_flight() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(server_->calls_in_flight(), 0u);
}

TEST_P(GrpcServe, UnknownMethodAndServiceAreUnimplementedNamingThem) {
  // gRPC's generic unary call (one batch), not the bidi GenericCall: with
  // an empty message written last by a bidi reactor, libgrpc++ 1.51's
  // client now and then never completes the write once the server has
  // answered (seen under CPU load, with or without zcrpc's registered
  // methods; a non-empty message never hung in 3,000 runs).
  for (const std::string method : {"/grpc.testing.TestService/UnimplementedCall", "/grpc.testing.TestService/Nope",
                                   "/grpc.testing.UnimplementedService/UnimplementedCall"}) {
    ::grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    const ::grpc::ByteBuffer request = Serialize(grpc::testing::Empty());
    ::grpc::ByteBuffer response;
    std::promise<::grpc::Status> done;
    stub_->UnaryCall(&ctx, method, ::grpc::StubOptions(), &request, &response,
                     [&](::grpc::Status status) { done.set_value(std::move(status)); });
    const ::grpc::Status status = done.get_future().get();
    EXPECT_EQ(status.error_code(), ::grpc::StatusCode::UNIMPLEMENTED) << method << ": " << status.error_message();
  }
}

TEST_P(GrpcServe, ACompressedRequestIsAccepted) {
  ::grpc::ClientContext ctx;
  ctx.set_compression_algorithm(GRPC_COMPRESS_GZIP);
  GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/StreamingInputCall");
  StreamingInputCallRequest request;
  request.mutable_payload()->set_body(std::string(100'000, 'z'));  // compresses well
  ASSERT_TRUE(call.Write(request));
  call.WritesDone();
  StreamingInputCallResponse response;
  ASSERT_TRUE(call.Read(&response));
  EXPECT_EQ(response.aggregated_payload_size(), 100'000);
  EXPECT_TRUE(call.Finish().ok());
}

TEST(GrpcServeLimits, AnOversizeMessageGetsGrpcsErrorAndOtherCallsGoOn) {
  testing::GrpcTestService service;
  ServerOptions options;
  options.limits.max_body_bytes = 64 << 10;  // becomes the gRPC server's receive limit
  Server server(options);
  ASSERT_TRUE(server.RegisterService(&service).ok());
  auto uri = server.AddListener("grpc://127.0.0.1:0");
  ASSERT_TRUE(uri.ok()) << uri.status();
  auto channel = ::grpc::CreateChannel(uri->substr(7), ::grpc::InsecureChannelCredentials());
  ::grpc::GenericStub stub(channel);
  {
    ::grpc::ClientContext ctx;
    GenericCall call(stub, &ctx, "/grpc.testing.TestService/UnaryCall");
    SimpleRequest request;
    request.mutable_payload()->set_body(std::string(100'000, 'x'));
    (void)call.Write(request, /*last=*/true);
    EXPECT_EQ(call.Finish().error_code(), ::grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  ::grpc::ClientContext ctx;
  GenericCall call(stub, &ctx, "/grpc.testing.TestService/UnaryCall");
  SimpleRequest request;
  request.set_response_size(5);
  ASSERT_TRUE(call.Write(request, /*last=*/true));
  SimpleResponse response;
  ASSERT_TRUE(call.Read(&response));
  EXPECT_EQ(response.payload().body().size(), 5u);
  EXPECT_TRUE(call.Finish().ok());
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5));
}

TEST_P(GrpcServe, TheSameServiceOverTcpAtTheSameTime) {
  auto tcp = server_->AddListener("tcp://127.0.0.1:0");
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  auto channel = Channel::Create(*tcp);
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto stub = grpc::testing::TestService::NewStub(*channel);
  ClientContext zctx;
  SimpleRequest request;
  request.set_response_size(10);
  SimpleResponse response;
  ASSERT_TRUE(stub->UnaryCall(&zctx, request, &response).ok());
  EXPECT_EQ(response.payload().body().size(), 10u);

  ::grpc::ClientContext ctx;
  GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/UnaryCall");
  ASSERT_TRUE(call.Write(request, /*last=*/true));
  ASSERT_TRUE(call.Read(&response));
  EXPECT_EQ(response.payload().body().size(), 10u);
  EXPECT_TRUE(call.Finish().ok());
}

TEST_P(GrpcServe, UnaryCallsOneAfterAnotherAndManyAtOnce) {
  auto call_once = [&](int size) {
    ::grpc::ClientContext ctx;
    GenericCall call(*stub_, &ctx, "/grpc.testing.TestService/UnaryCall");
    SimpleRequest request;
    request.set_response_size(size);
    if (!call.Write(request, /*last=*/true)) return false;
    SimpleResponse response;
    const bool read = call.Read(&response);
    return call.Finish().ok() && read && response.payload().body().size() == static_cast<size_t>(size);
  };
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(call_once(i)) << "call " << i;
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) failed += call_once(t * 100 + i) ? 0 : 1;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  for (int i = 0; i < 1000 && server_->calls_in_flight() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(server_->calls_in_flight(), 0u);
}

// Not empty: see UnknownMethodAndServiceAreUnimplementedNamingThem.
grpc::testing::ReconnectParams NonEmptyParams() {
  grpc::testing::ReconnectParams params;
  params.set_max_reconnect_backoff_ms(1);
  return params;
}

TEST_P(GrpcServe, ACancelledUnaryCallCancelsItsHandler) {
  if (GetParam() == 0) GTEST_SKIP() << "a handler that waits must not run inline on gRPC's callback thread";
  ::grpc::ClientContext ctx;
  GenericCall call(*stub_, &ctx, "/grpc.testing.ReconnectService/Start");
  ASSERT_TRUE(call.Write(NonEmptyParams(), /*last=*/true));
  for (int i = 0; i < 1000 && !waiting_.started.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(waiting_.started.load());
  ctx.TryCancel();
  EXPECT_EQ(call.Finish().error_code(), ::grpc::StatusCode::CANCELLED);
  for (int i = 0; i < 1000 && server_->calls_in_flight() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(server_->calls_in_flight(), 0u);
  EXPECT_TRUE(waiting_.SawCancel());
}

TEST_P(GrpcServe, AUnaryDeadlineEndsTheCallAndReachesTheHandler) {
  if (GetParam() == 0) GTEST_SKIP() << "a handler that waits must not run inline on gRPC's callback thread";
  ::grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  GenericCall call(*stub_, &ctx, "/grpc.testing.ReconnectService/Start");
  (void)call.Write(NonEmptyParams(), /*last=*/true);
  EXPECT_EQ(call.Finish().error_code(), ::grpc::StatusCode::DEADLINE_EXCEEDED);
  for (int i = 0; i < 1000 && server_->calls_in_flight() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(server_->calls_in_flight(), 0u);
  // Under load the deadline may pass before the handler is dispatched;
  // a handler that did run must have seen it.
  if (waiting_.started.load()) {
    EXPECT_TRUE(waiting_.SawCancel());
  }
}

// The bridge's write credit: held back while the batch is short and more
// messages wait; all of it as soon as nothing is queued or the batch is full.
TEST(WriteCredit, ReturnedInBatchesOrWhenNothingIsQueued) {
  using transport::grpc_bridge::CreditToReturn;
  using transport::grpc_bridge::kWriteCreditBatch;
  uint64_t owed = 0;
  EXPECT_EQ(CreditToReturn(&owed, 4096, /*queue_empty=*/false), 0u);
  EXPECT_EQ(owed, 4096u);
  EXPECT_EQ(CreditToReturn(&owed, 4096, /*queue_empty=*/true), 8192u);
  EXPECT_EQ(owed, 0u);
  uint64_t returned = 0;
  int frames = 0;
  for (uint64_t sent = 0; sent < 10 * kWriteCreditBatch; sent += 4096) {
    const uint64_t credit = CreditToReturn(&owed, 4096, /*queue_empty=*/false);
    if (credit > 0) ++frames, returned += credit;
  }
  EXPECT_EQ(frames, 10);
  EXPECT_EQ(returned + owed, 10 * kWriteCreditBatch);
  EXPECT_EQ(owed, 0u);
}

INSTANTIATE_TEST_SUITE_P(Handlers, GrpcServe, ::testing::Values(ServerOptions::kAutoWorkerThreads, 0),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == 0 ? std::string("Inline") : std::string("OnWorkers");
                         });

}  // namespace
}  // namespace zcrpc
