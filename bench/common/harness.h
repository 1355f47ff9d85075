// The client half of every benchmark program: what to measure (Plan, from
// the command line), how (one call in flight, or many), and how a row of
// results is printed for bench/driver.py.
//
// Every client program prints exactly one line "RESULT {json}" on stdout;
// its keys are the result fields of docs/benchmarks.md (the driver adds
// system, workload and payload size).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"

namespace zcrpc::bench {

// kUnaryAttach: unary with the payload as an attachment beside an empty
// message (zcrpc only). kBulkAttach: bulk with the request's payload as an
// attachment, written into a fresh buffer by the client for every call; the
// reply is the 8-byte checksum in the message (zcrpc only).
// kStream: BenchmarkService.StreamingCall, bidirectional ping-pong: one
// stream per repetition (and one for the warm-up), on which the client
// writes one request of payload_bytes and reads its reply of the same size,
// again and again; a "call" is one such round trip.
// kStreamThroughput: BenchmarkService.StreamingFromServer: one call for the
// whole row, on which the server writes replies of payload_bytes as fast as
// flow control lets it and the client reads and checksums each; a "call" is
// one message received.
enum class Workload { kUnary, kUnaryAttach, kBulk, kBulkAttach, kRate, kStream, kStreamThroughput };

struct Plan {
  Workload workload = Workload::kUnary;
  // Payload per request (and per reply for unary) in bytes.
  size_t payload_bytes = 64;
  // Warm-up (docs/benchmarks.md, "Warm-up"): calls before measuring
  // starts, in batches of warmup_batch_s, whose figures are discarded. It
  // lasts at least warmup_s and ends once the last kSteadyBatches batch
  // figures (p50, time per call for bulk, calls/s for rate) agree within
  // warmup_tolerance (max/min <= 1 + tolerance), or at warmup_max_s.
  double warmup_s = 0.2;
  double warmup_max_s = 2.0;
  double warmup_batch_s = 0.03;
  double warmup_tolerance = 0.10;
  static constexpr int kSteadyBatches = 3;
  // Prints every warm-up batch's figure on stderr.
  bool warmup_trace = false;
  // Repetitions; each reports its own percentiles and the row reports the
  // median over repetitions (every repetition's figures are printed too).
  int reps = 3;
  // A repetition ends after this long, or after max_calls_per_rep calls.
  double rep_s = 0.5;
  int64_t max_calls_per_rep = 1'000'000;
  // Calls in flight for the rate workload.
  int in_flight = 32;
  // The server process, for its CPU time and peak RSS; 0 if there is none.
  pid_t server_pid = 0;

