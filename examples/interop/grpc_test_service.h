// grpc.testing.TestService (Debian's grpc-proto, test.proto) served with
// zcrpc's generated stubs, behaving as gRPC's interop test server does:
// payloads of the sizes asked for, the status asked for, the echoed
// initial and trailing metadata. UnimplementedCall stays unimplemented.
#pragma once

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "grpc/testing/test.zcrpc.h"

namespace zcrpc::testing {

class GrpcTestService final : public grpc::testing::TestService::Service {
 public:
  Status EmptyCall(ServerContext*, const grpc::testing::Empty*, grpc::testing::Empty*) override { return Status(); }

  Status UnaryCall(ServerContext* ctx, const grpc::testing::SimpleRequest* request,
                   grpc::testing::SimpleResponse* response) override {
    EchoTrailing(ctx);
    if (request->response_status().code() != 0) return RequestedStatus(request->response_status());
    response->mutable_payload()->set_body(std::string(static_cast<size_t>(request->response_size()), '\0'));
    return Status();
  }

  Status CacheableUnaryCall(ServerContext* ctx, const grpc::testing::SimpleRequest* request,
                            grpc::testing::SimpleResponse* response) override {
    return UnaryCall(ctx, request, response);
  }

  Status StreamingOutputCall(ServerContext* ctx, const grpc::testing::StreamingOutputCallRequest* request,
                             ServerWriter<grpc::testing::StreamingOutputCallResponse>* writer) override {
    EchoTrailing(ctx);
    for (const auto& params : request->response_parameters()) {
      if (!WriteOne(params, writer)) return absl::CancelledError("the client went away");
    }
    if (request->response_status().code() != 0) return RequestedStatus(request->response_status());
    return Status();
  }

  Status StreamingInputCall(ServerContext* ctx, ServerReader<grpc::testing::StreamingInputCallRequest>* reader,
                            grpc::testing::StreamingInputCallResponse* response) override {
    EchoTrailing(ctx);
    grpc::testing::StreamingInputCallRequest request;
    int64_t total = 0;
    while (reader->Read(&request)) total += static_cast<int64_t>(request.payload().body().size());
    if (ctx->IsCancelled()) return absl::CancelledError("the client went away");
    response->set_aggregated_payload_size(static_cast<int32_t>(total));
    return Status();
  }

  Status FullDuplexCall(ServerContext* ctx,
                        ServerReaderWriter<grpc::testing::StreamingOutputCallResponse,
                                           grpc::testing::StreamingOutputCallRequest>* stream) override {
    EchoTrailing(ctx);
    grpc::testing::StreamingOutputCallRequest request;
    while (stream->Read(&request)) {
      if (request.response_status().code() != 0) return RequestedStatus(request.response_status());
      for (const auto& params : request.response_parameters()) {
        if (!WriteOne(params, stream)) return absl::CancelledError("the client went away");
      }
    }
    if (ctx->IsCancelled()) return absl::CancelledError("the client went away");
    return Status();
  }

  // Answers every request only once the client has closed its writes.
  Status HalfDuplexCall(ServerContext* ctx,
                        ServerReaderWriter<grpc::testing::StreamingOutputCallResponse,
                                           grpc::testing::StreamingOutputCallRequest>* stream) override {
    EchoTrailing(ctx);
    std::vector<grpc::testing::StreamingOutputCallRequest> requests;
    grpc::testing::StreamingOutputCallRequest request;
    while (stream->Read(&request)) requests.push_back(request);
    if (ctx->IsCancelled()) return absl::CancelledError("the client went away");
    for (const auto& r : requests) {
      for (const auto& params : r.response_parameters()) {
        if (!WriteOne(params, stream)) return absl::CancelledError("the client went away");
      }
    }
    return Status();
  }

 private:
  template <typename Writer>
  static bool WriteOne(const grpc::testing::ResponseParameters& params, Writer* writer) {
    if (params.interval_us() > 0) std::this_thread::sleep_for(std::chrono::microseconds(params.interval_us()));
    grpc::testing::StreamingOutputCallResponse response;
    response.mutable_payload()->set_body(std::string(static_cast<size_t>(params.size()), '\0'));
    return writer->Write(response);
  }

  static Status RequestedStatus(const grpc::testing::EchoStatus& status) {
    return Status(static_cast<StatusCode>(status.code()), status.message());
  }

  // gRPC's interop server echoes these keys as initial and trailing
  // metadata.
  static void EchoTrailing(ServerContext* ctx) {
    for (const auto& [key, value] : ctx->client_metadata()) {
      if (key == "x-grpc-test-echo-initial") (void)ctx->AddInitialMetadata(key, value);
      if (key == "x-grpc-test-echo-trailing-bin") (void)ctx->AddTrailingMetadata(key, value);
    }
  }
};

}  // namespace zcrpc::testing
