// floor-shm-ring: the unary work between two processes over a pair of
// single-producer single-consumer rings in shared memory, both sides
// busy-polling: the least a same-host call can cost. The server is a forked
// process sharing an anonymous MAP_SHARED mapping.
//   bench_floor_shm_ring --workload unary --payload_bytes 64
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "bench/common/harness.h"
#include "bench/common/work.h"
#include "bench/floors/floor_util.h"

namespace {

namespace bench = zcrpc::bench;
namespace floor = zcrpc::bench::floor;

constexpr uint32_t kSlotBytes = 4096;
constexpr uint32_t kDepth = 16;
constexpr uint32_t kStop = UINT32_MAX;

// A slot is full when its sequence number says so; the consumer polls that
// word, which shares a cache line with the start of the payload, so a small
// message crosses between cores in as few line transfers as possible.
struct alignas(64) Slot {
  std::atomic<uint64_t> sequence{0};  // n + 1 once message n is written
  uint32_t size;                      // payload bytes, or kStop
  uint32_t reply_bytes;
  char data[kSlotBytes];
};

// Single producer, single consumer. Each side keeps its own position in
// private memory; only the producer's "consumed" check reads the other
// side's line, and only when the ring looks full.
struct Ring {
  alignas(64) std::atomic<uint64_t> consumed{0};
  Slot slots[kDepth];
};

class Producer {
 public:
  explicit Producer(Ring* ring) : ring_(ring) {}
  Slot& Next() {
    while (next_ - seen_consumed_ == kDepth) seen_consumed_ = ring_->consumed.load(std::memory_order_acquire);
    return ring_->slots[next_ % kDepth];
  }
  void Publish() {
    ring_->slots[next_ % kDepth].sequence.store(next_ + 1, std::memory_order_release);
    ++next_;
  }

 private:
  Ring* ring_;
  uint64_t next_ = 0;
  uint64_t seen_consumed_ = 0;
};

class Consumer {
 public:
  explicit Consumer(Ring* ring) : ring_(ring) {}
  const Slot& Next() {
    const Slot& slot = ring_->slots[next_ % kDepth];
    while (slot.sequence.load(std::memory_order_acquire) != next_ + 1) {
    }
    return slot;
  }
  void Release() { ring_->consumed.store(++next_, std::memory_order_release); }

 private:
  Ring* ring_;
  uint64_t next_ = 0;
};

struct Region {
  Ring requests;
  Ring replies;
};

void Serve(Region* region) {
  Consumer requests(&region->requests);
  Producer replies(&region->replies);
  for (;;) {
    const Slot& request = requests.Next();
    if (request.size == kStop) return;
    const uint64_t sum = bench::Checksum(request.data, request.size);
    const uint32_t reply_bytes = request.reply_bytes;
    requests.Release();
    Slot& reply = replies.Next();
    reply.size = reply_bytes;
    std::memset(reply.data, 0, reply_bytes);
    if (reply_bytes >= 8) std::memcpy(reply.data, &sum, 8);
    replies.Publish();
  }
}

}  // namespace

int main(int argc, char** argv) {
  bench::Plan plan = bench::ParsePlan(argc, argv, "bench_floor_shm_ring --workload unary [harness flags]");
  if (plan.workload != bench::Workload::kUnary || plan.payload_bytes > kSlotBytes) {
    bench::FailRow("floor-shm-ring measures unary calls of up to 4096 B");
  }
  void* memory = mmap(nullptr, sizeof(Region), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) floor::FailErrno("mmap");
  auto* region = new (memory) Region();
  plan.server_pid = floor::ForkServer([&] { Serve(region); });

  Producer requests(&region->requests);
  Consumer replies(&region->replies);
  const std::string payload = bench::MakePayload(plan.request_bytes());
  const uint64_t checksum = bench::Checksum(payload);
  const bench::Row row = bench::MeasureOneInFlight(
      plan,
      [&]() -> std::string {
        Slot& request = requests.Next();
        request.size = static_cast<uint32_t>(payload.size());
        request.reply_bytes = static_cast<uint32_t>(plan.reply_bytes());
        std::memcpy(request.data, payload.data(), payload.size());
        requests.Publish();
        const Slot& reply = replies.Next();
        const bool ok = reply.size == plan.reply_bytes() &&
                        bench::ReplyBodyMatches(std::string_view(reply.data, reply.size), plan.reply_bytes(), checksum);
        replies.Release();
        return ok ? "" : "reply checksum mismatch";
      },
      nullptr);

  Slot& stop = requests.Next();
  stop.size = kStop;
  requests.Publish();
  floor::ReapServer(plan.server_pid);
  bench::PrintRow(row);
  return row.error.empty() ? 0 : 1;
}