  // stream-throughput's one request carries no payload: it only asks.
  size_t request_bytes() const { return workload == Workload::kStreamThroughput ? 0 : payload_bytes; }
  // Bulk replies carry just the 8-byte checksum.
  bool bulk() const { return workload == Workload::kBulk || workload == Workload::kBulkAttach; }
  size_t reply_bytes() const { return bulk() ? 8 : payload_bytes; }
};

// Parses the common flags (--workload, --payload_bytes, --warmup_s,
// --warmup_max_s, --warmup_batch_s, --warmup_tolerance, --warmup_trace,
// --reps, --rep_s, --max_calls_per_rep, --in_flight, --server_pid) and any the
// program defines with ABSL_FLAG; exits with a usage message on bad input.
Plan ParsePlan(int argc, char** argv, std::string_view usage);

// One repetition's figures.
struct Rep {
  std::optional<double> p50_us, p99_us, calls_per_s, gbytes_per_s;
  // Whether, at the end of the repetition, the calling thread and the
  // server's busiest thread in it were on the same CPU (the slow placement
  // of docs/benchmarks.md, "Three rows that wandered"); unset where there
  // is no server process or no calling thread (rate).
  std::optional<bool> same_cpu;
};

// How the warm-up went: how long, how many batches, and whether it reached
// steady state (false: it stopped at the cap).
struct Warmup {
  double seconds = 0;
  int batches = 0;
  bool steady = false;
  // The first and last batch figure, in the batch figure's unit.
  double first_figure = 0, last_figure = 0;
};

struct Row {
  std::optional<double> p50_us, p99_us, calls_per_s, gbytes_per_s, cpu_us_per_call, copied_bytes_per_call,
      peak_rss_mb;
  // Each process's own peak resident set (VmHWM) at the end of the
  // repetitions, in MiB; peak_rss_mb is their sum. The server's is unset
  // where there is no server process (floor-memcpy).
  std::optional<double> client_peak_rss_mb, server_peak_rss_mb;
  // Non-empty when the system failed the workload; the figures are then unset.
  std::string error;
  // What the transport decided on this row's path (zero-copy probes,
  // frames per write), for the report; empty where nothing applies.
  std::string transport;
  std::vector<Rep> reps;
  std::optional<Warmup> warmup;
  // The share of the machine's CPU time (all CPUs, 0..1) that other
  // processes used, or the hypervisor stole, during the repetitions: the
  // machine's busy time from /proc/stat minus the client's and server's.
  std::optional<double> others_cpu_share;
};

void PrintRow(const Row& row);
[[noreturn]] void FailRow(std::string_view error);

// Framework bytes copied so far, client and server together; nullopt for a
// system that does not count its copies.
using CopyCounter = std::function<std::optional<uint64_t>()>;

// For calls made on a stream (the stream workload): `open` starts a fresh
// stream before the warm-up and before each repetition, `close` ends it
// after each. Neither is timed (their CPU is in the row's CPU per call, a
// few streams against thousands of calls). Each returns "" on success, else
// what went wrong. Unset: calls need nothing around them.
struct AroundRepetitions {
  std::function<std::string()> open, close;
};

// Measures with one call in flight. `call` makes one call and returns an
// empty string on success, else what went wrong.
Row MeasureOneInFlight(const Plan& plan, absl::FunctionRef<std::string()> call, const CopyCounter& copies,
                       const AroundRepetitions& around = {});

// Counts the messages a stream delivers, for MeasureReceiveRate: the thread
// that reads them (a reader thread, a reactor's callbacks) calls
// Received() per message, or Fail() once something is wrong.
class ReceiveCounter {
 public:
  void Received() { received_.fetch_add(1, std::memory_order_relaxed); }
  // Keeps the first error; measuring stops at its next look.
  void Fail(std::string_view error);
  int64_t received() const { return received_.load(std::memory_order_relaxed); }
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  std::string error() const;

 private:
  std::atomic<int64_t> received_{0};
  std::atomic<bool> failed_{false};
  mutable std::mutex mu_;
  std::string error_;
};

// Measures a stream that is already flowing into `counter`, one message of
// plan.payload_bytes at a time: a warm-up until steady on each batch's
// messages/s, then plan.reps repetitions of plan.rep_s, each giving
// messages/s (calls_per_s) and payload GB/s. No latencies: a message's
// arrival is not a round trip. The measuring thread only sleeps and looks.
Row MeasureReceiveRate(const Plan& plan, const ReceiveCounter& counter, const CopyCounter& copies);

// Measures with plan.in_flight calls in flight. The system's `start(slot)`
// begins one asynchronous call; its completion must call Done(slot, error)
// (from any thread), which starts the slot's next call.
class InFlightRunner {
 public:
  using Start = std::function<void(int slot)>;

  InFlightRunner(const Plan& plan, Start start);
  Row Run(const CopyCounter& copies);
  void Done(int slot, std::string_view error);

 private:
  int64_t TakeCompleted(std::vector<int64_t>* latencies_ns);

  const Plan plan_;
  const Start start_;
  std::vector<int64_t> started_ns_;

  std::mutex mu_;
  std::vector<int64_t> latencies_ns_;
  int64_t completed_ = 0;
  std::string first_error_;
  int idle_slots_ = 0;
  std::condition_variable all_idle_;
  std::atomic<bool> stopping_{false};
};

// CPU time so far of this process (all threads), in ns.
int64_t SelfCpuNanos();
// CPU time of another process's threads, to take differences of: each live
// thread's scheduler run time in ns, and the whole process's utime+stime
// (clock ticks, coarse, but it keeps the time of threads that have exited).
struct ProcessCpu {
  std::map<std::string, int64_t> thread_ns;
  int64_t process_ns = 0;

  static ProcessCpu Of(pid_t pid);
  // CPU used between `before` and this sample, never negative: the larger
  // of the live threads' increase and the coarse whole-process increase.
  int64_t Since(const ProcessCpu& before) const;
};
// Peak resident set (VmHWM) of `pid` (0: this process), in bytes.
int64_t PeakRssBytes(pid_t pid);
int64_t NowNanos();
// All CPUs' busy time so far (/proc/stat: everything but idle and iowait,
// steal included), in ns; nullopt where /proc/stat cannot be read.
std::optional<int64_t> MachineBusyNanos();

}  // namespace zcrpc::bench
