#include "bench/common/harness.h"

#include <dirent.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"

ABSL_FLAG(std::string, workload, "unary",
          "unary | unary-attach | bulk | bulk-attach | rate | stream | stream-throughput");
ABSL_FLAG(uint64_t, payload_bytes, 64, "payload bytes per request (and per reply for unary)");
ABSL_FLAG(double, warmup_s, 0.2, "seconds of warm-up calls before measuring, at least");
ABSL_FLAG(double, warmup_max_s, 2.0, "seconds of warm-up at most, steady or not");
ABSL_FLAG(double, warmup_batch_s, 0.03, "seconds per warm-up batch");
ABSL_FLAG(double, warmup_tolerance, 0.10,
          "warm-up ends when the last 3 batch figures agree within this (max/min - 1)");
ABSL_FLAG(bool, warmup_trace, false, "print every warm-up batch's figure on stderr");
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

// The warm-up rule (harness.h, Plan): fed one figure per batch, says when
// the row has reached steady state or run out of time.
class SteadyState {
 public:
  explicit SteadyState(const Plan& plan) : plan_(plan), start_ns_(NowNanos()) {}

  double elapsed_s() const { return static_cast<double>(NowNanos() - start_ns_) / 1e9; }

  // Records one batch's figure; true once the warm-up is over.
  bool Add(double figure) {
    figures_.push_back(figure);
    if (plan_.warmup_trace) {
      std::fprintf(stderr, "warmup batch %zu at %.3f s: %.6g\n", figures_.size(), elapsed_s(), figure);
    }
    const double elapsed = elapsed_s();
    if (elapsed >= plan_.warmup_max_s) return true;
    return elapsed >= plan_.warmup_s && Steady();
  }

  bool Steady() const {
    const size_t n = figures_.size();
    if (n < static_cast<size_t>(Plan::kSteadyBatches)) return false;
    const auto [lo, hi] = std::minmax_element(figures_.end() - Plan::kSteadyBatches, figures_.end());
    if (*hi <= 0) return true;
    return *lo > 0 && *hi / *lo <= 1 + plan_.warmup_tolerance;
  }

  Warmup Result() const {
    Warmup w;
    w.seconds = elapsed_s();
    w.batches = static_cast<int>(figures_.size());
    w.steady = Steady();
    if (!figures_.empty()) {
      w.first_figure = figures_.front();
      w.last_figure = figures_.back();
    }
    return w;
  }

 private:
  const Plan& plan_;
  const int64_t start_ns_;
  std::vector<double> figures_;
};

// The CPU `pid`'s thread that ran most since the last call last ran on, to
// compare with the caller's (Rep::same_cpu).
class BusiestThreadCpu {
 public:
  explicit BusiestThreadCpu(pid_t pid) : pid_(pid) {
    if (pid_ != 0) Sample();
  }

  std::optional<int> Sample() {
    if (pid_ == 0) return std::nullopt;
    const std::string dir = "/proc/" + std::to_string(pid_) + "/task";
    DIR* tasks = opendir(dir.c_str());
    if (tasks == nullptr) return std::nullopt;
    int64_t most = -1;
    std::optional<int> cpu;
    std::map<std::string, int64_t> now;
    while (dirent* entry = readdir(tasks)) {
      if (entry->d_name[0] == '.') continue;
      const std::string task = dir + "/" + entry->d_name;
      std::ifstream schedstat(task + "/schedstat");
      int64_t run_ns = 0;
      if (!(schedstat >> run_ns)) continue;
      now[entry->d_name] = run_ns;
      const auto before = last_.find(entry->d_name);
      const int64_t ran = run_ns - (before == last_.end() ? 0 : before->second);
      if (ran <= most) continue;
      // /proc/PID/task/TID/stat: field 39 is the CPU it last ran on; the
      // command name (field 2) may hold spaces, so count after its ')'.
      std::ifstream stat(task + "/stat");
      std::string line;
      std::getline(stat, line);
      const size_t paren = line.rfind(')');
      if (paren == std::string::npos) continue;
      std::istringstream fields(line.substr(paren + 2));
      std::string field;
      for (int i = 3; i <= 39 && fields >> field; ++i) {
        if (i == 39) {
          most = ran;
          cpu = std::atoi(field.c_str());
        }
      }
    }
    closedir(tasks);
    last_ = std::move(now);
    return cpu;
  }

