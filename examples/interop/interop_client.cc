// The cases of gRPC's public interop test descriptions
// (doc/interop-test-descriptions.md in gRPC's repository), run with zcrpc's
// generated stubs against any grpc.testing.TestService: a stock gRPC
// server over grpc://, or a zcrpc server over any transport.
//
//   interop_client --server_host=127.0.0.1 --server_port=50051 --test_case=all
//   interop_client --target=shm://interop-7 --test_case=ping_pong
//
// Prints "PASS case" or "FAIL case: why" per case; exits 1 if any failed.
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "examples/interop/case_runner.h"
#include "grpc/testing/test.zcrpc.h"

ABSL_FLAG(std::string, server_host, "127.0.0.1", "the server's host (loopback only)");
ABSL_FLAG(int, server_port, 0, "the server's gRPC port");
ABSL_FLAG(std::string, target, "", "a zcrpc URI instead of grpc://server_host:server_port");
ABSL_FLAG(std::string, test_case, "all", "one case, or all");

namespace {

using namespace grpc::testing;
using zcrpc::ClientContext;
using zcrpc::Status;
using zcrpc::StatusCode;

using zcrpc::interop::Verdict;

std::string Describe(const Status& status) { return status.ToString(); }

std::string FindMetadata(const zcrpc::Metadata& md, std::string_view key) {
  for (const auto& [k, v] : md) {
    if (k == key) return v;
  }
  return "<missing>";
}

class Cases {
 public:
  explicit Cases(std::shared_ptr<zcrpc::Channel> channel)
      : channel_(channel), stub_(TestService::NewStub(std::move(channel))) {}

  Verdict EmptyUnary() {
    ClientContext ctx;
    Empty response;
    Status s = stub_->EmptyCall(&ctx, Empty(), &response);
    return s.ok() ? "" : Describe(s);
  }

  Verdict LargeUnary() {
    ClientContext ctx;
    SimpleRequest request;
    request.set_response_size(314159);
    request.mutable_payload()->set_body(std::string(271828, '\0'));
    SimpleResponse response;
    Status s = stub_->UnaryCall(&ctx, request, &response);
    if (!s.ok()) return Describe(s);
    if (response.payload().body().size() != 314159) return absl::StrCat("got ", response.payload().body().size(), " bytes");
    return "";
  }

  Verdict ClientStreaming() {
    ClientContext ctx;
    StreamingInputCallResponse response;
    auto writer = stub_->StreamingInputCall(&ctx, &response);
    for (int size : {27182, 8, 1828, 45904}) {
      StreamingInputCallRequest request;
      request.mutable_payload()->set_body(std::string(static_cast<size_t>(size), '\0'));
      if (!writer->Write(request)) return "a write failed";
    }
    writer->WritesDone();
    Status s = writer->Finish();
    if (!s.ok()) return Describe(s);
    if (response.aggregated_payload_size() != 74922) return absl::StrCat("aggregated ", response.aggregated_payload_size());
    return "";
  }

  Verdict ServerStreaming() {
    ClientContext ctx;
    StreamingOutputCallRequest request;
    for (int size : {31415, 9, 2653, 58979}) request.add_response_parameters()->set_size(size);
    auto reader = stub_->StreamingOutputCall(&ctx, request);
    StreamingOutputCallResponse response;
    for (int size : {31415, 9, 2653, 58979}) {
      if (!reader->Read(&response)) return "fewer responses than asked for";
      if (response.payload().body().size() != static_cast<size_t>(size)) return "a response of the wrong size";
    }
    if (reader->Read(&response)) return "more responses than asked for";
    Status s = reader->Finish();
    return s.ok() ? "" : Describe(s);
  }

