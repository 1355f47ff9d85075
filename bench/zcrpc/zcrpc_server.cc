// zcrpc's side of the benchmark: BenchmarkService.UnaryCall, StreamingCall
// and StreamingFromServer (the shared work in bench/common/work.h) plus
// BenchControl, until SIGTERM. --api blocking (the default) serves them
// with blocking handlers: each stream's handler runs on a thread of its own
// for the stream's life (the runtime's rule for streams). --api reactor
// serves them with reactors (zcrpc/rpc/reactor.h): no thread per stream,
// reactions on the thread that brought the message.
//   bench_zcrpc_server --listen tcp://127.0.0.1:0 [--api reactor]
// Prints "LISTENING <uri>" once it accepts calls.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/common/work.h"
#include "bench_control.zcrpc.h"
#include "grpc/testing/benchmark_service.zcrpc.h"

ABSL_FLAG(std::string, listen, "tcp://127.0.0.1:0", "URI to serve on");
ABSL_FLAG(std::string, api, "blocking", "blocking | reactor: the handler API serving BenchmarkService");
ABSL_FLAG(int, workers, 0, "handler threads (0: run handlers on the transport's poller)");
ABSL_FLAG(uint64_t, stream_window_bytes, 0, "the server's stream receive window (0: zcrpc's default)");

namespace {

class BenchmarkServiceImpl final : public grpc::testing::BenchmarkService::Service {
 public:
  zcrpc::Status UnaryCall(zcrpc::ServerContext* ctx, const grpc::testing::SimpleRequest* request,
                          grpc::testing::SimpleResponse* response) override {
    return ServeUnary(ctx, *request, response);
  }

  // The unary work, attachments included; the reactor API's UnaryCall
  // does the same.
  static zcrpc::Status ServeUnary(zcrpc::ServerContext* ctx, const grpc::testing::SimpleRequest& request,
                                  grpc::testing::SimpleResponse* response) {
    zcrpc::bench::ServeUnaryCall(request, response);
    // bulk-attach: a request with an attachment that asks for a reply body
    // gets the attachment's checksum as that body, and no attachment back.
    if (request.response_size() > 0 && ctx->request_attachments().size() == 1) {
      const zcrpc::Buffer& attachment = ctx->request_attachments()[0];
      zcrpc::bench::FillReplyBody(response->mutable_payload()->mutable_body(),
                                  static_cast<size_t>(request.response_size()),
                                  zcrpc::bench::Checksum(attachment.data(), attachment.size()));
      return zcrpc::Status();
    }
    // unary-attach: the same work on attachments. Each is checksummed, the
    // checksum written into its first 8 bytes, and the buffer itself sent
    // back (zero copy where the transport allows).
    for (zcrpc::Buffer& attachment : ctx->request_attachments()) {
      const uint64_t sum = zcrpc::bench::Checksum(attachment.data(), attachment.size());
      if (attachment.size() >= 8) std::memcpy(attachment.data(), &sum, 8);
      ctx->AddResponseAttachment(std::move(attachment));
    }
    return zcrpc::Status();
  }

  // stream: each request answered as UnaryCall answers it, until the client
  // closes its writes.
  zcrpc::Status StreamingCall(
      zcrpc::ServerContext*,
      zcrpc::ServerReaderWriter<grpc::testing::SimpleResponse, grpc::testing::SimpleRequest>* stream) override {
    grpc::testing::SimpleRequest request;
    grpc::testing::SimpleResponse response;
    while (stream->Read(&request)) {
      zcrpc::bench::ServeUnaryCall(request, &response);
      if (!stream->Write(response)) break;
    }
    return zcrpc::Status();
  }

  // stream-throughput: the same reply as fast as the client's window lets
  // it go, until the client cancels (then Write fails).
  zcrpc::Status StreamingFromServer(zcrpc::ServerContext*, const grpc::testing::SimpleRequest* request,
                                    zcrpc::ServerWriter<grpc::testing::SimpleResponse>* writer) override {
    grpc::testing::SimpleResponse response;
    zcrpc::bench::ServeUnaryCall(*request, &response);
    while (writer->Write(response)) {
    }
    return zcrpc::Status();
  }
};

// The same service with reactors.
class BenchmarkReactorImpl final : public grpc::testing::BenchmarkService::CallbackService {
 public:
  zcrpc::ServerUnaryReactor* UnaryCall(zcrpc::ServerContext* ctx, const grpc::testing::SimpleRequest* request,
                                       grpc::testing::SimpleResponse* response) override {
    auto* reactor = new Answered();
    reactor->Finish(BenchmarkServiceImpl::ServeUnary(ctx, *request, response));
    return reactor;
  }

