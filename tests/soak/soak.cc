// The soak test (docs/reliability.md, "Soak"): mixed load over every
// transport for a given time, with faults injected, watching that the
// process's resident memory, open descriptors and threads stay flat. Not
// in CI (it runs for minutes); run it by hand:
//
//   build/tests/soak --seconds 600 [--sample-seconds 10]
//
// One process holds a server on tcp://, shm:// and loopback:// and the
// clients: per transport, threads making unary calls (payloads of 64 B to
// 256 KiB, attachments on some) and bidirectional streams; over tcp also
// through a chaos proxy that resets one connection in three, and over
// loopback with a hook that drops frames; calls with short deadlines that
// expire; cancelled streams. It prints one line per sample, then the
// growth from the first sample after warm-up to the last, and exits 1 if
// RSS grew by more than 25 % or 64 MiB, or descriptors or threads by more
// than 16 (a leak), or if any call ended with a status its fault does not
// explain.
#include <dirent.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "examples/interop/grpc_test_service.h"
#include "tests/fault/chaos_proxy.h"
#include "zcrpc/zcrpc.h"

namespace {

using grpc::testing::SimpleRequest;
using grpc::testing::SimpleResponse;
using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;
using grpc::testing::TestService;
using std::chrono::milliseconds;

struct Sample {
  double seconds;
  long rss_kib;
  int fds;
  int threads;
  uint64_t calls;
};

long StatusField(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) return std::strtol(line.c_str() + std::strlen(field), nullptr, 10);
  }
  return -1;
}

int OpenDescriptors() {
  int n = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (::readdir(dir) != nullptr) ++n;
    ::closedir(dir);
  }
  return n - 2;  // . and ..
}

// Outcomes by status code, and the ones no fault explains.
struct Tally {
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> unexplained{0};
  std::mutex mu;
  std::map<std::string, uint64_t> by_code;
  std::string first_unexplained;

  void Count(const std::string& where, const zcrpc::Status& status, bool faulty) {
    calls.fetch_add(1, std::memory_order_relaxed);
    const zcrpc::StatusCode code = status.code();
    // Faults and short deadlines explain these; a clean path explains only
    // OK, DEADLINE_EXCEEDED (its deadlines are short on purpose) and
    // CANCELLED (streams it cancels).
    const bool explained = code == zcrpc::StatusCode::kOk || code == zcrpc::StatusCode::kDeadlineExceeded ||
                           code == zcrpc::StatusCode::kCancelled || (faulty && code == zcrpc::StatusCode::kUnavailable);
    std::lock_guard lock(mu);
    ++by_code[where + " " + absl::StatusCodeToString(code)];
    if (!explained && unexplained.fetch_add(1) == 0) first_unexplained = where + ": " + status.ToString();
  }
};

void UnaryLoop(const std::string& uri, const std::string& where, bool faulty, const std::atomic<bool>& stop,
               Tally& tally, unsigned seed) {
  std::minstd_rand random(seed);
  auto channel = zcrpc::Channel::Create(uri);
  if (!channel.ok()) {
    std::fprintf(stderr, "soak: %s\n", channel.status().ToString().c_str());
    std::exit(2);
  }
  auto stub = TestService::NewStub(*channel);
  static constexpr int kSizes[] = {64, 4096, 65536, 262144};
  while (!stop.load()) {
    SimpleRequest request;
    request.mutable_payload()->set_body(std::string(static_cast<size_t>(kSizes[random() % 4]), 's'));
    request.set_response_size(kSizes[random() % 4]);
    SimpleResponse response;
    zcrpc::ClientContext ctx;
    // One call in ten has a deadline too short to make.
    ctx.set_timeout(random() % 10 == 0 ? std::chrono::microseconds(50) : std::chrono::microseconds(5'000'000));
    if (random() % 4 == 0) {
      zcrpc::Buffer attachment = (*channel)->AllocateBuffer(16384);
      std::memset(attachment.data(), 7, attachment.size());
      ctx.AddAttachment(std::move(attachment));
    }
    tally.Count(where + " unary", stub->UnaryCall(&ctx, request, &response), faulty);
  }
}

