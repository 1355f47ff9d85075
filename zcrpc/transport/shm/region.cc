#include "zcrpc/transport/shm/region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
      allocator_(layout.params.slab_bytes),
      held_pages_(layout.params.slab_bytes / kPage, 0) {}

Region::~Region() {
  munmap(base_, layout_.total_bytes);
  close(memfd_);
}

void Region::Unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

Buffer Region::Allocate(size_t size) {
  if (size == 0) return Buffer();
  std::optional<SlabAllocator::Block> block;
  {
    std::lock_guard lock(allocator_mu_);
    // Returned blocks are taken back every kReclaimEveryBytes of
    // allocation, not on every call: reading the return ring pulls its
    // cache lines from the peer's core. Often enough that the blocks in use
    // stay few and warm in cache (and the region's resident pages few). A
    // bad return is sticky and closes the connection from the poller.
    if (allocated_since_reclaim_ >= kReclaimEveryBytes) {
      (void)ReclaimReturnsLocked();
      allocated_since_reclaim_ = 0;
    }
    block = allocator_.Allocate(size);
    if (!block && ReclaimReturnsLocked().ok()) block = allocator_.Allocate(size);
    if (block) allocated_since_reclaim_ += block->size;
  }
  if (!block) return Buffer();
  Ref();
  return Buffer::Take(local_slab() + block->offset, size, block->size, &local_owner_);
}

std::optional<uint64_t> Region::LocalOffset(const Buffer& buffer) const {
  if (buffer.owner() != &local_owner_) return std::nullopt;
  return static_cast<uint64_t>(buffer.data() - (base_ + layout_.slab[send_dir_]));
}

void Region::Lend(Buffer buffer) {
  const uint64_t offset = static_cast<uint64_t>(buffer.data() - local_slab());
  buffer.Detach();
  {
    std::lock_guard lock(allocator_mu_);
    allocator_.Lend(offset);
  }
  Unref();  // the Buffer's reference; the block is now tracked as lent
}

Status Region::ReclaimReturns() {
  std::lock_guard lock(allocator_mu_);
  return ReclaimReturnsLocked();
}

Status Region::ReclaimReturnsLocked() {
  // Sticky: once the peer broke the return protocol, nothing more is taken
  // back (a later re-lend must not make a bad return look good).
  if (!reclaim_error_.ok()) return reclaim_error_;
  reclaim_error_ = TakeReturnsLocked();
  return reclaim_error_;
}

Status Region::TakeReturnsLocked() {
  RingControl& ring = send_control();
  const uint64_t produced = ring.returns_produced.load(std::memory_order_acquire);
  if (produced - returns_taken_ > layout_.return_capacity) {
    return absl::DataLossError(absl::StrCat("shm peer's return ring index ", produced, " is beyond ", returns_taken_,
                                            " + capacity ", layout_.return_capacity));
  }
  const auto* slots = At<const uint64_t>(layout_.returns[send_dir_]);
  for (; returns_taken_ != produced; ++returns_taken_) {
    const uint64_t offset = slots[returns_taken_ % layout_.return_capacity];
    if (!allocator_.Return(offset)) {
      ring.returns_consumed.store(returns_taken_, std::memory_order_release);
      return absl::DataLossError(absl::StrCat("shm peer returned a buffer at offset ", offset,
                                              " that it was not lent (or returned it twice)"));
    }
  }
  ring.returns_consumed.store(returns_taken_, std::memory_order_release);
  return absl::OkStatus();
}