  zcrpc::ServerBidiReactor<grpc::testing::SimpleRequest, grpc::testing::SimpleResponse>* StreamingCall(
      zcrpc::ServerContext*) override {
    return new PingPong();
  }

  zcrpc::ServerWriteReactor<grpc::testing::SimpleResponse>* StreamingFromServer(
      zcrpc::ServerContext*, const grpc::testing::SimpleRequest* request) override {
    return new Flood(*request);
  }

 private:
  class Answered final : public zcrpc::ServerUnaryReactor {
    void OnDone() override { delete this; }
  };

  // stream: read one request, write its answer, read the next, until the
  // client closes its writes.
  class PingPong final : public zcrpc::ServerBidiReactor<grpc::testing::SimpleRequest, grpc::testing::SimpleResponse> {
   public:
    PingPong() { StartRead(&request_); }
    void OnReadDone(bool ok) override {
      if (!ok) return Finish(zcrpc::Status());
      zcrpc::bench::ServeUnaryCall(request_, &response_);
      StartWrite(&response_);
    }
    void OnWriteDone(bool ok) override {
      if (!ok) return Finish(zcrpc::Status());
      StartRead(&request_);
    }
    void OnDone() override { delete this; }

   private:
    grpc::testing::SimpleRequest request_;
    grpc::testing::SimpleResponse response_;
  };

  // stream-throughput: the one reply, written again and again until a
  // write fails (the client cancelled).
  class Flood final : public zcrpc::ServerWriteReactor<grpc::testing::SimpleResponse> {
   public:
    explicit Flood(const grpc::testing::SimpleRequest& request) {
      zcrpc::bench::ServeUnaryCall(request, &response_);
      StartWrite(&response_);
    }
    void OnWriteDone(bool ok) override {
      if (!ok) return Finish(zcrpc::Status());
      StartWrite(&response_);
    }
    void OnDone() override { delete this; }

   private:
    grpc::testing::SimpleResponse response_;
  };
};

class BenchControlImpl final : public zcrpc::bench::BenchControl::Service {
 public:
  zcrpc::Status GetCopyStats(zcrpc::ServerContext*, const zcrpc::bench::CopyStatsRequest*,
                             zcrpc::bench::CopyStatsReply* reply) override {
    reply->set_bytes_copied(zcrpc::CopyStats::TotalBytesCopied());
    return zcrpc::Status();
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

  zcrpc::ServerOptions options;
  options.worker_threads = absl::GetFlag(FLAGS_workers);
  if (const uint64_t window = absl::GetFlag(FLAGS_stream_window_bytes); window != 0) {
    options.stream_window_bytes = window;
  }
  zcrpc::Server server(options);
  BenchmarkServiceImpl blocking;
  BenchmarkReactorImpl reactors;
  BenchControlImpl control;
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "blocking" && api != "reactor") {
    std::fprintf(stderr, "bench_zcrpc_server: --api must be blocking or reactor, not '%s'\n", api.c_str());
    return 2;
  }
  auto bound = [&]() -> zcrpc::StatusOr<std::string> {
    if (api == "reactor") {
      ZCRPC_RETURN_IF_ERROR(server.RegisterService(&reactors));
    } else {
      ZCRPC_RETURN_IF_ERROR(server.RegisterService(&blocking));
    }
    ZCRPC_RETURN_IF_ERROR(server.RegisterService(&control));
    return server.AddListener(absl::GetFlag(FLAGS_listen));
  }();
  if (!bound.ok()) {
    std::fprintf(stderr, "bench_zcrpc_server: %s\n", bound.status().ToString().c_str());
    return 1;
  }
  std::printf("LISTENING %s\n", bound->c_str());
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  server.Shutdown();
  return 0;
}
