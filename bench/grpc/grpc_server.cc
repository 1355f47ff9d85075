// Stock gRPC's side of the benchmark: BenchmarkService.UnaryCall,
// StreamingCall and StreamingFromServer with the same work as zcrpc's server
// (bench/common/work.h), until SIGTERM.
//   bench_grpc_server --listen 127.0.0.1:0 --api callback
// --api callback is what gRPC's performance guide recommends for C++
// servers; --api sync (thread pool) is kept so the driver can measure both
// and report the faster (docs/benchmarks.md).
// Prints "LISTENING <host:port>" once it accepts calls.
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/common/work.h"
#include "grpc/testing/benchmark_service.grpc.pb.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "host:port to serve on");
ABSL_FLAG(std::string, api, "callback", "callback | sync");

namespace {

using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;

// stream: read a request, answer it as UnaryCall does, read the next; one
// operation outstanding at a time, so Finish comes once.
class PingPongReactor final : public grpc::ServerBidiReactor<SimpleRequest, SimpleResponse> {
 public:
  PingPongReactor() { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its writes (or cancelled)
      Finish(grpc::Status::OK);
      return;
    }
    zcrpc::bench::ServeUnaryCall(request_, &response_);
    StartWrite(&response_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    StartRead(&request_);
  }
  void OnDone() override { delete this; }

 private:
  SimpleRequest request_;
  SimpleResponse response_;
};

// stream-throughput: the same reply, each write started as the last one
// completes, until a write fails (the client cancelled).
class FloodReactor final : public grpc::ServerWriteReactor<SimpleResponse> {
 public:
  explicit FloodReactor(const SimpleRequest& request) {
    zcrpc::bench::ServeUnaryCall(request, &response_);
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (ok) StartWrite(&response_);
    else Finish(grpc::Status::OK);
  }
  void OnDone() override { delete this; }

 private:
  SimpleResponse response_;
};

class CallbackImpl final : public grpc::testing::BenchmarkService::CallbackService {
  grpc::ServerUnaryReactor* UnaryCall(grpc::CallbackServerContext* context, const SimpleRequest* request,
                                      SimpleResponse* response) override {
    zcrpc::bench::ServeUnaryCall(*request, response);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerBidiReactor<SimpleRequest, SimpleResponse>* StreamingCall(grpc::CallbackServerContext*) override {
    return new PingPongReactor();
  }

  grpc::ServerWriteReactor<SimpleResponse>* StreamingFromServer(grpc::CallbackServerContext*,
                                                                const SimpleRequest* request) override {
    return new FloodReactor(*request);
  }
};

class SyncImpl final : public grpc::testing::BenchmarkService::Service {
  grpc::Status UnaryCall(grpc::ServerContext*, const SimpleRequest* request, SimpleResponse* response) override {
    zcrpc::bench::ServeUnaryCall(*request, response);
    return grpc::Status::OK;
  }

  grpc::Status StreamingCall(grpc::ServerContext*,
                             grpc::ServerReaderWriter<SimpleResponse, SimpleRequest>* stream) override {
    SimpleRequest request;
    SimpleResponse response;
    while (stream->Read(&request)) {
      zcrpc::bench::ServeUnaryCall(request, &response);
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status StreamingFromServer(grpc::ServerContext*, const SimpleRequest* request,
                                   grpc::ServerWriter<SimpleResponse>* writer) override {
    SimpleResponse response;
    zcrpc::bench::ServeUnaryCall(*request, &response);
    while (writer->Write(response)) {
    }
    return grpc::Status::OK;
  }
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string api = absl::GetFlag(FLAGS_api);
  std::unique_ptr<grpc::Service> service;
  if (api == "callback") service = std::make_unique<CallbackImpl>();
  else if (api == "sync") service = std::make_unique<SyncImpl>();
  else {
    std::fprintf(stderr, "bench_grpc_server: unknown --api %s (callback | sync)\n", api.c_str());
    return 2;
  }

  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service.get());
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "bench_grpc_server: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  const std::string host = listen.substr(0, listen.rfind(':'));
  std::printf("LISTENING %s:%d\n", host.c_str(), port);
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  server->Shutdown();
  // Exit without gRPC's library teardown: after a 1 MiB stream-throughput
  // row, grpc_shutdown() (from ~ServerBuilder) sometimes joins an executor
  // thread that sits in a 10 s epoll_wait, and the driver kills the server
  // after 5 s of that, for nothing: every figure was taken already.
  std::fflush(nullptr);
  std::_Exit(0);
}
