// A stock gRPC C++ server (libgrpc++, gRPC's own generated TestService, the
// sync API): what zcrpc's grpc:// channel is tested against. It behaves as
// gRPC's interop server does for the cases the tests use: payload sizes,
// response_status, response intervals, x-grpc-test-echo-initial echoed as
// initial metadata and x-grpc-test-echo-trailing-bin as trailing metadata,
// UnimplementedCall unimplemented. Binds 127.0.0.1 on the port given (0: any),
// prints "LISTENING grpc://127.0.0.1:PORT", serves until killed.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "grpc/testing/test.grpc.pb.h"

namespace {

using grpc::ServerContext;
using grpc::Status;
using namespace grpc::testing;

void Echo(ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("x-grpc-test-echo-initial"); it != md.end()) {
    ctx->AddInitialMetadata("x-grpc-test-echo-initial", std::string(it->second.data(), it->second.size()));
  }
  if (auto it = md.find("x-grpc-test-echo-trailing-bin"); it != md.end()) {
    ctx->AddTrailingMetadata("x-grpc-test-echo-trailing-bin", std::string(it->second.data(), it->second.size()));
  }
}

Status Requested(const EchoStatus& status) {
  return Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

template <typename Writer>
bool WriteOne(const ResponseParameters& params, Writer* writer) {
  if (params.interval_us() > 0) std::this_thread::sleep_for(std::chrono::microseconds(params.interval_us()));
  StreamingOutputCallResponse response;
  response.mutable_payload()->set_body(std::string(static_cast<size_t>(params.size()), '\0'));
  return writer->Write(response);
}

class Service final : public TestService::Service {
  Status EmptyCall(ServerContext* ctx, const Empty*, Empty*) override {
    Echo(ctx);
    return Status::OK;
  }
  Status UnaryCall(ServerContext* ctx, const SimpleRequest* request, SimpleResponse* response) override {
    Echo(ctx);
    if (request->response_status().code() != 0) return Requested(request->response_status());
    response->mutable_payload()->set_body(std::string(static_cast<size_t>(request->response_size()), '\0'));
    return Status::OK;
  }
  Status StreamingOutputCall(ServerContext* ctx, const StreamingOutputCallRequest* request,
                             grpc::ServerWriter<StreamingOutputCallResponse>* writer) override {
    Echo(ctx);
    for (const auto& params : request->response_parameters()) {
      if (!WriteOne(params, writer)) return Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    if (request->response_status().code() != 0) return Requested(request->response_status());
    return Status::OK;
  }
  Status StreamingInputCall(ServerContext* ctx, grpc::ServerReader<StreamingInputCallRequest>* reader,
                            StreamingInputCallResponse* response) override {
    Echo(ctx);
    StreamingInputCallRequest request;
    int total = 0;
    while (reader->Read(&request)) total += static_cast<int>(request.payload().body().size());
    response->set_aggregated_payload_size(total);
    return Status::OK;
  }
  Status FullDuplexCall(
      ServerContext* ctx,
      grpc::ServerReaderWriter<StreamingOutputCallResponse, StreamingOutputCallRequest>* stream) override {
    Echo(ctx);
    StreamingOutputCallRequest request;
    while (stream->Read(&request)) {
      if (request.response_status().code() != 0) return Requested(request.response_status());
      for (const auto& params : request.response_parameters()) {
        if (!WriteOne(params, stream)) return Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
    }
    return Status::OK;
  }
};

}  // namespace

int main(int argc, char** argv) {
  const int port = argc > 1 ? std::atoi(argv[1]) : 0;
  Service service;
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(), &bound);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound == 0) {
    std::fprintf(stderr, "stock_grpc_server: cannot listen on port %d\n", port);
    return 1;
  }
  std::printf("LISTENING grpc://127.0.0.1:%d\n", bound);
  std::fflush(stdout);
  server->Wait();
  return 0;
}
