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

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
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

// SmallBlockCache: lock-free bookkeeping for a bounded set of 4 KiB blocks
// that the Region carved out of its SlabAllocator (which counts them as held
// for as long as they are cached), so that the common small allocation, its
// lending, its return by the peer and its reuse take no mutex.
//
// Each cached block has one atomic state (free, held, lent) in a per-page
// array; a page whose state is kNotCached is the SlabAllocator's business and
// every call below says so (kNotCached / false) so that the caller falls back
// to the allocator under its lock. Free blocks sit on a tagged Treiber stack
// linked through a per-page `next` array.
//
// Why it is race-free: every transition has exactly one party entitled to
// make it, and the ones the peer can provoke are compare-and-swaps.
//   free -> held      Pop(): only the thread whose CAS on the stack head
//                     unlinked the block; no other path leaves `free`.
//   held -> lent      Lend(), held -> free Free(): only the Buffer's owner,
//                     which is one thread at a time by Buffer's own rules.
//   lent -> free      Return(), lent -> held Reclaim(): both are the peer's
//                     word and may race each other (a hostile peer returns a
//                     block and also sends it back), so both are a CAS from
//                     `lent`: exactly one wins, the other is refused as a
//                     double return.
//   free -> not cached  EvictFree(): like Pop(), only after unlinking.
//   not cached -> held  Adopt(): the caller got the block from the
//                     SlabAllocator, so nobody else can name it.
// The head word carries a 32-bit tag bumped by every successful push and pop,
// so a pop that read a stale `next` (its block was popped and pushed again
// meanwhile) fails its CAS instead of corrupting the stack (ABA).
// Memory: a push releases, a pop acquires, so what the last owner wrote into
// the block happens before the next owner's use.
//
// Every member may be called from any thread, concurrently.
class SmallBlockCache {
 public:
  static constexpr size_t kBlock = SlabAllocator::kMinBlock;
  enum class Result { kDone, kNotCached, kRefused };

  // `slab_bytes` as for SlabAllocator; at most `capacity` blocks are ever
  // cached at once.
  SmallBlockCache(size_t slab_bytes, uint32_t capacity);

  // A free cached block, now held by the caller; nullopt if none is free.
  std::optional<uint64_t> Pop();
  // A block the caller just took from the SlabAllocator (so held, and named
  // by nobody else) joins the cache as held by the caller. False (nothing
  // changes) if the cache already owns `capacity` blocks.
  bool Adopt(uint64_t offset);
  // Held -> free, for a block the caller holds. False if it is not cached.
  bool Free(uint64_t offset);
  // Held -> lent, for a block the caller holds. False if it is not cached.
  bool Lend(uint64_t offset);
  // The peer's word that it is done with `offset`: lent -> free. kRefused if
  // it is a cached block that is not lent (never lent, or returned twice);
  // kNotCached if the offset is not a cached block (or not even a page of
  // the slab: then the SlabAllocator refuses it).
  Result Return(uint64_t offset);
  // The peer sent `offset` back inside a frame, `length` bytes of it: lent ->
  // held by the caller. kRefused if it is cached but not lent, or `length`
  // exceeds the block.
  Result Reclaim(uint64_t offset, uint64_t length);
  // Unlinks every free block, makes it not cached and passes its offset to
  // `give_back` (which hands it to the SlabAllocator). For when a larger
  // allocation fails: cached free pages may be what splits the slab.
  template <class F>
  void EvictFree(F&& give_back) {
    while (std::optional<uint64_t> offset = Pop()) {
      state_[*offset / kBlock].store(kNotCached, std::memory_order_relaxed);
      owned_.fetch_sub(1, std::memory_order_relaxed);
      give_back(*offset);
    }
  }

  uint32_t owned() const { return owned_.load(std::memory_order_relaxed); }

 private:
  enum : uint8_t { kNotCached, kFree, kHeld, kLent };
  static constexpr uint32_t kNil = UINT32_MAX;

  std::atomic<uint8_t>* StateOf(uint64_t offset) {
    if (offset % kBlock != 0 || offset >= slab_bytes_) return nullptr;
    return &state_[offset / kBlock];
  }
  void Push(uint32_t index);

  const size_t slab_bytes_;
  const uint32_t capacity_;
  std::unique_ptr<std::atomic<uint8_t>[]> state_;  // per page
  std::unique_ptr<std::atomic<uint32_t>[]> next_;  // per page, for free blocks
  std::atomic<uint64_t> head_;                     // tag << 32 | page index (kNil: empty)
  std::atomic<uint32_t> owned_{0};
};

}  // namespace zcrpc::transport::shm
