// SlabAllocator: a buddy allocator over one side's slab of a shared-memory
// region, in offsets (each process maps the region at its own address).
// Blocks are 4 KiB << k, aligned to their size, so every buffer is
// page-aligned.
//
// Each block is free, held (a Buffer for it is alive in this process) or
// lent (sent to the peer, not yet returned). The states are what lets the
// owner reject a return it never lent, or a second return of one block.
// Not thread-safe: the connection serialises calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace zcrpc::transport::shm {

class SlabAllocator {
 public:
  static constexpr size_t kMinBlock = 4096;

  // `slab_bytes`: a power of two, at least kMinBlock.
  explicit SlabAllocator(size_t slab_bytes);

  struct Block {
    uint64_t offset;  // from the start of the slab
    uint64_t size;    // the block's capacity, >= the size asked for
  };
  // A held block of at least `bytes` (> 0), or nullopt if none is free.
  std::optional<Block> Allocate(size_t bytes);

  // Held -> free: a local buffer died without being sent.
  void Free(uint64_t offset);
  // Held -> lent: the buffer went to the peer.
  void Lend(uint64_t offset);
  // Lent -> free. False (and nothing changes) unless `offset` starts a lent
  // block: the peer returned something it was never lent, or twice.
  bool Return(uint64_t offset);
  // Lent -> held: the peer sent the block back inside a frame. Returns the
  // block's size, or 0 (nothing changes) unless `offset` starts a lent block.
  size_t Reclaim(uint64_t offset);

  size_t slab_bytes() const { return slab_bytes_; }
  size_t free_bytes() const { return free_bytes_; }
  // The capacity of the block starting at `offset`, 0 if no block starts there.
  size_t BlockSize(uint64_t offset) const;

 private:
  enum class State : uint8_t { kNone, kFree, kHeld, kLent };
  static constexpr uint32_t kNil = UINT32_MAX;

  void Push(uint32_t index, int order);
  void Unlink(uint32_t index, int order);
  void Release(uint32_t index);

  const size_t slab_bytes_;
  const int max_order_;
  size_t free_bytes_;
  // Per 4 KiB index: the state and order of the block that starts there.
  std::vector<State> state_;
  std::vector<int8_t> order_;
  // Free lists per order, linked through the block's first index.
  std::vector<uint32_t> next_, prev_, heads_;
};

}  // namespace zcrpc::transport::shm
