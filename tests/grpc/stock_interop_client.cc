// A stock gRPC C++ client (libgrpc++, gRPC's own generated TestService stub,
// the sync API) running the cases of gRPC's public interop test descriptions
// against any grpc.testing.TestService server: it shows that a zcrpc server
// behind grpc:// looks to gRPC's own C++ client exactly as a gRPC server does.
// Run against the stock server too, it shows that the cases themselves are
// right.
//
//   stock_interop_client --server_port=50051 [--test_case=all]
//
// Prints "PASS case" or "FAIL case: why" per case; exits 1 if any failed.
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "examples/interop/case_runner.h"
#include "grpc/testing/test.grpc.pb.h"

ABSL_FLAG(std::string, server_host, "127.0.0.1", "the server's host (loopback only)");
ABSL_FLAG(int, server_port, 0, "the server's gRPC port");
ABSL_FLAG(std::string, test_case, "all", "one case, or all");

namespace {

using grpc::ClientContext;
using grpc::Status;
using grpc::StatusCode;
using namespace grpc::testing;

using zcrpc::interop::Verdict;

std::string Describe(const Status& status) {
  return absl::StrCat("code ", static_cast<int>(status.error_code()), ": ", status.error_message());
}

std::string Find(const std::multimap<grpc::string_ref, grpc::string_ref>& md, const std::string& key) {
  auto it = md.find(key);
  return it == md.end() ? "<missing>" : std::string(it->second.data(), it->second.size());
}

// Every call gets a deadline, so a server that never answers fails the case
// instead of hanging the test.
void Bound(ClientContext* ctx) { ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20)); }

class Cases {
 public:
  explicit Cases(const std::shared_ptr<grpc::Channel>& channel)
      : stub_(TestService::NewStub(channel)), unimplemented_(UnimplementedService::NewStub(channel)) {}

  Verdict EmptyUnary() {
    ClientContext ctx;
    Bound(&ctx);
    Empty response;
    Status s = stub_->EmptyCall(&ctx, Empty(), &response);
    return s.ok() ? "" : Describe(s);
  }

  Verdict LargeUnary() {
    ClientContext ctx;
    Bound(&ctx);
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
    Bound(&ctx);
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
    Bound(&ctx);
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
    Bound(&ctx);
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
    Bound(&ctx);
    auto stream = stub_->FullDuplexCall(&ctx);
    stream->WritesDone();
    StreamingOutputCallResponse response;
    if (stream->Read(&response)) return "a response to nothing";
    Status s = stream->Finish();
    return s.ok() ? "" : Describe(s);
  }

  Verdict TimeoutOnSleepingServer() {
    ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1));
    auto stream = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallRequest request;
    request.mutable_payload()->set_body(std::string(27182, '\0'));
    (void)stream->Write(request);  // may fail: the deadline may have passed
    StreamingOutputCallResponse response;
    while (stream->Read(&response)) {
    }
    Status s = stream->Finish();
    return s.error_code() == StatusCode::DEADLINE_EXCEEDED ? "" : Describe(s);
  }

  Verdict CancelAfterBegin() {
    ClientContext ctx;
    Bound(&ctx);
    StreamingInputCallResponse response;
    auto writer = stub_->StreamingInputCall(&ctx, &response);
    ctx.TryCancel();
    Status s = writer->Finish();
    return s.error_code() == StatusCode::CANCELLED ? "" : Describe(s);
  }

  Verdict CancelAfterFirstResponse() {
    ClientContext ctx;
    Bound(&ctx);
    auto stream = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallRequest request;
    request.add_response_parameters()->set_size(31415);
    request.mutable_payload()->set_body(std::string(27182, '\0'));
    if (!stream->Write(request)) return "the write failed";
    StreamingOutputCallResponse response;
    if (!stream->Read(&response)) return "no first response";
    ctx.TryCancel();
    Status s = stream->Finish();
    return s.error_code() == StatusCode::CANCELLED ? "" : Describe(s);
  }

  Verdict CustomMetadata() {
    const std::string initial = "test_initial_metadata_value";
    const std::string trailing("\x0a\x0b\x0a\x0b\x0a\x0b", 6);
    auto check = [&](const ClientContext& ctx) -> Verdict {
      if (Find(ctx.GetServerInitialMetadata(), "x-grpc-test-echo-initial") != initial) {
        return "x-grpc-test-echo-initial was not echoed";
      }
      if (Find(ctx.GetServerTrailingMetadata(), "x-grpc-test-echo-trailing-bin") != trailing) {
        return "x-grpc-test-echo-trailing-bin was not echoed";
      }
      return "";
    };
    {
      ClientContext ctx;
      Bound(&ctx);
      ctx.AddMetadata("x-grpc-test-echo-initial", initial);
      ctx.AddMetadata("x-grpc-test-echo-trailing-bin", trailing);
      SimpleRequest request;
      request.set_response_size(314159);
      request.mutable_payload()->set_body(std::string(271828, '\0'));
      SimpleResponse response;
      Status s = stub_->UnaryCall(&ctx, request, &response);
      if (!s.ok()) return Describe(s);
      if (Verdict v = check(ctx); !v.empty()) return "unary: " + v;
    }
    ClientContext ctx;
    Bound(&ctx);
    ctx.AddMetadata("x-grpc-test-echo-initial", initial);
    ctx.AddMetadata("x-grpc-test-echo-trailing-bin", trailing);
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
    Bound(&ctx);
    Empty response;
    Status s = stub_->UnimplementedCall(&ctx, Empty(), &response);
    return s.error_code() == StatusCode::UNIMPLEMENTED ? "" : Describe(s);
  }

  Verdict UnimplementedService() {
    ClientContext ctx;
    Bound(&ctx);
    Empty response;
    Status s = unimplemented_->UnimplementedCall(&ctx, Empty(), &response);
    return s.error_code() == StatusCode::UNIMPLEMENTED ? "" : Describe(s);
  }

 private:
  Verdict AskedForStatus(const std::string& message) {
    {
      ClientContext ctx;
      Bound(&ctx);
      SimpleRequest request;
      request.mutable_response_status()->set_code(2);
      request.mutable_response_status()->set_message(message);
      SimpleResponse response;
      Status s = stub_->UnaryCall(&ctx, request, &response);
      if (s.error_code() != StatusCode::UNKNOWN || s.error_message() != message) return "unary: " + Describe(s);
    }
    ClientContext ctx;
    Bound(&ctx);
    auto stream = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallRequest request;
    request.mutable_response_status()->set_code(2);
    request.mutable_response_status()->set_message(message);
    (void)stream->Write(request);
    stream->WritesDone();
    Status s = stream->Finish();
    if (s.error_code() != StatusCode::UNKNOWN || s.error_message() != message) return "full duplex: " + Describe(s);
    return "";
  }

  std::unique_ptr<TestService::Stub> stub_;
  std::unique_ptr<UnimplementedService::Stub> unimplemented_;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string target = absl::StrCat(absl::GetFlag(FLAGS_server_host), ":", absl::GetFlag(FLAGS_server_port));
  Cases cases(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
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
  return zcrpc::interop::RunCases("stock_interop_client", all, absl::GetFlag(FLAGS_test_case));
}