  Verdict PingPong() {
    ClientContext ctx;
    auto stream = stub_->FullDuplexCall(&ctx);
    const int request_sizes[] = {27182, 8, 1828, 45904};
    const int response_sizes[] = {31415, 9, 2653, 58979};
    for (int i = 0; i < 4; ++i) {
      StreamingOutputCallRequest request;
      request.add_response_parameters()->set_size(response_sizes[i]);
      request.mutable_payload()->set_body(std::string(static_cast<size_t>(request_sizes[i]), '\0'));
      if (!stream->Write(request)) return "a write failed";
      StreamingOutputCallResponse response;
      if (!stream->Read(&response)) return "a response is missing";
      if (response.payload().body().size() != static_cast<size_t>(response_sizes[i])) return "wrong size";
    }
    stream->WritesDone();
    StreamingOutputCallResponse extra;
    if (stream->Read(&extra)) return "a response too many";
    Status s = stream->Finish();
    return s.ok() ? "" : Describe(s);
  }

  Verdict EmptyStream() {
    ClientContext ctx;
    auto stream = stub_->FullDuplexCall(&ctx);
    stream->WritesDone();
    StreamingOutputCallResponse response;
    if (stream->Read(&response)) return "a response to nothing";
    Status s = stream->Finish();
    return s.ok() ? "" : Describe(s);
  }

  Verdict TimeoutOnSleepingServer() {
    ClientContext ctx;
    ctx.set_timeout(std::chrono::milliseconds(1));
    auto stream = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallRequest request;
    request.mutable_payload()->set_body(std::string(27182, '\0'));
    (void)stream->Write(request);  // may fail: the deadline may have passed
    // Wait for the end without closing the writes: the server waits for
    // more, so only the deadline can end the call.
    StreamingOutputCallResponse response;
    while (stream->Read(&response)) {
    }
    Status s = stream->Finish();
    return s.code() == StatusCode::kDeadlineExceeded ? "" : Describe(s);
  }

  Verdict CancelAfterBegin() {
    ClientContext ctx;
    StreamingInputCallResponse response;
    auto writer = stub_->StreamingInputCall(&ctx, &response);
    ctx.TryCancel();
    Status s = writer->Finish();
    return s.code() == StatusCode::kCancelled ? "" : Describe(s);
  }

  Verdict CancelAfterFirstResponse() {
    ClientContext ctx;
    auto stream = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallRequest request;
    request.add_response_parameters()->set_size(31415);
    request.mutable_payload()->set_body(std::string(27182, '\0'));
    if (!stream->Write(request)) return "the write failed";
    StreamingOutputCallResponse response;
    if (!stream->Read(&response)) return "no first response";
    ctx.TryCancel();
    Status s = stream->Finish();
    return s.code() == StatusCode::kCancelled ? "" : Describe(s);
  }

  Verdict CustomMetadata() {
    const std::string initial = "test_initial_metadata_value";
    const std::string trailing("\x0a\x0b\x0a\x0b\x0a\x0b", 6);
    auto check = [&](const ClientContext& ctx) -> Verdict {
      if (FindMetadata(ctx.server_initial_metadata(), "x-grpc-test-echo-initial") != initial) {
        return "x-grpc-test-echo-initial was not echoed";
      }
      if (FindMetadata(ctx.server_metadata(), "x-grpc-test-echo-trailing-bin") != trailing) {
        return "x-grpc-test-echo-trailing-bin was not echoed";
      }
      return "";
    };
    {
      ClientContext ctx;
      (void)ctx.AddMetadata("x-grpc-test-echo-initial", initial);
      (void)ctx.AddMetadata("x-grpc-test-echo-trailing-bin", trailing);
      SimpleRequest request;
      request.set_response_size(314159);
      request.mutable_payload()->set_body(std::string(271828, '\0'));
      SimpleResponse response;
      Status s = stub_->UnaryCall(&ctx, request, &response);
      if (!s.ok()) return Describe(s);
      if (Verdict v = check(ctx); !v.empty()) return "unary: " + v;
    }
    ClientContext ctx;
    (void)ctx.AddMetadata("x-grpc-test-echo-initial", initial);
    (void)ctx.AddMetadata("x-grpc-test-echo-trailing-bin", trailing);
    auto stream = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallRequest request;
    request.add_response_parameters()->set_size(314159);
    request.mutable_payload()->set_body(std::string(271828, '\0'));
    if (!stream->Write(request)) return "the write failed";
    StreamingOutputCallResponse response;
    if (!stream->Read(&response)) return "no response";
    stream->WritesDone();
    Status s = stream->Finish();
    if (!s.ok()) return Describe(s);
    if (Verdict v = check(ctx); !v.empty()) return "full duplex: " + v;
    return "";
  }

