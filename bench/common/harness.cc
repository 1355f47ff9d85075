#include "bench/common/harness.h"

#include <dirent.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"

ABSL_FLAG(std::string, workload, "unary", "unary | unary-attach | bulk | bulk-attach | rate");
ABSL_FLAG(uint64_t, payload_bytes, 64, "payload bytes per request (and per reply for unary)");
ABSL_FLAG(double, warmup_s, 0.2, "seconds of calls before measuring");
ABSL_FLAG(int, reps, 3, "repetitions; the row reports their median");
ABSL_FLAG(double, rep_s, 0.5, "seconds per repetition");
ABSL_FLAG(int64_t, max_calls_per_rep, 1'000'000, "calls per repetition at most");
ABSL_FLAG(int, in_flight, 32, "calls in flight for the rate workload");
ABSL_FLAG(int, server_pid, 0, "server process, for its CPU time and peak RSS");

namespace zcrpc::bench {
namespace {

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Nearest-rank percentile of `ns` (sorted in place), in µs.
double PercentileUs(std::vector<int64_t>& ns, double p) {
  if (ns.empty()) return 0;
  std::sort(ns.begin(), ns.end());
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(ns.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, ns.size());
  return static_cast<double>(ns[rank - 1]) / 1000.0;
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string JsonNumber(const std::optional<double>& v) {
  if (!v) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", *v);
  return buf;
}

// What the client and the server spent, measured around the repetitions.
struct Usage {
  int64_t cpu_ns = 0;
  std::optional<uint64_t> copied;

  static Usage Now(const Plan& plan, const CopyCounter& copies) {
    Usage u;
    u.cpu_ns = SelfCpuNanos() + (plan.server_pid ? ProcessCpuNanos(plan.server_pid) : 0);
    if (copies) u.copied = copies();
    return u;
  }
};

void FillUsage(Row* row, const Plan& plan, const Usage& before, const Usage& after, int64_t calls) {
  if (calls <= 0) return;
  row->cpu_us_per_call = static_cast<double>(after.cpu_ns - before.cpu_ns) / 1000.0 / static_cast<double>(calls);
  if (before.copied && after.copied) {
    row->copied_bytes_per_call = static_cast<double>(*after.copied - *before.copied) / static_cast<double>(calls);
  }
  int64_t rss = PeakRssBytes(0) + (plan.server_pid ? PeakRssBytes(plan.server_pid) : 0);
  row->peak_rss_mb = static_cast<double>(rss) / (1024.0 * 1024.0);
}

}  // namespace

Plan ParsePlan(int argc, char** argv, std::string_view usage) {
  absl::SetProgramUsageMessage(std::string(usage));
  absl::ParseCommandLine(argc, argv);
  Plan plan;
  const std::string workload = absl::GetFlag(FLAGS_workload);
  if (workload == "unary") plan.workload = Workload::kUnary;
  else if (workload == "unary-attach") plan.workload = Workload::kUnaryAttach;
  else if (workload == "bulk") plan.workload = Workload::kBulk;
  else if (workload == "bulk-attach") plan.workload = Workload::kBulkAttach;
  else if (workload == "rate") plan.workload = Workload::kRate;
  else FailRow("unknown --workload " + workload);
  plan.payload_bytes = absl::GetFlag(FLAGS_payload_bytes);
  plan.warmup_s = absl::GetFlag(FLAGS_warmup_s);
  plan.reps = std::max(1, absl::GetFlag(FLAGS_reps));
  plan.rep_s = absl::GetFlag(FLAGS_rep_s);
  plan.max_calls_per_rep = std::max<int64_t>(1, absl::GetFlag(FLAGS_max_calls_per_rep));
  plan.in_flight = std::max(1, absl::GetFlag(FLAGS_in_flight));
  plan.server_pid = absl::GetFlag(FLAGS_server_pid);
  return plan;
}

void PrintRow(const Row& row) {
  std::printf(
      "RESULT {\"p50_us\": %s, \"p99_us\": %s, \"calls_per_s\": %s, \"gbytes_per_s\": %s, "
      "\"cpu_us_per_call\": %s, \"copied_bytes_per_call\": %s, \"peak_rss_mb\": %s, \"transport\": %s, "
      "\"error\": %s}\n",
      JsonNumber(row.p50_us).c_str(), JsonNumber(row.p99_us).c_str(), JsonNumber(row.calls_per_s).c_str(),
      JsonNumber(row.gbytes_per_s).c_str(), JsonNumber(row.cpu_us_per_call).c_str(),
      JsonNumber(row.copied_bytes_per_call).c_str(), JsonNumber(row.peak_rss_mb).c_str(),
      row.transport.empty() ? "null" : JsonString(row.transport).c_str(), row.error.empty() ? "null" : JsonString(row.error).c_str());
  std::fflush(stdout);
}

void FailRow(std::string_view error) {
  Row row;
  row.error = std::string(error);
  PrintRow(row);
  std::exit(1);
}

Row MeasureOneInFlight(const Plan& plan, absl::FunctionRef<std::string()> call, const CopyCounter& copies) {
  auto fail = [](std::string error) {
    Row row;
    row.error = std::move(error);
    return row;
  };
  const int64_t warmup_end = NowNanos() + static_cast<int64_t>(plan.warmup_s * 1e9);
  do {
    if (std::string error = call(); !error.empty()) return fail(error);
  } while (NowNanos() < warmup_end);

  std::vector<double> p50s, p99s, gbps;
  std::vector<int64_t> latencies;
  latencies.reserve(static_cast<size_t>(std::min<int64_t>(plan.max_calls_per_rep, 4'000'000)));
  int64_t calls = 0;
  const Usage before = Usage::Now(plan, copies);
  for (int rep = 0; rep < plan.reps; ++rep) {
    latencies.clear();
    const int64_t rep_start = NowNanos();
    const int64_t rep_end = rep_start + static_cast<int64_t>(plan.rep_s * 1e9);
    int64_t now = rep_start;
    while (now < rep_end && static_cast<int64_t>(latencies.size()) < plan.max_calls_per_rep) {
      if (std::string error = call(); !error.empty()) return fail(error);
      const int64_t done = NowNanos();
      latencies.push_back(done - now);
      now = done;
    }
    const double elapsed_s = static_cast<double>(now - rep_start) / 1e9;
    calls += static_cast<int64_t>(latencies.size());
    gbps.push_back(static_cast<double>(latencies.size() * plan.request_bytes()) / elapsed_s / 1e9);
    p99s.push_back(PercentileUs(latencies, 99));
    p50s.push_back(PercentileUs(latencies, 50));
  }
  const Usage after = Usage::Now(plan, copies);

  Row row;
  row.p50_us = Median(p50s);
  row.p99_us = Median(p99s);
  if (plan.bulk()) row.gbytes_per_s = Median(gbps);
  FillUsage(&row, plan, before, after, calls);
  return row;
}

InFlightRunner::InFlightRunner(const Plan& plan, Start start)
    : plan_(plan), start_(std::move(start)), started_ns_(static_cast<size_t>(plan.in_flight)) {}

void InFlightRunner::Done(int slot, std::string_view error) {
  const int64_t now = NowNanos();
  {
    std::lock_guard lock(mu_);
    if (!error.empty()) {
      if (first_error_.empty()) first_error_ = std::string(error);
      stopping_.store(true);
    } else {
      latencies_ns_.push_back(now - started_ns_[static_cast<size_t>(slot)]);
      ++completed_;
    }
    if (stopping_.load()) {
      if (++idle_slots_ == plan_.in_flight) all_idle_.notify_all();
      return;
    }
  }
  started_ns_[static_cast<size_t>(slot)] = now;
  start_(slot);
}

int64_t InFlightRunner::TakeCompleted(std::vector<int64_t>* latencies_ns) {
  std::lock_guard lock(mu_);
  latencies_ns->swap(latencies_ns_);
  latencies_ns_.clear();
  return std::exchange(completed_, 0);
}

Row InFlightRunner::Run(const CopyCounter& copies) {
  for (int slot = 0; slot < plan_.in_flight; ++slot) {
    started_ns_[static_cast<size_t>(slot)] = NowNanos();
    start_(slot);
  }
  auto sleep_s = [](double s) { std::this_thread::sleep_for(std::chrono::nanoseconds(static_cast<int64_t>(s * 1e9))); };
  std::vector<int64_t> latencies;
  sleep_s(plan_.warmup_s);
  TakeCompleted(&latencies);

  std::vector<double> rates, p50s, p99s;
  int64_t calls = 0;
  const Usage before = Usage::Now(plan_, copies);
  for (int rep = 0; rep < plan_.reps && !stopping_.load(); ++rep) {
    const int64_t rep_start = NowNanos();
    TakeCompleted(&latencies);
    sleep_s(plan_.rep_s);
    const int64_t completed = TakeCompleted(&latencies);
    const double elapsed_s = static_cast<double>(NowNanos() - rep_start) / 1e9;
    calls += completed;
    rates.push_back(static_cast<double>(completed) / elapsed_s);
    p99s.push_back(PercentileUs(latencies, 99));
    p50s.push_back(PercentileUs(latencies, 50));
  }
  const Usage after = Usage::Now(plan_, copies);

  std::unique_lock lock(mu_);
  stopping_.store(true);
  all_idle_.wait(lock, [&] { return idle_slots_ == plan_.in_flight; });
  Row row;
  if (!first_error_.empty()) {
    row.error = first_error_;
    return row;
  }
  row.calls_per_s = Median(rates);
  row.p50_us = Median(p50s);
  row.p99_us = Median(p99s);
  FillUsage(&row, plan_, before, after, calls);
  return row;
}

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t SelfCpuNanos() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto ns = [](const timeval& tv) { return static_cast<int64_t>(tv.tv_sec) * 1'000'000'000 + tv.tv_usec * 1000; };
  return ns(usage.ru_utime) + ns(usage.ru_stime);
}

// Sum over the process's threads of the scheduler's run time, which is kept
// in ns (/proc/PID/stat's utime is in 10 ms ticks, too coarse here).
int64_t ProcessCpuNanos(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* tasks = opendir(dir.c_str());
  if (tasks == nullptr) return 0;
  int64_t total = 0;
  while (dirent* entry = readdir(tasks)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream schedstat(dir + "/" + entry->d_name + "/schedstat");
    int64_t run_ns = 0;
    if (schedstat >> run_ns) total += run_ns;
  }
  closedir(tasks);
  return total;
}

int64_t PeakRssBytes(pid_t pid) {
  std::ifstream status(pid ? "/proc/" + std::to_string(pid) + "/status" : std::string("/proc/self/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      int64_t kb = 0;
      fields >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

}  // namespace zcrpc::bench
