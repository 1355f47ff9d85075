// Stock gRPC's client side of the benchmark: measures one workload against
// a running bench_grpc_server and prints one RESULT line (harness.h).
//   bench_grpc_client --target 127.0.0.1:PORT --api sync --workload unary --payload_bytes 64
// One channel and one stub, reused for every call (gRPC's performance
// guide). --api sync blocks in the generated stub; --api callback uses the
// callback API and waits on a condition variable. The rate workload always
// uses the callback API.
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "bench/common/harness.h"
#include "bench/common/work.h"
#include "grpc/testing/benchmark_service.grpc.pb.h"

ABSL_FLAG(std::string, target, "", "host:port, as bench_grpc_server printed it");
ABSL_FLAG(std::string, api, "sync", "sync | callback (one call in flight)");

namespace {

using grpc::testing::BenchmarkService;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
namespace bench = zcrpc::bench;

std::string CheckReply(const grpc::Status& status, const SimpleResponse& response, const bench::Plan& plan,
                       uint64_t request_checksum) {
  if (!status.ok()) return "call failed: " + status.error_message() + " (code " + std::to_string(status.error_code()) + ")";
  return bench::CheckReplyBody(response, plan.reply_bytes(), request_checksum);
}

struct Slot {
  std::optional<grpc::ClientContext> context;
  SimpleResponse response;
};

}  // namespace

int main(int argc, char** argv) {
  const bench::Plan plan = bench::ParsePlan(argc, argv, "bench_grpc_client --target HOST:PORT [--api sync|callback] [harness flags]");
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "sync" && api != "callback") bench::FailRow("unknown --api " + api);

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    bench::FailRow("cannot connect to " + absl::GetFlag(FLAGS_target));
  }
  auto stub = BenchmarkService::NewStub(channel);

  SimpleRequest request;
  request.mutable_payload()->set_body(bench::MakePayload(plan.request_bytes()));
  request.set_response_size(static_cast<int32_t>(plan.reply_bytes()));
  const uint64_t request_checksum = bench::Checksum(request.payload().body());
  const bench::CopyCounter no_copy_counter;  // gRPC does not count its copies

  bench::Row row;
  if (plan.workload == bench::Workload::kRate) {
    std::vector<Slot> slots(static_cast<size_t>(plan.in_flight));
    bench::InFlightRunner* runner_ptr = nullptr;
    bench::InFlightRunner runner(plan, [&](int slot_index) {
      Slot& slot = slots[static_cast<size_t>(slot_index)];
      slot.context.emplace();
      stub->async()->UnaryCall(&*slot.context, &request, &slot.response, [&, slot_index](grpc::Status status) {
        Slot& done = slots[static_cast<size_t>(slot_index)];
        runner_ptr->Done(slot_index, CheckReply(status, done.response, plan, request_checksum));
      });
    });
    runner_ptr = &runner;
    row = runner.Run(no_copy_counter);
  } else if (api == "sync") {
    SimpleResponse response;
    row = bench::MeasureOneInFlight(
        plan,
        [&] {
          grpc::ClientContext context;
          grpc::Status status = stub->UnaryCall(&context, request, &response);
          return CheckReply(status, response, plan, request_checksum);
        },
        no_copy_counter);
  } else {
    SimpleResponse response;
    std::mutex mu;
    std::condition_variable cv;
    row = bench::MeasureOneInFlight(
        plan,
        [&] {
          grpc::ClientContext context;
          std::optional<grpc::Status> result;
          stub->async()->UnaryCall(&context, &request, &response, [&](grpc::Status status) {
            std::lock_guard lock(mu);
            result = std::move(status);
            cv.notify_one();
          });
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return result.has_value(); });
          return CheckReply(*result, response, plan, request_checksum);
        },
        no_copy_counter);
  }
  bench::PrintRow(row);
  return row.error.empty() ? 0 : 1;
}
