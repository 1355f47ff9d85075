#include "zcrpc/transport/shm/region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "zcrpc/transport/internal/errno_status.h"

namespace zcrpc::transport::shm {

StatusOr<int> Region::CreateMemfd(const RegionParams& params) {
  ZCRPC_RETURN_IF_ERROR(ValidateParams(params));
  const RegionLayout layout = RegionLayout::For(params);
  const int fd = memfd_create("zcrpc-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return internal::ErrnoError("memfd_create");
  if (ftruncate(fd, static_cast<off_t>(layout.total_bytes)) != 0 ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    Status error = internal::ErrnoError("sizing and sealing the shm region");
    close(fd);
    return error;
  }
  const RegionHeader header{kRegionMagic, params.slab_bytes, params.ring_depth};
  if (pwrite(fd, &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header)) {
    Status error = internal::ErrnoError("writing the shm region header");
    close(fd);
    return error;
  }
  return fd;
}

StatusOr<Region*> Region::Map(int memfd, const RegionParams& params, bool is_server,
                              internal::UniqueFd doorbells[2]) {
  auto fail = [memfd](Status status) {
    close(memfd);
    return status;
  };
  if (Status valid = ValidateParams(params); !valid.ok()) return fail(valid);
  const RegionLayout layout = RegionLayout::For(params);
  struct stat st {};
  if (fstat(memfd, &st) != 0) return fail(internal::ErrnoError("fstat on the shm region"));
  if (static_cast<uint64_t>(st.st_size) < layout.total_bytes) {
    return fail(absl::FailedPreconditionError(absl::StrCat("shm region is ", st.st_size, " bytes, its layout needs ",
                                                           layout.total_bytes)));
  }
  // Without this seal the peer could shrink the file under the mapping and
  // turn our next read into SIGBUS.
  const int seals = fcntl(memfd, F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    return fail(absl::FailedPreconditionError("shm region is not sealed against shrinking"));
  }
  void* base = mmap(nullptr, layout.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (base == MAP_FAILED) return fail(internal::ErrnoError("mmap of the shm region"));
  return new Region(static_cast<uint8_t*>(base), memfd, layout, is_server, doorbells);
}

Region::Region(uint8_t* base, int memfd, const RegionLayout& layout, bool is_server, internal::UniqueFd doorbells[2])
    : base_(base),
      memfd_(memfd),
      layout_(layout),
      send_dir_(is_server ? kServerToClient : kClientToServer),
      receive_dir_(is_server ? kClientToServer : kServerToClient),
      doorbell_{std::move(doorbells[0]), std::move(doorbells[1])},
      cache_(layout.params.slab_bytes,
             static_cast<uint32_t>(std::clamp<uint64_t>(layout.params.slab_bytes / kPage / 8, 1, kReclaimEveryBytes / kPage))),
      allocator_(layout.params.slab_bytes),
      held_pages_(new std::atomic<uint8_t>[layout.params.slab_bytes / kPage]),
      return_ready_(new std::atomic<uint64_t>[layout.return_capacity]) {
  for (uint64_t p = 0; p < layout.params.slab_bytes / kPage; ++p) held_pages_[p].store(0, std::memory_order_relaxed);
  // 0 is never ticket + 1, so no slot looks ready before it is written.
  for (uint64_t i = 0; i < layout.return_capacity; ++i) return_ready_[i].store(0, std::memory_order_relaxed);
}

Region::~Region() {
  munmap(base_, layout_.total_bytes);
  close(memfd_);
}

void Region::Unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

Buffer Region::Allocate(size_t size) {
  if (size == 0) return Buffer();
  std::optional<SlabAllocator::Block> block = TakeBlock(size);
  if (!block) return Buffer();
  return LocalBuffer(block->offset, size, block->size);
}

std::optional<SlabAllocator::Block> Region::TakeBlock(size_t size) {
  return size <= SmallBlockCache::kBlock ? TakeSmallBlock() : TakeLargeBlock(size);
}

std::optional<SlabAllocator::Block> Region::TakeSmallBlock() {
  if (std::optional<uint64_t> offset = cache_.Pop()) return SlabAllocator::Block{*offset, kPage};
  // The cache ran dry: most of it is probably on the return ring by now.
  // This is the "every 256 KiB" look at the ring for small blocks. Waiting
  // for another thread's reclaim (rare, bounded by the ring's capacity) so
  // that its blocks are seen rather than missed: a Flush that failed here
  // for want of a block would otherwise sleep until the next stall tend.
  (void)ReclaimReturns(/*wait=*/true);
  if (std::optional<uint64_t> offset = cache_.Pop()) return SlabAllocator::Block{*offset, kPage};
  std::optional<SlabAllocator::Block> block;
  {
    std::lock_guard lock(allocator_mu_);
    block = allocator_.Allocate(kPage);
    if (!block) return std::nullopt;
    if (cache_.Adopt(block->offset)) {
      // Fill the cache a batch at a time, so a new connection's first
      // calls take this lock once per batch rather than once each.
      for (int i = 0; i < 7; ++i) {
        std::optional<SlabAllocator::Block> more = allocator_.Allocate(kPage);
        if (!more) break;
        if (!cache_.Adopt(more->offset)) {
          allocator_.Free(more->offset);
          break;
        }
        cache_.Free(more->offset);
      }
    }
  }
  return block;
}

std::optional<SlabAllocator::Block> Region::TakeLargeBlock(size_t size) {
  // Returned blocks are taken back every kReclaimEveryBytes of allocation,
  // not on every call: reading the return ring pulls its cache lines from
  // the peer's core. Often enough that the blocks in use stay few and warm
  // in cache (and the region's resident pages few). A bad return is sticky
  // and closes the connection from the poller.
  if (allocated_since_reclaim_.load(std::memory_order_relaxed) >= kReclaimEveryBytes) {
    allocated_since_reclaim_.store(0, std::memory_order_relaxed);
    (void)ReclaimReturns(/*wait=*/false);
  }
  std::optional<SlabAllocator::Block> block;
  {
    std::lock_guard lock(allocator_mu_);
    block = allocator_.Allocate(size);
  }
  if (!block && ReclaimReturns(/*wait=*/true).ok()) {
    std::lock_guard lock(allocator_mu_);
    block = allocator_.Allocate(size);
    if (!block) {
      // Free cached pages may be what splits the slab; the cache refills.
      cache_.EvictFree([this](uint64_t offset) { allocator_.Free(offset); });
      block = allocator_.Allocate(size);
    }
  }
  if (!block) return std::nullopt;
  allocated_since_reclaim_.fetch_add(block->size, std::memory_order_relaxed);
  return block;
}

void Region::FreeBlock(uint64_t offset) {
  if (!cache_.Free(offset)) {
    std::lock_guard lock(allocator_mu_);
    allocator_.Free(offset);
  }
}

bool Region::AllocateBlocks(std::span<const size_t> sizes, std::span<Buffer> blocks) {
  const size_t n = std::min<size_t>(sizes.size(), kMaxParts);
  // Largest first: a buddy slab that has room for all of them in total then
  // fits them whenever the free space is not fragmented by others. (An
  // insertion sort: at most kMaxParts, and GCC's std::sort on so small an
  // array trips -Warray-bounds under the sanitizers.)
  size_t order[kMaxParts];
  for (size_t k = 0; k < n; ++k) {
    size_t j = k;
    for (; j > 0 && sizes[order[j - 1]] < sizes[k]; --j) order[j] = order[j - 1];
    order[j] = k;
  }
  // Ask for a ring before looking, not after a failed look: a block freed
  // between the look and the request would ring nobody. (A spurious ring,
  // when the look succeeds, costs the poller one round.)
  queue_waits_for_block_.store(true, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  SlabAllocator::Block got[kMaxParts];
  for (size_t k = 0; k < n; ++k) {
    std::optional<SlabAllocator::Block> block = TakeBlock(sizes[order[k]]);
    if (!block) {
      // Freed directly, not as Buffers: the flusher's own undo must not
      // ring the flusher.
      for (size_t j = 0; j < k; ++j) FreeBlock(got[order[j]].offset);
      return false;
    }
    got[order[k]] = *block;
  }
  queue_waits_for_block_.store(false, std::memory_order_relaxed);
  for (size_t i = 0; i < n; ++i) blocks[i] = LocalBuffer(got[i].offset, sizes[i], got[i].size);
  return true;
}

std::optional<uint64_t> Region::LocalOffset(const Buffer& buffer) const {
  if (buffer.owner() != &local_owner_) return std::nullopt;
  return static_cast<uint64_t>(buffer.data() - (base_ + layout_.slab[send_dir_]));
}

void Region::Lend(Buffer buffer) {
  const uint64_t offset = static_cast<uint64_t>(buffer.data() - local_slab());
  buffer.Detach();
  if (!cache_.Lend(offset)) {
    std::lock_guard lock(allocator_mu_);
    allocator_.Lend(offset);
  }
  Unref();  // the Buffer's reference; the block is now tracked as lent
}

Status Region::ReclaimReturns() { return ReclaimReturns(/*wait=*/false); }

Status Region::ReclaimReturns(bool wait) {
  for (;;) {
    // Sticky: once the peer broke the return protocol, nothing more is
    // taken back (a later re-lend must not make a bad return look good).
    if (reclaim_error_.failed()) return reclaim_error_.get();
    // Nothing returned since the last take: no token, no lock. (The poller
    // asks every millisecond; a caller whenever its cache runs dry.)
    if (send_control().returns_produced.load(std::memory_order_acquire) ==
        returns_taken_.load(std::memory_order_acquire)) {
      return absl::OkStatus();
    }
    if (!reclaiming_.exchange(true, std::memory_order_acquire)) break;
    if (!wait) return absl::OkStatus();  // the holder takes them
    std::this_thread::yield();
  }
  std::unique_lock<std::mutex> lock(allocator_mu_, std::defer_lock);
  Status status = TakeReturns(lock);
  reclaiming_.store(false, std::memory_order_release);
  return status;
}

Status Region::TakeReturns(std::unique_lock<std::mutex>& lock) {
  RingControl& ring = send_control();
  const uint64_t produced = ring.returns_produced.load(std::memory_order_acquire);
  uint64_t taken = returns_taken_.load(std::memory_order_relaxed);
  if (produced - taken > layout_.return_capacity) {
    return reclaim_error_.Set(absl::DataLossError(absl::StrCat("shm peer's return ring index ", produced, " is beyond ", taken,
                                                        " + capacity ", layout_.return_capacity)));
  }
  const auto* slots = At<const uint64_t>(layout_.returns[send_dir_]);
  Status status;
  for (; taken != produced; ++taken) {
    const uint64_t offset = slots[taken % layout_.return_capacity];
    SmallBlockCache::Result result = cache_.Return(offset);
    if (result == SmallBlockCache::Result::kNotCached) {
      // A large block (or garbage, which the allocator refuses): the one
      // lock, taken once for the rest of this batch.
      if (!lock.owns_lock()) lock.lock();
      result = allocator_.Return(offset) ? SmallBlockCache::Result::kDone : SmallBlockCache::Result::kRefused;
    }
    if (result == SmallBlockCache::Result::kRefused) {
      status = reclaim_error_.Set(absl::DataLossError(
          absl::StrCat("shm peer returned a buffer at offset ", offset, " that it was not lent (or returned it twice)")));
      break;
    }
  }
  ring.returns_consumed.store(taken, std::memory_order_release);
  returns_taken_.store(taken, std::memory_order_release);
  return status;
}

StatusOr<Buffer> Region::TakePeerBlock(uint64_t offset, uint64_t length) {
  const uint64_t slab = layout_.params.slab_bytes;
  // An empty part names no block (descriptors skip them); taken, it would
  // hold no page and still go back on the return ring.
  if (length == 0 || offset % kPage != 0 || offset >= slab || length > slab - offset) {
    return absl::DataLossError(absl::StrCat("shm descriptor part [", offset, ", +", length,
                                            ") is not a page-aligned range of the peer's ", slab, "-byte slab"));
  }
  const uint64_t first = offset / kPage;
  const uint64_t pages = (length + kPage - 1) / kPage;
  // Look, then mark: the reader is the only thread that sets marks, so none
  // can appear between the two loops; a mark cleared meanwhile (a release on
  // another thread) only makes the refusal stale in the safe direction. The
  // acquire pairs with the release of whoever cleared the mark, which
  // happens before the peer could learn the block is free and lend it again.
  for (uint64_t p = first; p < first + pages; ++p) {
    if (held_pages_[p].load(std::memory_order_acquire) != 0) {
      return absl::DataLossError(absl::StrCat("shm descriptor part at offset ", offset,
                                              " overlaps a buffer the peer already sent and has not got back"));
    }
  }
  for (uint64_t p = first; p < first + pages; ++p) held_pages_[p].store(1, std::memory_order_relaxed);
  Ref();
  return Buffer::Take(peer_slab() + offset, length, pages * kPage, &peer_owner_);
}

StatusOr<Buffer> Region::TakeBackLocalBlock(uint64_t offset, uint64_t length) {
  auto refused = [&] {
    return absl::DataLossError(absl::StrCat("shm peer sent back [", offset, ", +", length,
                                            ") of our slab, which is not a block it was lent"));
  };
  switch (cache_.Reclaim(offset, length)) {
    case SmallBlockCache::Result::kDone:
      return LocalBuffer(offset, length, kPage);
    case SmallBlockCache::Result::kRefused:
      return refused();
    case SmallBlockCache::Result::kNotCached:
      break;
  }
  size_t size = 0;
  {
    std::lock_guard lock(allocator_mu_);
    if (length > allocator_.BlockSize(offset) || (size = allocator_.Reclaim(offset)) == 0) return refused();
  }
  return LocalBuffer(offset, length, size);
}

std::optional<uint64_t> Region::PeerOffset(const Buffer& buffer) const {
  if (buffer.owner() != &peer_owner_) return std::nullopt;
  return static_cast<uint64_t>(buffer.data() - (base_ + layout_.slab[receive_dir_]));
}

void Region::GiveBack(Buffer buffer) {
  const size_t capacity = buffer.capacity();
  const uint64_t offset = static_cast<uint64_t>(buffer.data() - peer_slab());
  buffer.Detach();
  ForgetPeerBlock(offset, capacity);
  Unref();
}

void Region::ForgetPeerBlock(uint64_t offset, size_t capacity) {
  // Release: ordered before the return (or the frame) that tells the peer
  // it may lend these pages again, so the reader, who learns of the re-lend
  // through the peer, finds them clear.
  const uint64_t first = offset / kPage;
  for (uint64_t p = first; p < first + capacity / kPage; ++p) held_pages_[p].store(0, std::memory_order_release);
}

void Region::ReturnPeerBlock(uint64_t offset, size_t capacity) {
  ForgetPeerBlock(offset, capacity);
  if (!closed_.load(std::memory_order_acquire) && !returns_error_.failed()) {
    const uint64_t capacity_slots = layout_.return_capacity;
    const uint64_t ticket = returns_reserved_.fetch_add(1, std::memory_order_relaxed);
    uint64_t seen = returns_taken_seen_.load(std::memory_order_acquire);
    // The owner's index is read only when the ring looks full. An honest
    // peer never lets it fill: every reserved, unconsumed ticket is a
    // distinct block of its slab, which it cannot lend again before it
    // consumed that ticket, and the ring has a slot per page.
    if (ticket - seen >= capacity_slots) {
      const uint64_t taken = receive_control().returns_consumed.load(std::memory_order_acquire);
      // The peer's word: never beyond what we published (loaded after it,
      // so at least what the peer saw), never backwards (the CAS keeps the
      // larger of two concurrent updates).
      if (taken <= returns_given_.load(std::memory_order_acquire)) {
        while (seen < taken &&
               !returns_taken_seen_.compare_exchange_weak(seen, taken, std::memory_order_acq_rel,
                                                          std::memory_order_acquire)) {
        }
        if (seen < taken) seen = taken;
      }
    }
    if (ticket - seen >= capacity_slots) {
      // The ticket stays unpublished, so nothing after it is published
      // either: the connection closes on this error anyway.
      (void)returns_error_.Set(absl::DataLossError("shm peer does not take back its buffers (its return ring is full)"));
    } else {
      At<uint64_t>(layout_.returns[receive_dir_])[ticket % capacity_slots] = offset;
      // Sequentially consistent: PublishReturns' argument needs this store
      // and the token exchange after it in one total order.
      return_ready_[ticket % capacity_slots].store(ticket + 1, std::memory_order_seq_cst);
      PublishReturns();
    }
  }
  Unref();
}

// Why no ready slot is left unpublished: a producer marks its slot, then
// tries to take the token (both seq_cst). If it fails, the holder H had it;
// H clears the token and then looks at the next unpublished slot (both
// seq_cst). Were the mark missed, the total order would read
//   H's look < the mark < the failed exchange < H's clear < H's look,
// which is impossible. If the producer's slot is not the next one (an
// earlier ticket is still being written), that earlier producer publishes
// it when it marks its own. The token makes the holder the only writer of
// returns_given_ and returns_produced, so the peer's index only grows.
void Region::PublishReturns() {
  const uint64_t capacity_slots = layout_.return_capacity;
  for (;;) {
    if (publishing_.exchange(true, std::memory_order_seq_cst)) return;
    const uint64_t from = returns_given_.load(std::memory_order_relaxed);
    uint64_t given = from;
    while (return_ready_[given % capacity_slots].load(std::memory_order_acquire) == given + 1) ++given;
    if (given != from) {
      returns_given_.store(given, std::memory_order_release);
      // Sequentially consistent: ordered before WakeWaitingSender's look
      // at the peer's flag.
      receive_control().returns_produced.store(given, std::memory_order_seq_cst);
    }
    publishing_.store(false, std::memory_order_seq_cst);
    if (given != from) WakeWaitingSender();
    if (return_ready_[given % capacity_slots].load(std::memory_order_seq_cst) != given + 1) return;
  }
}

void Region::LocalOwner::Release(uint8_t* data, size_t) noexcept {
  region_->FreeBlock(static_cast<uint64_t>(data - region_->local_slab()));
  // The freer's half of queue_waits_for_block_'s pair: free, fence, look.
  // The send queue's head waits for a block: wake whoever flushes it.
  // Before Unref, which may free the region and its doorbells.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  std::atomic<bool>& waits = region_->queue_waits_for_block_;
  if (waits.load(std::memory_order_relaxed) && waits.exchange(false, std::memory_order_relaxed)) {
    const uint64_t one = 1;
    (void)!::write(region_->receive_doorbell(), &one, sizeof one);
  }
  region_->Unref();
}

void Region::PeerOwner::Release(uint8_t* data, size_t capacity) noexcept {
  region_->ReturnPeerBlock(static_cast<uint64_t>(data - region_->peer_slab()), capacity);
}

}  // namespace zcrpc::transport::shm