StatusOr<Buffer> Region::TakePeerBlock(uint64_t offset, uint64_t length) {
  const uint64_t slab = layout_.params.slab_bytes;
  if (offset % kPage != 0 || offset >= slab || length > slab - offset) {
    return absl::DataLossError(absl::StrCat("shm descriptor part [", offset, ", +", length,
                                            ") is not a page-aligned range of the peer's ", slab, "-byte slab"));
  }
  const uint64_t first = offset / kPage;
  const uint64_t pages = (length + kPage - 1) / kPage;
  {
    std::lock_guard lock(held_mu_);
    for (uint64_t p = first; p < first + pages; ++p) {
      if (held_pages_[p]) {
        return absl::DataLossError(absl::StrCat("shm descriptor part at offset ", offset,
                                                " overlaps a buffer the peer already sent and has not got back"));
      }
    }
    for (uint64_t p = first; p < first + pages; ++p) held_pages_[p] = 1;
  }
  Ref();
  return Buffer::Take(peer_slab() + offset, length, pages * kPage, &peer_owner_);
}

StatusOr<Buffer> Region::TakeBackLocalBlock(uint64_t offset, uint64_t length) {
  size_t size = 0;
  {
    std::lock_guard lock(allocator_mu_);
    if (length > allocator_.BlockSize(offset) || (size = allocator_.Reclaim(offset)) == 0) {
      return absl::DataLossError(absl::StrCat("shm peer sent back [", offset, ", +", length,
                                              ") of our slab, which is not a block it was lent"));
    }
  }
  Ref();
  return Buffer::Take(local_slab() + offset, length, size, &local_owner_);
}

std::optional<uint64_t> Region::PeerOffset(const Buffer& buffer) const {
  if (buffer.owner() != &peer_owner_) return std::nullopt;
  return static_cast<uint64_t>(buffer.data() - (base_ + layout_.slab[receive_dir_]));
}

void Region::GiveBack(Buffer buffer) {
  const size_t capacity = buffer.capacity();
  const uint64_t offset = static_cast<uint64_t>(buffer.data() - peer_slab());
  buffer.Detach();
  {
    std::lock_guard lock(held_mu_);
    ForgetPeerBlock(offset, capacity);
  }
  Unref();
}

void Region::ForgetPeerBlock(uint64_t offset, size_t capacity) {
  const uint64_t first = offset / kPage;
  for (uint64_t p = first; p < first + capacity / kPage; ++p) held_pages_[p] = 0;
}

void Region::ReturnPeerBlock(uint64_t offset, size_t capacity) {
  bool returned = false;
  {
    std::lock_guard lock(held_mu_);
    ForgetPeerBlock(offset, capacity);
    if (!closed_ && returns_error_.ok()) {
      RingControl& ring = receive_control();
      // The owner's index is read only when the ring looks full.
      if (returns_given_ - returns_taken_seen_ >= layout_.return_capacity) {
        const uint64_t taken = ring.returns_consumed.load(std::memory_order_acquire);
        if (taken >= returns_taken_seen_ && taken <= returns_given_) returns_taken_seen_ = taken;
      }
      if (returns_given_ - returns_taken_seen_ >= layout_.return_capacity) {
        returns_error_ = absl::DataLossError("shm peer does not take back its buffers (its return ring is full)");
      } else {
        At<uint64_t>(layout_.returns[receive_dir_])[returns_given_ % layout_.return_capacity] = offset;
        // Sequentially consistent: ordered before WakeWaitingSender's look
        // at the peer's flag.
        ring.returns_produced.store(++returns_given_, std::memory_order_seq_cst);
        returned = true;
      }
    }
  }
  if (returned) WakeWaitingSender();
  Unref();
}

void Region::MarkClosed() {
  std::lock_guard lock(held_mu_);
  closed_ = true;
}

Status Region::returns_error() {
  std::lock_guard lock(held_mu_);
  return returns_error_;
}

void Region::LocalOwner::Release(uint8_t* data, size_t) noexcept {
  {
    std::lock_guard lock(region_->allocator_mu_);
    region_->allocator_.Free(static_cast<uint64_t>(data - region_->local_slab()));
  }
  region_->Unref();
}

void Region::PeerOwner::Release(uint8_t* data, size_t capacity) noexcept {
  region_->ReturnPeerBlock(static_cast<uint64_t>(data - region_->peer_slab()), capacity);
}

}  // namespace zcrpc::transport::shm