void StreamLoop(const std::string& uri, const std::string& where, bool faulty, const std::atomic<bool>& stop,
                Tally& tally, unsigned seed) {
  std::minstd_rand random(seed);
  auto channel = zcrpc::Channel::Create(uri);
  if (!channel.ok()) std::exit(2);
  auto stub = TestService::NewStub(*channel);
  while (!stop.load()) {
    zcrpc::ClientContext ctx;
    ctx.set_timeout(std::chrono::seconds(5));
    auto stream = stub->FullDuplexCall(&ctx);
    StreamingOutputCallRequest request;
    request.add_response_parameters()->set_size(static_cast<int>(random() % 20000));
    StreamingOutputCallResponse response;
    const int messages = static_cast<int>(random() % 50);
    const bool cancel = random() % 8 == 0;
    for (int i = 0; i < messages; ++i) {
      if (!stream->Write(request) || !stream->Read(&response)) break;
      if (cancel && i == messages / 2) ctx.TryCancel();
    }
    stream->WritesDone();
    while (stream->Read(&response)) {
    }
    tally.Count(where + " stream", stream->Finish(), faulty);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int seconds = 60;
  int sample_seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--sample-seconds") == 0) sample_seconds = std::max(1, std::atoi(argv[i + 1]));
  }
  zcrpc::testing::GrpcTestService service;
  zcrpc::Server server;
  if (!server.RegisterService(&service).ok()) return 2;
  auto tcp = server.AddListener("tcp://127.0.0.1:0");
  auto shm = server.AddListener("shm://soak-*");
  auto loopback = server.AddListener("loopback://soak-*");
  if (!tcp.ok() || !shm.ok() || !loopback.ok()) {
    std::fprintf(stderr, "soak: cannot listen\n");
    return 2;
  }
  zcrpc::testing::ChaosFault reset;
  reset.kind = zcrpc::testing::ChaosFault::Kind::kReset;
  reset.after_bytes = 3 * 1024 * 1024;  // most connections carry a few calls first
  zcrpc::testing::ChaosProxy proxy(*tcp, reset);

  struct Path {
    std::string uri, name;
    bool faulty;
  };
  const std::vector<Path> paths = {{*tcp, "tcp", false},
                                   {*shm, "shm", false},
                                   {*loopback, "loopback", false},
                                   {proxy.uri(), "tcp+reset", true},
                                   {*loopback + "?drop_every=97", "loopback+drop", true}};
  Tally tally;
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  unsigned seed = 1;
  for (const Path& path : paths) {
    clients.emplace_back(UnaryLoop, path.uri, path.name, path.faulty, std::cref(stop), std::ref(tally), seed++);
    clients.emplace_back(StreamLoop, path.uri, path.name, path.faulty, std::cref(stop), std::ref(tally), seed++);
  }

  const auto start = std::chrono::steady_clock::now();
  std::vector<Sample> samples;
  std::printf("%8s %10s %6s %8s %12s\n", "seconds", "rss_kib", "fds", "threads", "calls");
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(seconds)) {
    std::this_thread::sleep_for(std::chrono::seconds(sample_seconds));
    Sample s{std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), StatusField("VmRSS:"),
             OpenDescriptors(), static_cast<int>(StatusField("Threads:")), tally.calls.load()};
    samples.push_back(s);
    std::printf("%8.0f %10ld %6d %8d %12llu\n", s.seconds, s.rss_kib, s.fds, s.threads,
                static_cast<unsigned long long>(s.calls));
    std::fflush(stdout);
  }
  stop.store(true);
  for (std::thread& t : clients) t.join();

  std::printf("\noutcomes:\n");
  for (const auto& [what, n] : tally.by_code) std::printf("  %-40s %llu\n", what.c_str(), static_cast<unsigned long long>(n));
  if (samples.size() < 3) {
    std::printf("too short to judge: run for at least 3 samples\n");
    return 0;
  }
  // The first fifth is warm-up: pools and caches fill.
  const Sample& first = samples[samples.size() / 5];
  const Sample& last = samples.back();
  const long rss_growth = last.rss_kib - first.rss_kib;
  std::printf("\nfrom %.0f s to %.0f s: rss %+ld KiB (%+.1f %%), fds %+d, threads %+d, %llu calls\n", first.seconds,
              last.seconds, rss_growth, 100.0 * static_cast<double>(rss_growth) / static_cast<double>(first.rss_kib),
              last.fds - first.fds, last.threads - first.threads,
              static_cast<unsigned long long>(last.calls - first.calls));
  bool failed = false;
  if (rss_growth > std::max<long>(64 * 1024, first.rss_kib / 4)) {
    std::printf("FAIL: resident memory grew\n");
    failed = true;
  }
  if (last.fds - first.fds > 16 || last.threads - first.threads > 16) {
    std::printf("FAIL: descriptors or threads grew\n");
    failed = true;
  }
  if (tally.unexplained.load() > 0) {
    std::printf("FAIL: %llu calls ended with a status no fault explains; the first: %s\n",
                static_cast<unsigned long long>(tally.unexplained.load()), tally.first_unexplained.c_str());
    failed = true;
  }
  if (!failed) std::printf("PASS\n");
  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  return failed ? 1 : 0;
}
