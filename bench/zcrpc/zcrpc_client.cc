// zcrpc's client side of the benchmark: measures one workload against a
// running bench_zcrpc_server and prints one RESULT line (harness.h).
//   bench_zcrpc_client --target tcp://127.0.0.1:PORT --workload unary --payload_bytes 64
#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "bench/common/harness.h"
#include "bench/common/work.h"
#include "bench_control.zcrpc.h"
#include "grpc/testing/benchmark_service.zcrpc.h"
#include "zcrpc/transport/tcp/tcp_stats.h"

ABSL_FLAG(std::string, target, "", "the server's URI, as bench_zcrpc_server printed it");
ABSL_FLAG(uint64_t, stream_window_bytes, 0, "the client's stream receive window (0: zcrpc's default)");

namespace {

using grpc::testing::BenchmarkService;
using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
namespace bench = zcrpc::bench;
using PingPongStream = zcrpc::ClientReaderWriter<SimpleRequest, SimpleResponse>;

std::string CheckReply(const zcrpc::Status& status, const SimpleResponse& response, const bench::Plan& plan,
                       uint64_t request_checksum) {
  if (!status.ok()) return "call failed: " + status.ToString();
  return bench::CheckReplyBody(response, plan.reply_bytes(), request_checksum);
}

// One in-flight slot of the rate workload; a context serves one call only.
struct Slot {
  std::optional<zcrpc::ClientContext> context;
  SimpleResponse response;
};

}  // namespace

// The client side's tcp send decisions over the whole run, warm-up included.
std::string TcpDecisions() {
  const auto s = zcrpc::transport::tcp::TcpStats::Process();
  std::string text = absl::StrFormat("client: %.2f frames per sendmsg", s.write_calls == 0 ? 0.0
      : static_cast<double>(s.frames_sent) / static_cast<double>(s.write_calls));
  if (s.zerocopy_sends == 0) return text + "; MSG_ZEROCOPY not tried (no write reached its threshold)";
  absl::StrAppendFormat(&text, "; MSG_ZEROCOPY tried on %u writes, kernel copied %u of %u completions",
                        s.zerocopy_sends, s.zerocopy_copied_completions, s.zerocopy_completions);
  if (s.zerocopy_turned_off > 0) text += ", so the connection turned it off";
  return text;
}

