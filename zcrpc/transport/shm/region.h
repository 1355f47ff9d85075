// Region: one shm connection's shared memory as this side sees it. It owns
// the mapping and the memfd, the two doorbell eventfds, this side's slab
// allocator, and the record of
// which blocks of the peer's slab this side holds. It outlives the
// connection while any Buffer into it is alive (reference counted), so a
// handler may keep a received buffer after the peer is gone.
//
// Everything read from the region is treated as the peer's word, not as
// fact: offsets, lengths and indices are checked before use, and a
// violation is reported, never acted on.
#pragma once

#include <unistd.h>

#include <atomic>
#include <mutex>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "zcrpc/base/buffer.h"
#include "zcrpc/base/status.h"
#include "zcrpc/transport/internal/unique_fd.h"
#include "zcrpc/transport/shm/region_layout.h"
#include "zcrpc/transport/shm/slab_allocator.h"

namespace zcrpc::transport::shm {

class Region {
 public:
  // The server creates the memfd: sized, sealed against shrinking and
  // growing, with the header written. Returns the fd.
  static StatusOr<int> CreateMemfd(const RegionParams& params);

  // Maps `memfd` (taken: closed with the region) after checking its size
  // and seals. Takes the doorbells too (indexed by direction), so that a
  // buffer released after its connection is gone can still ring the peer.
  // Starts with one reference, the connection's.
  static StatusOr<Region*> Map(int memfd, const RegionParams& params, bool is_server,
                               internal::UniqueFd doorbells[2]);

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref();

  const RegionLayout& layout() const { return layout_; }
  RingControl& send_control() { return control(send_dir_); }
  RingControl& receive_control() { return control(receive_dir_); }
  Descriptor* send_ring() { return At<Descriptor>(layout_.descriptors[send_dir_]); }
  Descriptor* receive_ring() { return At<Descriptor>(layout_.descriptors[receive_dir_]); }
  // The peer sleeps on this one (we write it); we sleep on the other.
  int send_doorbell() const { return doorbell_[send_dir_].get(); }
  int receive_doorbell() const { return doorbell_[receive_dir_].get(); }

  // After this side consumed descriptors or returned blocks of the peer's
  // slab: if the peer waits for that (sender_waiting), ring it. The caller
  // made its progress visible with a sequentially consistent store or fence
  // first; the peer sets the flag and then looks at our indices the same
  // way, so one of the two sees the other.
  void WakeWaitingSender() {
    std::atomic<uint32_t>& waiting = receive_control().sender_waiting;
    if (waiting.load(std::memory_order_seq_cst) != 0 && waiting.exchange(0) != 0) {
      const uint64_t one = 1;
      (void)!::write(send_doorbell(), &one, sizeof one);
    }
  }

  // --- this side's slab (sending) ---
  //
  // Blocks of up to 4 KiB come from a SmallBlockCache: allocating, lending,
  // freeing and taking them back cost no mutex. Larger blocks, and small
  // ones while the cache is exhausted, come from the SlabAllocator under
  // allocator_mu_.

  // A block of this side's slab, or an empty Buffer if none is free now.
  // Any thread. The Buffer owns the block (and a reference to the region).
  Buffer Allocate(size_t size);
  // For the head of the connection's send queue: a block for each of
  // `sizes` (each > 0, at most kMaxParts of them) into `blocks`, all or
  // none. Any thread, one at a time (the connection's send lock); the
  // Buffers own their blocks. All or none, because a frame that keeps some
  // blocks while it waits for others can fragment the buddy slab so that
  // the rest never fit. On none, the next block freed in this process (a
  // local Buffer released) rings this side's own doorbell, so the queue's
  // flusher learns of it as it learns of the peer's returns (through
  // sender_waiting) instead of waiting for its next stall tend.
  bool AllocateBlocks(std::span<const size_t> sizes, std::span<Buffer> blocks);
  // The offset of `buffer` in this side's slab, if it is one of its blocks.
  std::optional<uint64_t> LocalOffset(const Buffer& buffer) const;
  // The buffer's block goes to the peer: it comes back on the return ring.
  // Any thread, once per block, before the descriptor naming it is published.
  void Lend(Buffer buffer);
  // Takes back the blocks the peer returned. An error (a bad index, a block
  // never lent or returned twice) means the peer broke the protocol; it is
  // sticky. Any thread: one takes them at a time, and a second caller finds
  // the return ring being emptied and leaves at once. Costs one load of the
  // peer's index when nothing was returned.
  Status ReclaimReturns();