 private:
  const pid_t pid_;
  std::map<std::string, int64_t> last_;
};

std::string JsonBool(const std::optional<bool>& v) { return !v ? "null" : *v ? "true" : "false"; }

std::string RepsJson(const std::vector<Rep>& reps) {
  std::string out = "[";
  for (const Rep& rep : reps) {
    if (out.size() > 1) out += ", ";
    out += "{\"p50_us\": " + JsonNumber(rep.p50_us) + ", \"p99_us\": " + JsonNumber(rep.p99_us) +
           ", \"calls_per_s\": " + JsonNumber(rep.calls_per_s) +
           ", \"gbytes_per_s\": " + JsonNumber(rep.gbytes_per_s) + ", \"same_cpu\": " + JsonBool(rep.same_cpu) +
           "}";
  }
  return out + "]";
}

std::string WarmupJson(const std::optional<Warmup>& w) {
  if (!w) return "null";
  return "{\"seconds\": " + JsonNumber(w->seconds) + ", \"batches\": " + std::to_string(w->batches) +
         ", \"steady\": " + (w->steady ? "true" : "false") + ", \"first_batch\": " + JsonNumber(w->first_figure) +
         ", \"last_batch\": " + JsonNumber(w->last_figure) + "}";
}

// What the client and the server spent, measured around the repetitions.
struct Usage {
  int64_t wall_ns = 0;
  int64_t self_cpu_ns = 0;
  ProcessCpu server;
  std::optional<int64_t> machine_busy_ns;
  std::optional<uint64_t> copied;

  static Usage Now(const Plan& plan, const CopyCounter& copies) {
    Usage u;
    // Copies first: for zcrpc it is a call, whose CPU belongs to neither side
    // of the measurement window.
    if (copies) u.copied = copies();
    u.self_cpu_ns = SelfCpuNanos();
    if (plan.server_pid) u.server = ProcessCpu::Of(plan.server_pid);
    u.machine_busy_ns = MachineBusyNanos();
    u.wall_ns = NowNanos();
    return u;
  }
};

// The row's figures: the median over repetitions of each.
void SummarizeReps(Row* row, std::vector<Rep> reps) {
  auto median_of = [&](auto field) {
    std::vector<double> v;
    for (const Rep& rep : reps) {
      if (std::optional<double> x = field(rep)) v.push_back(*x);
    }
    return v.empty() ? std::nullopt : std::optional<double>(Median(v));
  };
  row->p50_us = median_of([](const Rep& r) { return r.p50_us; });
  row->p99_us = median_of([](const Rep& r) { return r.p99_us; });
  row->calls_per_s = median_of([](const Rep& r) { return r.calls_per_s; });
  row->gbytes_per_s = median_of([](const Rep& r) { return r.gbytes_per_s; });
  row->reps = std::move(reps);
}

// Each process's peak resident set, read at the end of the repetitions:
// VmHWM, the kernel's high-water mark of the process's own memory. Not
// getrusage()'s ru_maxrss, which after a vfork+exec (how Python's
// subprocess starts these programs) keeps the parent's peak: a program
// whose VmHWM was 1.2 MiB reported 215 MiB there, started by a Python
// holding 210 MiB.
void FillPeakRss(Row* row, const Plan& plan) {
  constexpr double kMiB = 1024.0 * 1024.0;
  const int64_t client = PeakRssBytes(0);
  row->client_peak_rss_mb = static_cast<double>(client) / kMiB;
  int64_t server = 0;
  if (plan.server_pid) {
    server = PeakRssBytes(plan.server_pid);
    row->server_peak_rss_mb = static_cast<double>(server) / kMiB;
  }
  row->peak_rss_mb = static_cast<double>(client + server) / kMiB;
}