int main(int argc, char** argv) {
  const bench::Plan plan = bench::ParsePlan(argc, argv, "bench_zcrpc_client --target URI [harness flags]");
  zcrpc::ChannelOptions options;
  if (const uint64_t window = absl::GetFlag(FLAGS_stream_window_bytes); window != 0) {
    options.stream_window_bytes = window;
  }
  auto channel = zcrpc::Channel::Create(absl::GetFlag(FLAGS_target), options);
  if (!channel.ok()) bench::FailRow(channel.status().ToString());
  BenchmarkService::Stub stub(*channel);
  zcrpc::bench::BenchControl::Stub control(*channel);

  const bench::CopyCounter copies = [&]() -> std::optional<uint64_t> {
    zcrpc::ClientContext context;
    zcrpc::bench::CopyStatsReply reply;
    if (!control.GetCopyStats(&context, zcrpc::bench::CopyStatsRequest(), &reply).ok()) return std::nullopt;
    return zcrpc::CopyStats::TotalBytesCopied() + reply.bytes_copied();
  };

  SimpleRequest request;
  request.mutable_payload()->set_body(bench::MakePayload(plan.request_bytes()));
  request.set_response_size(static_cast<int32_t>(plan.reply_bytes()));
  const uint64_t request_checksum = bench::Checksum(request.payload().body());

  bench::Row row;
  if (plan.workload == bench::Workload::kRate) {
    std::vector<Slot> slots(static_cast<size_t>(plan.in_flight));
    bench::InFlightRunner* runner_ptr = nullptr;
    bench::InFlightRunner runner(plan, [&](int slot_index) {
      Slot& slot = slots[static_cast<size_t>(slot_index)];
      slot.context.emplace();
      stub.UnaryCall(&*slot.context, request, &slot.response, [&, slot_index](zcrpc::Status status) {
        Slot& done = slots[static_cast<size_t>(slot_index)];
        runner_ptr->Done(slot_index, CheckReply(status, done.response, plan, request_checksum));
      });
    });
    runner_ptr = &runner;
    row = runner.Run(copies);
  } else if (plan.workload == bench::Workload::kUnaryAttach) {
    // The payload travels as an attachment written once into the channel's
    // memory; the message is empty. The server sends the same buffer back
    // with its checksum in the first 8 bytes; the next call sends it again.
    SimpleRequest empty;
    SimpleResponse response;
    const std::string payload = bench::MakePayload(plan.payload_bytes);
    const uint64_t payload_checksum = bench::Checksum(payload);
    zcrpc::Buffer attachment;
    if (plan.payload_bytes > 0) {
      attachment = (*channel)->AllocateBuffer(plan.payload_bytes);
      std::memcpy(attachment.data(), payload.data(), payload.size());
    }
    row = bench::MeasureOneInFlight(
        plan,
        [&]() -> std::string {
          if (plan.payload_bytes > 0) std::memcpy(attachment.data(), payload.data(), std::min<size_t>(8, payload.size()));
          zcrpc::ClientContext context;
          if (plan.payload_bytes > 0) context.AddAttachment(std::move(attachment));
          zcrpc::Status status = stub.UnaryCall(&context, empty, &response);
          if (!status.ok()) return "call failed: " + status.ToString();
          if (plan.payload_bytes == 0) return "";
          if (context.response_attachments().size() != 1) return "reply has no attachment";
          attachment = std::move(context.response_attachments()[0]);
          if (attachment.size() != plan.payload_bytes) return "reply attachment of the wrong size";
          uint64_t got = 0;
          std::memcpy(&got, attachment.data(), std::min<size_t>(8, attachment.size()));
          const uint64_t want = plan.payload_bytes >= 8 ? payload_checksum : got;
          return got == want ? "" : "reply attachment checksum mismatch";
        },
        copies);
  } else if (plan.workload == bench::Workload::kBulkAttach) {
    // Each call writes the payload into a fresh buffer of the channel's
    // memory (the application's work, which floor-tcp does not do: it sends
    // the same bytes every time) and sends it as an attachment.
    SimpleRequest ask_checksum;
    ask_checksum.set_response_size(8);
    SimpleResponse response;
    const std::string payload = bench::MakePayload(plan.payload_bytes);
    const uint64_t payload_checksum = bench::Checksum(payload);
    row = bench::MeasureOneInFlight(
        plan,
        [&]() -> std::string {
          zcrpc::Buffer attachment = (*channel)->AllocateBuffer(plan.payload_bytes);
          std::memcpy(attachment.data(), payload.data(), payload.size());
          zcrpc::ClientContext context;
          context.AddAttachment(std::move(attachment));
          zcrpc::Status status = stub.UnaryCall(&context, ask_checksum, &response);
          return CheckReply(status, response, plan, payload_checksum);
        },
        copies);
  } else if (plan.workload == bench::Workload::kStream) {
    // One StreamingCall per repetition; a call is one request written and
    // its reply read on it. Opening makes one untimed round trip, so a
    // repetition's first timed one does not wait for the server's handler
    // thread to start.
    SimpleResponse response;
    std::unique_ptr<zcrpc::ClientContext> context;
    std::unique_ptr<PingPongStream> stream;
    auto round_trip = [&]() -> std::string {
      if (!stream->Write(request)) return "stream write failed: " + stream->Finish().ToString();
      if (!stream->Read(&response)) return "stream ended early: " + stream->Finish().ToString();
      return bench::CheckReplyBody(response, plan.reply_bytes(), request_checksum);
    };
    bench::AroundRepetitions around;
    around.open = [&]() -> std::string {
      stream.reset();
      context = std::make_unique<zcrpc::ClientContext>();
      stream = stub.StreamingCall(context.get());
      return round_trip();
    };
    around.close = [&]() -> std::string {
      // Finish closes the writes; the server's handler then returns OK.
      zcrpc::Status status = stream->Finish();
      stream.reset();
      return status.ok() ? "" : "stream failed: " + status.ToString();
    };
    row = bench::MeasureOneInFlight(plan, round_trip, copies, around);
    stream.reset();  // after a failure: cancels a stream still open
  } else if (plan.workload == bench::Workload::kStreamThroughput) {
    // One StreamingFromServer for the whole row, read by a thread of its
    // own that checksums every message; the harness samples the count.
    // The client stops the server by cancelling the call.
    zcrpc::ClientContext context;
    std::unique_ptr<zcrpc::ClientReader<SimpleResponse>> reader = stub.StreamingFromServer(&context, request);
    const uint64_t expected = bench::ExpectedReplyBodyChecksum(plan.reply_bytes(), request_checksum);
    bench::ReceiveCounter counter;
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
      context.TryCancel();  // a no-op once the call has ended
      const zcrpc::Status status = reader->Finish();
      if (!stopped) counter.Fail("stream ended before the client stopped it: " + status.ToString());
    });
    row = bench::MeasureReceiveRate(plan, counter, copies);
    stopping.store(true);
    context.TryCancel();
    reading.join();
  } else {
    SimpleResponse response;
    row = bench::MeasureOneInFlight(
        plan,
        [&] {
          zcrpc::ClientContext context;
          zcrpc::Status status = stub.UnaryCall(&context, request, &response);
          return CheckReply(status, response, plan, request_checksum);
        },
        copies);
  }
  if (absl::GetFlag(FLAGS_target).rfind("tcp://", 0) == 0) row.transport = TcpDecisions();
  bench::PrintRow(row);
  return row.error.empty() ? 0 : 1;
}
