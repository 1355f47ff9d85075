// Fuzzes the checks one side of an shm connection makes on what its peer
// writes into their shared region (zcrpc/transport/shm/region.h): the
// blocks a descriptor names (TakePeerBlock, and TakeBackLocalBlock for a
// block of ours sent back), the return ring and its indices (ReclaimReturns,
// and the peer's consumed index when we return its blocks). The server's
// side is a real Region on a real memfd; the hostile client is a second,
// raw mapping of the same memfd that writes anything anywhere in the
// shared control words and rings, interleaved with the server lending,
// taking and releasing blocks.
//
// Beyond "no crash, no access outside the mapping": two blocks the server
// holds at once never overlap, and every block it took lies inside the
// peer's slab.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <vector>

#include "zcrpc/base/buffer.h"
#include "zcrpc/transport/internal/unique_fd.h"
#include "zcrpc/transport/shm/region.h"
#include "zcrpc/transport/shm/region_layout.h"

namespace {

namespace shm = zcrpc::transport::shm;
using zcrpc::Buffer;

// Reads the input a few bytes at a time; zeros once it runs out.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint64_t Bytes(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | Byte();
    return v;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A page offset in a 64 KiB slab, mostly; sometimes anything, flags and
// all, so the checks on range, alignment and kInReceiverSlab all run.
uint64_t Offset(Input& in, uint64_t slab_bytes) {
  const uint8_t how = in.Byte();
  if (how < 200) return (how % (slab_bytes / shm::kPage)) * shm::kPage;
  if (how < 230) return in.Bytes(3);
  return in.Bytes(8);
}

uint64_t Length(Input& in) {
  const uint8_t how = in.Byte();
  if (how < 200) return uint64_t{how} * 97 + 1;  // up to ~19 KiB: one to five pages
  if (how < 250) return in.Bytes(3);
  return in.Bytes(8);
}

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  shm::RegionParams params;
  params.slab_bytes = 64 << 10;  // the smallest: inputs reach every page
  params.ring_depth = 4;
  const shm::RegionLayout layout = shm::RegionLayout::For(params);
  zcrpc::StatusOr<int> memfd = shm::Region::CreateMemfd(params);
  if (!memfd.ok()) return 0;
  const int peer_fd = ::dup(*memfd);
  zcrpc::transport::internal::UniqueFd doorbells[2] = {
      zcrpc::transport::internal::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      zcrpc::transport::internal::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))};
  zcrpc::StatusOr<shm::Region*> mapped = shm::Region::Map(*memfd, params, /*is_server=*/true, doorbells);
  if (!mapped.ok()) {
    ::close(peer_fd);
    return 0;
  }
  shm::Region* region = *mapped;
  void* raw = ::mmap(nullptr, layout.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, peer_fd, 0);
  ::close(peer_fd);
  Check(raw != MAP_FAILED);
  auto* peer = static_cast<uint8_t*>(raw);
  auto* control = reinterpret_cast<shm::RingControl*>(peer + layout.control);
  // The ring the client returns our blocks on, and the one we return its on.
  auto* our_returns = reinterpret_cast<uint64_t*>(peer + layout.returns[shm::kServerToClient]);

  std::vector<Buffer> held_peer_blocks;  // the client's blocks we hold
  std::vector<uint64_t> lent;            // offsets of our blocks the client has
  std::vector<Buffer> taken_back;        // our blocks the client sent back in a frame

  while (!in.empty()) {
    switch (in.Byte() % 9) {
      case 0: {  // we lend a block of ours (it goes out in a frame)
        Buffer block = region->Allocate(static_cast<size_t>(in.Bytes(2) % (8 << 10)) + 1);
        if (block.empty()) break;
        const std::optional<uint64_t> offset = region->LocalOffset(block);
        Check(offset.has_value() && *offset < params.slab_bytes);
        lent.push_back(*offset);
        region->Lend(std::move(block));
        break;
      }
      case 1: {  // the client returns a block: one we lent, or anything
        const uint64_t produced = control[shm::kServerToClient].returns_produced.load();
        const uint8_t which = in.Byte();
        uint64_t offset = which < 128 && !lent.empty() ? lent[which % lent.size()] : Offset(in, params.slab_bytes);
        our_returns[produced % layout.return_capacity] = offset;
        control[shm::kServerToClient].returns_produced.store(produced + 1);
        break;
      }
      case 2:  // the client writes its return index outright
        control[shm::kServerToClient].returns_produced.store(in.Bytes(in.Byte() % 9));
        break;
      case 3:  // we take back what the client returned
        (void)region->ReclaimReturns();
        break;
      case 4: {  // a descriptor names a block of the client's slab
        zcrpc::StatusOr<Buffer> block = region->TakePeerBlock(Offset(in, params.slab_bytes), Length(in));
        if (!block.ok()) break;
        const std::optional<uint64_t> offset = region->PeerOffset(*block);
        Check(offset.has_value() && *offset + block->size() <= params.slab_bytes);
        for (const Buffer& other : held_peer_blocks) {
          const uint64_t other_offset = *region->PeerOffset(other);
          Check(*offset + block->size() <= other_offset || other_offset + other.size() <= *offset);
        }
        held_peer_blocks.push_back(*std::move(block));
        break;
      }
      case 5:  // we release a block of the client's: onto the return ring
        if (!held_peer_blocks.empty()) {
          held_peer_blocks.erase(held_peer_blocks.begin() + in.Byte() % held_peer_blocks.size());
        }
        break;
      case 6:  // the client writes how far it took back what we returned
        control[shm::kClientToServer].returns_consumed.store(in.Bytes(in.Byte() % 9));
        break;
      case 7: {  // a descriptor sends a block of ours back (kInReceiverSlab)
        const uint8_t which = in.Byte();
        const uint64_t offset =
            which < 128 && !lent.empty() ? lent[which % lent.size()] : Offset(in, params.slab_bytes);
        zcrpc::StatusOr<Buffer> block = region->TakeBackLocalBlock(offset, Length(in));
        if (block.ok()) {
          Check(region->LocalOffset(*block).has_value());
          taken_back.push_back(*std::move(block));
        }
        break;
      }
      case 8: {  // the client scribbles on any control word
        auto* words = reinterpret_cast<uint64_t*>(control);
        words[in.Byte() % (2 * sizeof(shm::RingControl) / sizeof(uint64_t))] = in.Bytes(8);
        break;
      }
    }
  }
  region->MarkClosed();
  held_peer_blocks.clear();
  taken_back.clear();
  region->Unref();
  ::munmap(raw, layout.total_bytes);
  return 0;
}