void FillUsage(Row* row, const Plan& plan, const Usage& before, const Usage& after, int64_t calls) {
  FillPeakRss(row, plan);
  if (calls <= 0) return;
  const int64_t ours = (after.self_cpu_ns - before.self_cpu_ns) + after.server.Since(before.server);
  row->cpu_us_per_call = static_cast<double>(ours) / 1000.0 / static_cast<double>(calls);
  if (before.copied && after.copied) {
    row->copied_bytes_per_call = static_cast<double>(*after.copied - *before.copied) / static_cast<double>(calls);
  }
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (before.machine_busy_ns && after.machine_busy_ns && cpus > 0 && after.wall_ns > before.wall_ns) {
    const double others = static_cast<double>((*after.machine_busy_ns - *before.machine_busy_ns) - ours);
    const double capacity = static_cast<double>(cpus) * static_cast<double>(after.wall_ns - before.wall_ns);
    row->others_cpu_share = std::clamp(others / capacity, 0.0, 1.0);
  }
}

void SleepSeconds(double s) {
  std::this_thread::sleep_for(std::chrono::nanoseconds(static_cast<int64_t>(s * 1e9)));
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
  else if (workload == "stream") plan.workload = Workload::kStream;
  else if (workload == "stream-throughput") plan.workload = Workload::kStreamThroughput;
  else FailRow("unknown --workload " + workload);
  plan.payload_bytes = absl::GetFlag(FLAGS_payload_bytes);
  plan.warmup_s = absl::GetFlag(FLAGS_warmup_s);
  plan.warmup_max_s = std::max(plan.warmup_s, absl::GetFlag(FLAGS_warmup_max_s));
  plan.warmup_batch_s = std::max(0.001, absl::GetFlag(FLAGS_warmup_batch_s));
  plan.warmup_tolerance = std::max(0.0, absl::GetFlag(FLAGS_warmup_tolerance));
  plan.warmup_trace = absl::GetFlag(FLAGS_warmup_trace);
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
      "\"cpu_us_per_call\": %s, \"copied_bytes_per_call\": %s, \"peak_rss_mb\": %s, "
      "\"client_peak_rss_mb\": %s, \"server_peak_rss_mb\": %s, \"transport\": %s, "
      "\"repetitions\": %s, \"warmup\": %s, \"others_cpu_share\": %s, \"error\": %s}\n",
      JsonNumber(row.p50_us).c_str(), JsonNumber(row.p99_us).c_str(), JsonNumber(row.calls_per_s).c_str(),
      JsonNumber(row.gbytes_per_s).c_str(), JsonNumber(row.cpu_us_per_call).c_str(),
      JsonNumber(row.copied_bytes_per_call).c_str(), JsonNumber(row.peak_rss_mb).c_str(),
      JsonNumber(row.client_peak_rss_mb).c_str(), JsonNumber(row.server_peak_rss_mb).c_str(),
      row.transport.empty() ? "null" : JsonString(row.transport).c_str(), RepsJson(row.reps).c_str(),
      WarmupJson(row.warmup).c_str(), JsonNumber(row.others_cpu_share).c_str(),
      row.error.empty() ? "null" : JsonString(row.error).c_str());
  std::fflush(stdout);
}

void FailRow(std::string_view error) {
  Row row;
  row.error = std::string(error);
  PrintRow(row);
  std::exit(1);
}