  // A block of ours the peer sent back inside a frame (kInReceiverSlab):
  // it must be one we lent; it becomes a local Buffer again. Any thread.
  StatusOr<Buffer> TakeBackLocalBlock(uint64_t offset, uint64_t length);

  // --- the peer's slab (receiving) ---

  // Checks that [offset, offset + length) lies in the peer's slab, starts on
  // a page, and overlaps no block this side already holds; then hands it
  // over as a Buffer whose release puts it on the return ring. Only the
  // connection's reader (one thread at a time, handed over with
  // acquire/release by ReadOwnership) may call it: it checks the held marks
  // and then sets them, which is race-free only because no one else sets
  // them (releases, on any thread, only clear them).
  StatusOr<Buffer> TakePeerBlock(uint64_t offset, uint64_t length);

  // The offset of `buffer` in the peer's slab, if it is a block this side
  // holds (received earlier); such a buffer can be sent back with no copy.
  std::optional<uint64_t> PeerOffset(const Buffer& buffer) const;
  // The held peer block goes back to the peer inside a frame, not through
  // the return ring. Any thread (the sender).
  void GiveBack(Buffer buffer);

  // The connection is closed: released peer blocks are no longer returned.
  void MarkClosed() { closed_.store(true, std::memory_order_release); }
  // A violation found while returning a block (on whatever thread released
  // it); the connection closes on it. Any thread; one atomic load while
  // there is none.
  Status returns_error() const { return returns_error_.get(); }

 private:
  class LocalOwner final : public BufferOwner {
   public:
    explicit LocalOwner(Region* region) : region_(region) {}
    void Release(uint8_t* data, size_t capacity) noexcept override;

   private:
    Region* const region_;
  };
  class PeerOwner final : public BufferOwner {
   public:
    explicit PeerOwner(Region* region) : region_(region) {}
    void Release(uint8_t* data, size_t capacity) noexcept override;

   private:
    Region* const region_;
  };

  Region(uint8_t* base, int memfd, const RegionLayout& layout, bool is_server, internal::UniqueFd doorbells[2]);
  ~Region();

  template <class T>
  T* At(uint64_t offset) {
    return reinterpret_cast<T*>(base_ + offset);
  }
  RingControl& control(int dir) { return At<RingControl>(layout_.control)[dir]; }
  uint8_t* local_slab() { return base_ + layout_.slab[send_dir_]; }
  uint8_t* peer_slab() { return base_ + layout_.slab[receive_dir_]; }
  // REQUIRES: holding the reclaim token (reclaiming_). `lock` is
  // allocator_mu_, taken (if not held yet) for the first returned block that
  // is not a cached one.
  Status TakeReturns(std::unique_lock<std::mutex>& lock);
  // Takes the reclaim token, waiting for another holder if `wait`.
  Status ReclaimReturns(bool wait);
  // A block for `size` bytes, not yet a Buffer (no reference taken).
  std::optional<SlabAllocator::Block> TakeBlock(size_t size);
  std::optional<SlabAllocator::Block> TakeSmallBlock();
  std::optional<SlabAllocator::Block> TakeLargeBlock(size_t size);
  // Frees a block taken and never lent; rings nobody.
  void FreeBlock(uint64_t offset);
  Buffer LocalBuffer(uint64_t offset, size_t size, size_t capacity) {
    Ref();
    return Buffer::Take(local_slab() + offset, size, capacity, &local_owner_);
  }
  void ReturnPeerBlock(uint64_t offset, size_t capacity);
  // Advances returns_produced over the contiguous slots marked ready.
  void PublishReturns();
  void ForgetPeerBlock(uint64_t offset, size_t capacity);
  // The first error a protocol check found, kept: set once (later ones
  // are dropped), read with one atomic load while there is none. The mutex
  // guards only the (rare) error's text.
  class StickyError {
   public:
    bool failed() const { return failed_.load(std::memory_order_acquire); }
    Status get() const {
      if (!failed()) return absl::OkStatus();
      std::lock_guard lock(mu_);
      return error_;
    }
    // Keeps `error` unless one is kept already; returns the kept one.
    Status Set(Status error) {
      std::lock_guard lock(mu_);
      if (!failed_.load(std::memory_order_relaxed)) {
        error_ = std::move(error);
        failed_.store(true, std::memory_order_release);
      }
      return error_;
    }

