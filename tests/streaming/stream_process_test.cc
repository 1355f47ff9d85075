// Streams across processes (tests/streaming/stream_server.cc serves
// grpc.testing.TestService): a server killed mid-stream, and a writer
// pushing 1 GiB into a reader that consumes slowly, with both processes'
// peak RSS bounded by the flow-control window, not by the bytes sent.
#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/e2e/server_process.h"
#include "grpc/testing/test.zcrpc.h"
#include "zcrpc/zcrpc.h"

namespace zcrpc {
namespace {

using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;
using grpc::testing::TestService;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

std::string ServerUri(const std::string& transport) {
  if (transport == "tcp") return "tcp://127.0.0.1:0";
  return "shm://stream-process-" + std::to_string(::getpid());
}

// Peak resident set of process `pid`, in MiB (VmHWM).
double PeakRssMib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

class StreamProcess : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    server_ = std::make_unique<testing::ServerProcess>(ZCRPC_STREAM_SERVER,
                                                       std::vector<std::string>{"--listen", ServerUri(GetParam())});
    ASSERT_FALSE(server_->uri().empty()) << "the stream server did not start";
    auto channel = Channel::Create(server_->uri());
    ASSERT_TRUE(channel.ok()) << channel.status();
    stub_ = TestService::NewStub(*channel);
  }

  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<TestService::Stub> stub_;
};

TEST_P(StreamProcess, AServerKilledMidStreamEndsItUnavailable) {
  ClientContext ctx;
  ctx.set_timeout(std::chrono::seconds(30));
  auto stream = stub_->FullDuplexCall(&ctx);
  StreamingOutputCallRequest request;
  request.add_response_parameters()->set_size(100);
  ASSERT_TRUE(stream->Write(request));
  StreamingOutputCallResponse response;
  ASSERT_TRUE(stream->Read(&response));

  server_->Kill(SIGKILL);
  EXPECT_FALSE(stream->Read(&response));
  Status status = stream->Finish();
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status;
}

TEST_P(StreamProcess, OneGibibyteIntoASlowReaderKeepsBothSidesSmall) {
  // The server writes 1,024 messages of 1 MiB as fast as the window lets
  // it; this side reads them slowly. Without flow control one side would
  // hold the gibibyte.
  constexpr int kMessages = 1024;
  constexpr int kSize = 1 << 20;
  StreamingOutputCallRequest request;
  for (int i = 0; i < kMessages; ++i) request.add_response_parameters()->set_size(kSize);
  ClientContext ctx;
  ctx.set_timeout(std::chrono::minutes(5));
  if (const char* window = std::getenv("ZCRPC_TEST_STREAM_WINDOW")) {  // to see the test fail without flow control
    ctx.set_stream_window_bytes(std::stoull(window));
  }
  auto reader = stub_->StreamingOutputCall(&ctx, request);
  StreamingOutputCallResponse response;
  int64_t bytes = 0;
  int got = 0;
  while (reader->Read(&response)) {
    bytes += static_cast<int64_t>(response.payload().body().size());
    ++got;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // the slow reader: under 1 GB/s
  }
  const double server_peak = PeakRssMib(server_->pid());
  Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(got, kMessages);
  EXPECT_EQ(bytes, int64_t{kMessages} * kSize) << "every byte arrives";

  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  const double client_peak = static_cast<double>(self.ru_maxrss) / 1024.0;
  std::printf("peak RSS: client %.1f MiB, server %.1f MiB (1 GiB sent; reader window %llu bytes)\n", client_peak,
              server_peak, static_cast<unsigned long long>(ctx.stream_window_bytes() ? ctx.stream_window_bytes() : 1u << 20));
  if (kSanitized) {
    std::printf("not bounding RSS under a sanitizer: its shadow memory and quarantine are not the stream's\n");
    return;
  }
  EXPECT_LT(client_peak, 64.0);
  EXPECT_GT(server_peak, 0.0);
  EXPECT_LT(server_peak, 64.0);
}

INSTANTIATE_TEST_SUITE_P(Transports, StreamProcess, ::testing::Values("tcp", "shm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace zcrpc
