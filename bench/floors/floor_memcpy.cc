// floor-memcpy: what copying the payload once costs on this machine, the
// unit every "bytes copied" figure is paid in. One process; each "call" is
// one memcpy of --payload_bytes between two warm buffers.
//   bench_floor_memcpy --workload bulk --payload_bytes 1048576
#include <cstring>
#include <string>
#include <vector>

#include "bench/common/harness.h"
#include "bench/common/work.h"

int main(int argc, char** argv) {
  const zcrpc::bench::Plan plan = zcrpc::bench::ParsePlan(argc, argv, "bench_floor_memcpy [harness flags]");
  const std::string source = zcrpc::bench::MakePayload(plan.request_bytes());
  std::vector<char> destination(source.size() + 1);
  const zcrpc::bench::Row row = zcrpc::bench::MeasureOneInFlight(
      plan,
      [&] {
        std::memcpy(destination.data(), source.data(), source.size());
        // Keeps the compiler from dropping a copy nobody reads.
        asm volatile("" : : "r"(destination.data()) : "memory");
        return std::string();
      },
      nullptr);
  zcrpc::bench::PrintRow(row);
  return row.error.empty() ? 0 : 1;
}