   private:
    std::atomic<bool> failed_{false};
    mutable std::mutex mu_;
    Status error_ ABSL_GUARDED_BY(mu_);
  };

  uint8_t* const base_;
  const int memfd_;
  const RegionLayout layout_;
  const int send_dir_;
  const int receive_dir_;
  internal::UniqueFd doorbell_[2];  // eventfd per direction, written by that direction's sender
  LocalOwner local_owner_{this};
  PeerOwner peer_owner_{this};
  std::atomic<int64_t> refs_{1};

  // --- this side's slab ---
  // The cache is bounded to what the old code let pile up between two looks
  // at the return ring (256 KiB), so the blocks in use stay few and warm: a
  // drained cache is what sends the allocator to the return ring.
  static constexpr size_t kReclaimEveryBytes = 256 << 10;
  SmallBlockCache cache_;
  std::mutex allocator_mu_;
  SlabAllocator allocator_ ABSL_GUARDED_BY(allocator_mu_);
  // Bytes of large blocks allocated since the return ring was last emptied.
  std::atomic<uint64_t> allocated_since_reclaim_{0};
  // AllocateBlocks found no room: the next local free rings our doorbell.
  // A Dekker pair, since small blocks are freed without a lock: the
  // flusher stores it and then looks at the free lists, a freer frees and
  // then loads it, each with a seq_cst fence between, so at least one sees
  // the other.
  std::atomic<bool> queue_waits_for_block_{false};
  // The return ring's consumer: whoever swaps this to true. It alone reads
  // the ring and writes returns_taken_ and returns_consumed.
  std::atomic<bool> reclaiming_{false};
  std::atomic<uint64_t> returns_taken_{0};  // read without the token only as a hint
  StickyError reclaim_error_;  // the peer broke the return protocol

  // --- the peer's slab ---
  // Per page of the peer's slab: 1 while we hold it. Set only by the reader
  // (TakePeerBlock), cleared by whoever lets go of the block.
  std::unique_ptr<std::atomic<uint8_t>[]> held_pages_;
  // The return ring's producers are all the threads that release buffers.
  // Each reserves a slot (returns_reserved_), writes its offset there and
  // marks it ready (return_ready_[slot] = ticket + 1); whoever holds the
  // publishing_ token then moves returns_produced over every contiguous
  // ready slot, so the peer's index only ever grows and never covers a slot
  // not yet written. PublishReturns explains why no mark is left behind.
  std::atomic<uint64_t> returns_reserved_{0};
  std::atomic<uint64_t> returns_given_{0};       // what returns_produced says; written by the token holder
  std::atomic<uint64_t> returns_taken_seen_{0};  // the peer's returns_consumed, checked, never backwards
  std::unique_ptr<std::atomic<uint64_t>[]> return_ready_;
  std::atomic<bool> publishing_{false};
  std::atomic<bool> closed_{false};
  StickyError returns_error_;  // returning the peer's blocks failed
};

}  // namespace zcrpc::transport::shm
