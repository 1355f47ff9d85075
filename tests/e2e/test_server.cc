// The server half of the end-to-end tests, run as its own process.
//   test_server --listen URI [--workers N] [--max-body-bytes N]
// Prints "LISTENING <bound uri>" once it accepts calls; stops on SIGTERM.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "test_service.zcrpc.h"
#include "tests/e2e/serve_until_signal.h"

namespace {

using zcrpc::test::EchoMessage;

class TestServiceImpl final : public zcrpc::test::TestService::Service {
 public:
  zcrpc::Status Echo(zcrpc::ServerContext* ctx, const EchoMessage* request, EchoMessage* reply) override {
    for (const auto& [key, value] : ctx->client_metadata()) {
      ZCRPC_RETURN_IF_ERROR(ctx->AddTrailingMetadata("echo-" + key, value));
    }
    reply->set_payload(request->payload());
    reply->set_id(request->id());
    for (zcrpc::Buffer& attachment : ctx->request_attachments()) ctx->AddResponseAttachment(std::move(attachment));
    return zcrpc::Status();
  }

  zcrpc::Status Sleep(zcrpc::ServerContext* ctx, const zcrpc::test::SleepRequest* request,
                      EchoMessage*) override {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(request->ms());
    while (std::chrono::steady_clock::now() < until) {
      if (ctx->IsCancelled()) {
        cancels_seen_.fetch_add(1);
        return absl::CancelledError("cancelled while sleeping");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return zcrpc::Status();
  }

  zcrpc::Status Stats(zcrpc::ServerContext*, const zcrpc::test::Empty*, zcrpc::test::StatsReply* reply) override {
    reply->set_cancels_seen(cancels_seen_.load());
    return zcrpc::Status();
  }

 private:
  std::atomic<uint64_t> cancels_seen_{0};
};

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "tcp://127.0.0.1:0";
  zcrpc::ServerOptions options;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--listen") == 0) listen = argv[i + 1];
    else if (std::strcmp(argv[i], "--workers") == 0) options.worker_threads = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--max-body-bytes") == 0) options.limits.max_body_bytes = std::strtoull(argv[i + 1], nullptr, 10);
  }
  TestServiceImpl service;
  return zcrpc::testing::ServeUntilSignal("test_server", service, options, listen);
}