Row MeasureOneInFlight(const Plan& plan, absl::FunctionRef<std::string()> call, const CopyCounter& copies,
                       const AroundRepetitions& around) {
  auto fail = [](std::string error) {
    Row row;
    row.error = std::move(error);
    return row;
  };
  auto open = [&]() -> std::string { return around.open ? around.open() : ""; };
  auto close = [&]() -> std::string { return around.close ? around.close() : ""; };
  // Warm-up: batches of at least warmup_batch_s and kMinBatchCalls calls.
  // A batch's figure is its p50, or for bulk its time per call (what GB/s
  // is made of).
  constexpr size_t kMinBatchCalls = 8;
  std::vector<int64_t> latencies;
  latencies.reserve(static_cast<size_t>(std::min<int64_t>(plan.max_calls_per_rep, 4'000'000)));
  SteadyState warmup(plan);
  if (std::string error = open(); !error.empty()) return fail(error);
  for (bool done = false; !done;) {
    latencies.clear();
    const int64_t batch_start = NowNanos();
    const int64_t batch_end = batch_start + static_cast<int64_t>(plan.warmup_batch_s * 1e9);
    int64_t now = batch_start;
    while (now < batch_end || latencies.size() < kMinBatchCalls) {
      if (std::string error = call(); !error.empty()) return fail(error);
      const int64_t call_done = NowNanos();
      latencies.push_back(call_done - now);
      now = call_done;
      // A call slower than the whole cap ends the batch on its own.
      if (static_cast<double>(now - batch_start) / 1e9 >= plan.warmup_max_s) break;
    }
    const double per_call_us = static_cast<double>(now - batch_start) / 1000.0 / static_cast<double>(latencies.size());
    const double figure = plan.bulk() ? per_call_us : PercentileUs(latencies, 50);
    done = warmup.Add(figure);
  }
  const Warmup warmed = warmup.Result();
  if (std::string error = close(); !error.empty()) return fail(error);

  std::vector<Rep> reps;
  int64_t calls = 0;
  BusiestThreadCpu server_cpu(plan.server_pid);
  const Usage before = Usage::Now(plan, copies);
  for (int rep = 0; rep < plan.reps; ++rep) {
    if (std::string error = open(); !error.empty()) return fail(error);
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
    Rep r;
    if (plan.bulk()) r.gbytes_per_s = static_cast<double>(latencies.size() * plan.request_bytes()) / elapsed_s / 1e9;
    r.p99_us = PercentileUs(latencies, 99);
    r.p50_us = PercentileUs(latencies, 50);
    const int caller_cpu = sched_getcpu();
    if (const std::optional<int> cpu = server_cpu.Sample(); cpu && caller_cpu >= 0) r.same_cpu = *cpu == caller_cpu;
    reps.push_back(r);
    if (std::string error = close(); !error.empty()) return fail(error);
  }
  const Usage after = Usage::Now(plan, copies);

  Row row;
  SummarizeReps(&row, std::move(reps));
  row.warmup = warmed;
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
  auto sleep_s = SleepSeconds;
  std::vector<int64_t> latencies;
  // Warm-up: a batch's figure is its calls/s.
  SteadyState warmup(plan_);
  TakeCompleted(&latencies);
  for (bool done = false; !done && !stopping_.load();) {
    const int64_t batch_start = NowNanos();
    sleep_s(plan_.warmup_batch_s);
    const int64_t completed = TakeCompleted(&latencies);
    done = warmup.Add(static_cast<double>(completed) / (static_cast<double>(NowNanos() - batch_start) / 1e9));
  }
  const Warmup warmed = warmup.Result();

  std::vector<Rep> reps;
  int64_t calls = 0;
  const Usage before = Usage::Now(plan_, copies);
  for (int rep = 0; rep < plan_.reps && !stopping_.load(); ++rep) {
    const int64_t rep_start = NowNanos();
    TakeCompleted(&latencies);
    sleep_s(plan_.rep_s);
    const int64_t completed = TakeCompleted(&latencies);
    const double elapsed_s = static_cast<double>(NowNanos() - rep_start) / 1e9;
    calls += completed;
    Rep r;
    r.calls_per_s = static_cast<double>(completed) / elapsed_s;
    r.p99_us = PercentileUs(latencies, 99);
    r.p50_us = PercentileUs(latencies, 50);
    reps.push_back(r);
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
  SummarizeReps(&row, std::move(reps));
  row.warmup = warmed;
  FillUsage(&row, plan_, before, after, calls);
  return row;
}

void ReceiveCounter::Fail(std::string_view error) {
  std::lock_guard lock(mu_);
  if (failed_.load(std::memory_order_relaxed)) return;
  error_ = std::string(error);
  failed_.store(true, std::memory_order_release);
}

std::string ReceiveCounter::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

Row MeasureReceiveRate(const Plan& plan, const ReceiveCounter& counter, const CopyCounter& copies) {
  auto fail = [](std::string error) {
    Row row;
    row.error = std::move(error);
    return row;
  };
  // Warm-up: a batch's figure is its messages/s. A batch lasts at least
  // warmup_batch_s and until kMinBatchMessages more have arrived (1 MiB
  // messages can be few per batch), unless the warm-up's cap comes first.
  constexpr int64_t kMinBatchMessages = 8;
  SteadyState warmup(plan);
  int64_t seen = counter.received();
  const int64_t first_seen = seen;
  for (bool done = false; !done;) {
    const int64_t batch_start = NowNanos();
    SleepSeconds(plan.warmup_batch_s);
    while (counter.received() - seen < kMinBatchMessages && !counter.failed() &&
           warmup.elapsed_s() < plan.warmup_max_s) {
      SleepSeconds(0.001);
    }
    if (counter.failed()) return fail(counter.error());
    const int64_t now_seen = counter.received();
    const double batch_s = static_cast<double>(NowNanos() - batch_start) / 1e9;
    done = warmup.Add(static_cast<double>(now_seen - seen) / batch_s);
    seen = now_seen;
  }
  const Warmup warmed = warmup.Result();
  if (seen == first_seen) return fail("no message arrived in " + std::to_string(warmed.seconds) + " s of warm-up");

  std::vector<Rep> reps;
  int64_t messages = 0;
  const Usage before = Usage::Now(plan, copies);
  for (int rep = 0; rep < plan.reps; ++rep) {
    const int64_t rep_start = NowNanos();
    const int64_t start_seen = counter.received();
    SleepSeconds(plan.rep_s);
    const int64_t got = counter.received() - start_seen;
    const double elapsed_s = static_cast<double>(NowNanos() - rep_start) / 1e9;
    if (counter.failed()) return fail(counter.error());
    messages += got;
    Rep r;
    r.calls_per_s = static_cast<double>(got) / elapsed_s;
    r.gbytes_per_s = static_cast<double>(got) * static_cast<double>(plan.payload_bytes) / elapsed_s / 1e9;
    reps.push_back(r);
  }
  const Usage after = Usage::Now(plan, copies);
  if (counter.failed()) return fail(counter.error());

  Row row;
  SummarizeReps(&row, std::move(reps));
  row.warmup = warmed;
  FillUsage(&row, plan, before, after, messages);
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

// Each thread's scheduler run time is kept in ns (/proc/PID/stat's utime
// is in 10 ms ticks, too coarse for one thread's share of a row); but a
// thread that exits takes its run time with it, which gRPC's thread pools
// do, so the whole process's ticks are read too.
ProcessCpu ProcessCpu::Of(pid_t pid) {
  ProcessCpu cpu;
  const std::string proc = "/proc/" + std::to_string(pid);
  if (DIR* tasks = opendir((proc + "/task").c_str())) {
    while (dirent* entry = readdir(tasks)) {
      if (entry->d_name[0] == '.') continue;
      std::ifstream schedstat(proc + "/task/" + entry->d_name + "/schedstat");
      int64_t run_ns = 0;
      if (schedstat >> run_ns) cpu.thread_ns[entry->d_name] = run_ns;
    }
    closedir(tasks);
  }
  // /proc/PID/stat: utime and stime are fields 14 and 15; count after the
  // ')' that ends the command name, which may hold spaces.
  std::ifstream stat(proc + "/stat");
  std::string line;
  std::getline(stat, line);
  if (const size_t paren = line.rfind(')'); paren != std::string::npos) {
    std::istringstream fields(line.substr(paren + 2));
    std::string field;
    int64_t ticks = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i) {
      if (i >= 14) ticks += std::atoll(field.c_str());
    }
    const long hz = sysconf(_SC_CLK_TCK);
    cpu.process_ns = ticks * (1'000'000'000 / (hz > 0 ? hz : 100));
  }
  return cpu;
}

int64_t ProcessCpu::Since(const ProcessCpu& before) const {
  int64_t threads = 0;
  for (const auto& [tid, ns] : thread_ns) {
    const auto was = before.thread_ns.find(tid);
    threads += ns - (was == before.thread_ns.end() ? 0 : was->second);
  }
  return std::max<int64_t>({threads, process_ns - before.process_ns, 0});
}

std::optional<int64_t> MachineBusyNanos() {
  std::ifstream stat("/proc/stat");
  std::string cpu;
  // user nice system idle iowait irq softirq steal, in USER_HZ ticks.
  int64_t t[8] = {};
  if (!(stat >> cpu) || cpu != "cpu") return std::nullopt;
  for (int64_t& field : t) {
    if (!(stat >> field)) return std::nullopt;
  }
  const int64_t busy = t[0] + t[1] + t[2] + t[5] + t[6] + t[7];
  const long hz = sysconf(_SC_CLK_TCK);
  return busy * (1'000'000'000 / (hz > 0 ? hz : 100));
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
