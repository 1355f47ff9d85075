// Stock gRPC's client side of the benchmark: measures one workload against
// a running bench_grpc_server and prints one RESULT line (harness.h).
//   bench_grpc_client --target 127.0.0.1:PORT --api sync --workload unary --payload_bytes 64
// One channel and one stub, reused for every call (gRPC's performance
// guide). --api sync blocks in the generated stub; --api callback uses the
// callback API and waits on a condition variable. The rate workload always
// uses the callback API. For the streams: --api sync uses the generated
// ClientReaderWriter / ClientReader, --api callback a reactor (below).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
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

std::string StatusText(const grpc::Status& status) {
  return status.error_message() + " (code " + std::to_string(status.error_code()) + ")";
}

// stream with --api callback: one StreamingCall as a bidi reactor. A round
// trip starts a read and a write and waits for both on a condition
// variable, as the unary callback variant waits for its one callback.
class PingPongReactor final : public grpc::ClientBidiReactor<SimpleRequest, SimpleResponse> {
 public:
  PingPongReactor(BenchmarkService::Stub* stub, const SimpleRequest* request) : request_(request) {
    stub->async()->StreamingCall(&context_, this);
    StartCall();
  }
  // Cancels a stream still open and waits for gRPC to be done with this.
  ~PingPongReactor() override {
    context_.TryCancel();
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }

  // Writes the request and reads the reply into `response`; false if the
  // stream failed.
  bool RoundTrip(SimpleResponse* response) {
    {
      std::lock_guard lock(mu_);
      pending_ = 2;
      ok_ = true;
    }
    StartRead(response);
    StartWrite(request_);
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return pending_ == 0; });
    return ok_;
  }

  // Closes the writes and waits for the server's status.
  grpc::Status Finish() {
    StartWritesDone();
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    return status_;
  }

  void OnReadDone(bool ok) override { Completed(ok); }
  void OnWriteDone(bool ok) override { Completed(ok); }
  void OnDone(const grpc::Status& status) override {
    std::lock_guard lock(mu_);
    status_ = status;
    done_ = true;
    cv_.notify_all();
  }

 private:
  void Completed(bool ok) {
    std::lock_guard lock(mu_);
    ok_ = ok_ && ok;
    if (--pending_ == 0) cv_.notify_all();
  }

  const SimpleRequest* const request_;
  grpc::ClientContext context_;
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_ = 0;
  bool ok_ = true;
  bool done_ = false;
  grpc::Status status_;
};

// stream-throughput with --api callback: one StreamingFromServer as a read
// reactor that checksums each message and starts the next read from its
// completion, on gRPC's callback thread.
class FloodReader final : public grpc::ClientReadReactor<SimpleResponse> {
 public:
  FloodReader(BenchmarkService::Stub* stub, const SimpleRequest* request, size_t size, uint64_t expected,
              bench::ReceiveCounter* counter)
      : size_(size), expected_(expected), counter_(counter) {
    stub->async()->StreamingFromServer(&context_, request, this);
    StartRead(&response_);
    StartCall();
  }

  // Cancels the call (the server's writes then fail) and waits for gRPC to
  // be done with this.
  void Stop() {
    stopping_.store(true);
    context_.TryCancel();
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the call ended: OnDone follows
    if (!bench::StreamBodyMatches(response_.payload().body(), size_, expected_)) {
      counter_->Fail("stream message does not match the request (size or checksum)");
      context_.TryCancel();
      return;
    }
    counter_->Received();
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    if (!stopping_.load()) counter_->Fail("stream ended before the client stopped it: " + StatusText(status));
    std::lock_guard lock(mu_);
    done_ = true;
    cv_.notify_all();
  }

 private:
  const size_t size_;
  const uint64_t expected_;
  bench::ReceiveCounter* const counter_;
  grpc::ClientContext context_;
  SimpleResponse response_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
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
  } else if (plan.workload == bench::Workload::kStream && api == "sync") {
    // One StreamingCall per repetition (bench/zcrpc/zcrpc_client.cc says
    // why the open makes one untimed round trip).
    SimpleResponse response;
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReaderWriter<SimpleRequest, SimpleResponse>> stream;
    auto finished = [&](std::string what) {
      what += StatusText(stream->Finish());
      stream.reset();
      return what;
    };
    auto round_trip = [&]() -> std::string {
      if (!stream->Write(request)) return finished("stream write failed: ");
      if (!stream->Read(&response)) return finished("stream ended early: ");
      return bench::CheckReplyBody(response, plan.reply_bytes(), request_checksum);
    };
    bench::AroundRepetitions around;
    around.open = [&]() -> std::string {
      context = std::make_unique<grpc::ClientContext>();
      stream = stub->StreamingCall(context.get());
      return round_trip();
    };
    around.close = [&]() -> std::string {
      stream->WritesDone();
      if (stream->Read(&response)) return "the server wrote more than it was asked";
      grpc::Status status = stream->Finish();
      stream.reset();
      return status.ok() ? "" : "stream failed: " + StatusText(status);
    };
    row = bench::MeasureOneInFlight(plan, round_trip, no_copy_counter, around);
    if (stream) {  // after a failure: the stream must end before it is destroyed
      context->TryCancel();
      stream->Finish();
    }
  } else if (plan.workload == bench::Workload::kStream) {
    SimpleResponse response;
    std::unique_ptr<PingPongReactor> stream;
    auto round_trip = [&]() -> std::string {
      if (!stream->RoundTrip(&response)) return "stream failed: " + StatusText(stream->Finish());
      return bench::CheckReplyBody(response, plan.reply_bytes(), request_checksum);
    };
    bench::AroundRepetitions around;
    around.open = [&]() -> std::string {
      stream.reset();
      stream = std::make_unique<PingPongReactor>(stub.get(), &request);
      return round_trip();
    };
    around.close = [&]() -> std::string {
      grpc::Status status = stream->Finish();
      stream.reset();
      return status.ok() ? "" : "stream failed: " + StatusText(status);
    };
    row = bench::MeasureOneInFlight(plan, round_trip, no_copy_counter, around);
    stream.reset();
  } else if (plan.workload == bench::Workload::kStreamThroughput) {
    const uint64_t expected = bench::ExpectedReplyBodyChecksum(plan.reply_bytes(), request_checksum);
    bench::ReceiveCounter counter;
    if (api == "sync") {
      // A thread of its own reads and checksums every message; the client
      // stops the server by cancelling the call.
      grpc::ClientContext context;
      std::unique_ptr<grpc::ClientReader<SimpleResponse>> reader = stub->StreamingFromServer(&context, request);
      std::atomic<bool> stopping{false};
      std::thread reading([&] {
        SimpleResponse response;
        while (reader->Read(&response)) {
          if (!bench::StreamBodyMatches(response.payload().body(), plan.reply_bytes(), expected)) {
            counter.Fail("stream message does not match the request (size or checksum)");
            break;
          }
          counter.Received();
        }
        const bool stopped = stopping.load();
        context.TryCancel();
        const grpc::Status status = reader->Finish();
        if (!stopped) counter.Fail("stream ended before the client stopped it: " + StatusText(status));
      });
      row = bench::MeasureReceiveRate(plan, counter, no_copy_counter);
      stopping.store(true);
      context.TryCancel();
      reading.join();
    } else {
      FloodReader reader(stub.get(), &request, plan.reply_bytes(), expected, &counter);
      row = bench::MeasureReceiveRate(plan, counter, no_copy_counter);
      reader.Stop();
    }
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
