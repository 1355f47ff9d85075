#include "zcrpc/transport/shm/region_layout.h"

#include <bit>

#include "absl/strings/str_cat.h"

namespace zcrpc::transport::shm {
namespace {

uint64_t PageAlign(uint64_t n) { return (n + kPage - 1) / kPage * kPage; }

}  // namespace

Status ValidateParams(const RegionParams& p) {
  if (!std::has_single_bit(p.slab_bytes) || p.slab_bytes < (64u << 10) || p.slab_bytes > (16ull << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shm slab size ", p.slab_bytes, " is not a power of two between 64 KiB and 16 GiB"));
  }
  if (!std::has_single_bit(p.ring_depth) || p.ring_depth < 2 || p.ring_depth > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("shm ring depth ", p.ring_depth, " is not a power of two between 2 and 65536"));
  }
  return absl::OkStatus();
}

RegionLayout RegionLayout::For(const RegionParams& params) {
  RegionLayout l;
  l.params = params;
  l.return_capacity = params.slab_bytes / kPage;
  uint64_t at = kPage;  // page 0: RegionHeader
  l.control = at;
  at = PageAlign(at + 2 * sizeof(RingControl));
  for (int d = 0; d < 2; ++d) {
    l.descriptors[d] = at;
    at = PageAlign(at + uint64_t{params.ring_depth} * sizeof(Descriptor));
  }
  for (int d = 0; d < 2; ++d) {
    l.returns[d] = at;
    at = PageAlign(at + l.return_capacity * sizeof(uint64_t));
  }
  for (int d = 0; d < 2; ++d) {
    l.slab[d] = at;
    at += params.slab_bytes;
  }
  l.total_bytes = at;
  return l;
}

}  // namespace zcrpc::transport::shm