  Verdict StatusCodeAndMessage() { return AskedForStatus("test status message"); }
  Verdict SpecialStatusMessage() {
    return AskedForStatus("\t\ntest with whitespace\r\nand Unicode BMP \xe2\x98\xba and non-BMP \xf0\x9f\x98\x88\t\n");
  }

  Verdict UnimplementedMethod() {
    ClientContext ctx;
    Empty response;
    Status s = stub_->UnimplementedCall(&ctx, Empty(), &response);
    return s.code() == StatusCode::kUnimplemented ? "" : Describe(s);
  }

  Verdict UnimplementedService() {
    static constexpr zcrpc::MethodDescriptor kMethod{"/grpc.testing.UnimplementedService/UnimplementedCall",
                                                     zcrpc::MethodKind::kUnary};
    ClientContext ctx;
    Empty response;
    Status s = channel_->CallUnary(kMethod, &ctx, Empty(), &response);
    return s.code() == StatusCode::kUnimplemented ? "" : Describe(s);
  }

 private:
  Verdict AskedForStatus(const std::string& message) {
    {
      ClientContext ctx;
      SimpleRequest request;
      request.mutable_response_status()->set_code(2);
      request.mutable_response_status()->set_message(message);
      SimpleResponse response;
      Status s = stub_->UnaryCall(&ctx, request, &response);
      if (s.code() != StatusCode::kUnknown || s.message() != message) return "unary: " + Describe(s);
    }
    ClientContext ctx;
    auto stream = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallRequest request;
    request.mutable_response_status()->set_code(2);
    request.mutable_response_status()->set_message(message);
    (void)stream->Write(request);
    stream->WritesDone();
    Status s = stream->Finish();
    if (s.code() != StatusCode::kUnknown || s.message() != message) return "full duplex: " + Describe(s);
    return "";
  }

  std::shared_ptr<zcrpc::Channel> channel_;
  std::unique_ptr<TestService::Stub> stub_;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string target = absl::GetFlag(FLAGS_target);
  if (target.empty()) {
    target = absl::StrCat("grpc://", absl::GetFlag(FLAGS_server_host), ":", absl::GetFlag(FLAGS_server_port));
  }
  auto channel = zcrpc::Channel::Create(target);
  if (!channel.ok()) {
    std::fprintf(stderr, "interop_client: %s\n", channel.status().ToString().c_str());
    return 1;
  }
  Cases cases(*channel);
  const std::vector<zcrpc::interop::Case> all = {
      {"empty_unary", [&] { return cases.EmptyUnary(); }},
      {"large_unary", [&] { return cases.LargeUnary(); }},
      {"client_streaming", [&] { return cases.ClientStreaming(); }},
      {"server_streaming", [&] { return cases.ServerStreaming(); }},
      {"ping_pong", [&] { return cases.PingPong(); }},
      {"empty_stream", [&] { return cases.EmptyStream(); }},
      {"timeout_on_sleeping_server", [&] { return cases.TimeoutOnSleepingServer(); }},
      {"cancel_after_begin", [&] { return cases.CancelAfterBegin(); }},
      {"cancel_after_first_response", [&] { return cases.CancelAfterFirstResponse(); }},
      {"custom_metadata", [&] { return cases.CustomMetadata(); }},
      {"status_code_and_message", [&] { return cases.StatusCodeAndMessage(); }},
      {"special_status_message", [&] { return cases.SpecialStatusMessage(); }},
      {"unimplemented_method", [&] { return cases.UnimplementedMethod(); }},
      {"unimplemented_service", [&] { return cases.UnimplementedService(); }},
  };
  return zcrpc::interop::RunCases("interop_client", all, absl::GetFlag(FLAGS_test_case));
}
