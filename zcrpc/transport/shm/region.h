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
#include <optional>
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

  // A block of this side's slab, or an empty Buffer if none is free now.
  Buffer Allocate(size_t size);
  // The offset of `buffer` in this side's slab, if it is one of its blocks.
  std::optional<uint64_t> LocalOffset(const Buffer& buffer) const;
  // The buffer's block goes to the peer: it comes back on the return ring.
  void Lend(Buffer buffer);
  // Takes back the blocks the peer returned. An error (a bad index, a block
  // never lent or returned twice) means the peer broke the protocol.
  Status ReclaimReturns();

  // A block of ours the peer sent back inside a frame (kInReceiverSlab):
  // it must be one we lent; it becomes a local Buffer again.
  StatusOr<Buffer> TakeBackLocalBlock(uint64_t offset, uint64_t length);

  // --- the peer's slab (receiving) ---

  // Checks that [offset, offset + length) lies in the peer's slab, starts on
  // a page, and overlaps no block this side already holds; then hands it
  // over as a Buffer whose release puts it on the return ring.
  StatusOr<Buffer> TakePeerBlock(uint64_t offset, uint64_t length);

  // The offset of `buffer` in the peer's slab, if it is a block this side
  // holds (received earlier); such a buffer can be sent back with no copy.
  std::optional<uint64_t> PeerOffset(const Buffer& buffer) const;
  // The held peer block goes back to the peer inside a frame, not through
  // the return ring.
  void GiveBack(Buffer buffer);

  // The connection is closed: released peer blocks are no longer returned.
  void MarkClosed();
  // A violation found while returning a block (on whatever thread released
  // it); the connection closes on it.
  Status returns_error();

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
  Status ReclaimReturnsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(allocator_mu_);
  Status TakeReturnsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(allocator_mu_);
  void ReturnPeerBlock(uint64_t offset, size_t capacity);
  void ForgetPeerBlock(uint64_t offset, size_t capacity) ABSL_EXCLUSIVE_LOCKS_REQUIRED(held_mu_);

  uint8_t* const base_;
  const int memfd_;
  const RegionLayout layout_;
  const int send_dir_;
  const int receive_dir_;
  internal::UniqueFd doorbell_[2];  // eventfd per direction, written by that direction's sender
  LocalOwner local_owner_{this};
  PeerOwner peer_owner_{this};
  std::atomic<int64_t> refs_{1};

  std::mutex allocator_mu_;
  SlabAllocator allocator_ ABSL_GUARDED_BY(allocator_mu_);
  uint64_t returns_taken_ ABSL_GUARDED_BY(allocator_mu_) = 0;
  static constexpr uint64_t kReclaimEveryBytes = 256 << 10;
  uint64_t allocated_since_reclaim_ ABSL_GUARDED_BY(allocator_mu_) = 0;
  Status reclaim_error_ ABSL_GUARDED_BY(allocator_mu_);

  std::mutex held_mu_;
  std::vector<uint8_t> held_pages_ ABSL_GUARDED_BY(held_mu_);  // of the peer's slab
  uint64_t returns_given_ ABSL_GUARDED_BY(held_mu_) = 0;
  uint64_t returns_taken_seen_ ABSL_GUARDED_BY(held_mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(held_mu_) = false;
  Status returns_error_ ABSL_GUARDED_BY(held_mu_);
};

}  // namespace zcrpc::transport::shm
