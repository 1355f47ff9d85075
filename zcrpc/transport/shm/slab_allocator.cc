#include "zcrpc/transport/shm/slab_allocator.h"

#include <bit>
#include <cassert>

namespace zcrpc::transport::shm {

SlabAllocator::SlabAllocator(size_t slab_bytes)
    : slab_bytes_(slab_bytes),
      max_order_(std::countr_zero(slab_bytes / kMinBlock)),
      free_bytes_(slab_bytes),
      state_(slab_bytes / kMinBlock, State::kNone),
      order_(slab_bytes / kMinBlock, -1),
      next_(slab_bytes / kMinBlock, kNil),
      prev_(slab_bytes / kMinBlock, kNil),
      heads_(static_cast<size_t>(max_order_) + 1, kNil) {
  assert(std::has_single_bit(slab_bytes) && slab_bytes >= kMinBlock);
  state_[0] = State::kFree;
  order_[0] = static_cast<int8_t>(max_order_);
  Push(0, max_order_);
}

void SlabAllocator::Push(uint32_t index, int order) {
  uint32_t& head = heads_[static_cast<size_t>(order)];
  next_[index] = head;
  prev_[index] = kNil;
  if (head != kNil) prev_[head] = index;
  head = index;
}

void SlabAllocator::Unlink(uint32_t index, int order) {
  if (prev_[index] != kNil) next_[prev_[index]] = next_[index];
  else heads_[static_cast<size_t>(order)] = next_[index];
  if (next_[index] != kNil) prev_[next_[index]] = prev_[index];
  next_[index] = prev_[index] = kNil;
}

std::optional<SlabAllocator::Block> SlabAllocator::Allocate(size_t bytes) {
  if (bytes == 0 || bytes > slab_bytes_) return std::nullopt;
  const size_t blocks = (bytes + kMinBlock - 1) / kMinBlock;
  const int want = std::countr_zero(std::bit_ceil(blocks));
  int order = want;
  while (order <= max_order_ && heads_[static_cast<size_t>(order)] == kNil) ++order;
  if (order > max_order_) return std::nullopt;
  const uint32_t index = heads_[static_cast<size_t>(order)];
  Unlink(index, order);
  while (order > want) {  // split, keeping the lower half
    --order;
    const uint32_t buddy = index + (uint32_t{1} << order);
    state_[buddy] = State::kFree;
    order_[buddy] = static_cast<int8_t>(order);
    Push(buddy, order);
  }
  state_[index] = State::kHeld;
  order_[index] = static_cast<int8_t>(want);
  const size_t size = kMinBlock << want;
  free_bytes_ -= size;
  return Block{uint64_t{index} * kMinBlock, size};
}

void SlabAllocator::Release(uint32_t index) {
  int order = order_[index];
  free_bytes_ += kMinBlock << order;
  while (order < max_order_) {
    const uint32_t buddy = index ^ (uint32_t{1} << order);
    if (state_[buddy] != State::kFree || order_[buddy] != order) break;
    Unlink(buddy, order);
    state_[buddy] = State::kNone;
    order_[buddy] = -1;
    state_[index] = State::kNone;
    order_[index] = -1;
    index = index < buddy ? index : buddy;
    ++order;
  }
  state_[index] = State::kFree;
  order_[index] = static_cast<int8_t>(order);
  Push(index, order);
}

void SlabAllocator::Free(uint64_t offset) {
  const auto index = static_cast<uint32_t>(offset / kMinBlock);
  assert(offset % kMinBlock == 0 && index < state_.size() && state_[index] == State::kHeld);
  Release(index);
}

void SlabAllocator::Lend(uint64_t offset) {
  const auto index = static_cast<uint32_t>(offset / kMinBlock);
  assert(offset % kMinBlock == 0 && index < state_.size() && state_[index] == State::kHeld);
  state_[index] = State::kLent;
}

bool SlabAllocator::Return(uint64_t offset) {
  if (offset % kMinBlock != 0 || offset >= slab_bytes_) return false;
  const auto index = static_cast<uint32_t>(offset / kMinBlock);
  if (state_[index] != State::kLent) return false;
  Release(index);
  return true;
}

size_t SlabAllocator::Reclaim(uint64_t offset) {
  if (offset % kMinBlock != 0 || offset >= slab_bytes_) return 0;
  const auto index = static_cast<uint32_t>(offset / kMinBlock);
  if (state_[index] != State::kLent) return 0;
  state_[index] = State::kHeld;
  return kMinBlock << order_[index];
}

size_t SlabAllocator::BlockSize(uint64_t offset) const {
  if (offset % kMinBlock != 0 || offset >= slab_bytes_) return 0;
  const auto index = static_cast<uint32_t>(offset / kMinBlock);
  return state_[index] == State::kNone ? 0 : kMinBlock << order_[index];
}

SmallBlockCache::SmallBlockCache(size_t slab_bytes, uint32_t capacity)
    : slab_bytes_(slab_bytes),
      capacity_(capacity),
      state_(new std::atomic<uint8_t>[slab_bytes / kBlock]),
      next_(new std::atomic<uint32_t>[slab_bytes / kBlock]),
      head_(kNil) {
  for (size_t i = 0; i < slab_bytes / kBlock; ++i) {
    state_[i].store(kNotCached, std::memory_order_relaxed);
    next_[i].store(kNil, std::memory_order_relaxed);
  }
}

std::optional<uint64_t> SmallBlockCache::Pop() {
  uint64_t head = head_.load(std::memory_order_acquire);
  for (;;) {
    const auto index = static_cast<uint32_t>(head);
    if (index == kNil) return std::nullopt;
    // May be stale if `index` was popped and pushed again since `head` was
    // read; then the tag moved on and the CAS below fails.
    const uint32_t next = next_[index].load(std::memory_order_relaxed);
    const uint64_t popped = (((head >> 32) + 1) << 32) | next;
    if (head_.compare_exchange_weak(head, popped, std::memory_order_acquire, std::memory_order_acquire)) {
      state_[index].store(kHeld, std::memory_order_relaxed);
      return uint64_t{index} * kBlock;
    }
  }
}

void SmallBlockCache::Push(uint32_t index) {
  uint64_t head = head_.load(std::memory_order_relaxed);
  for (;;) {
    next_[index].store(static_cast<uint32_t>(head), std::memory_order_relaxed);
    const uint64_t pushed = (((head >> 32) + 1) << 32) | index;
    if (head_.compare_exchange_weak(head, pushed, std::memory_order_release, std::memory_order_relaxed)) return;
  }
}

bool SmallBlockCache::Adopt(uint64_t offset) {
  std::atomic<uint8_t>* state = StateOf(offset);
  if (state == nullptr) return false;
  uint32_t owned = owned_.load(std::memory_order_relaxed);
  do {
    if (owned >= capacity_) return false;
  } while (!owned_.compare_exchange_weak(owned, owned + 1, std::memory_order_relaxed));
  state->store(kHeld, std::memory_order_relaxed);
  return true;
}

bool SmallBlockCache::Free(uint64_t offset) {
  std::atomic<uint8_t>* state = StateOf(offset);
  if (state == nullptr || state->load(std::memory_order_relaxed) != kHeld) return false;
  state->store(kFree, std::memory_order_relaxed);
  Push(static_cast<uint32_t>(offset / kBlock));
  return true;
}

bool SmallBlockCache::Lend(uint64_t offset) {
  std::atomic<uint8_t>* state = StateOf(offset);
  if (state == nullptr || state->load(std::memory_order_relaxed) != kHeld) return false;
  // Release: the peer's return travels through the shared region (its own
  // release/acquire chain), but a Return() or Reclaim() on another thread of
  // ours must also find `lent` before it may take the block.
  state->store(kLent, std::memory_order_release);
  return true;
}

SmallBlockCache::Result SmallBlockCache::Return(uint64_t offset) {
  std::atomic<uint8_t>* state = StateOf(offset);
  if (state == nullptr) return Result::kNotCached;
  uint8_t expected = kLent;
  if (state->compare_exchange_strong(expected, kFree, std::memory_order_acquire, std::memory_order_relaxed)) {
    Push(static_cast<uint32_t>(offset / kBlock));
    return Result::kDone;
  }
  return expected == kNotCached ? Result::kNotCached : Result::kRefused;
}

SmallBlockCache::Result SmallBlockCache::Reclaim(uint64_t offset, uint64_t length) {
  std::atomic<uint8_t>* state = StateOf(offset);
  if (state == nullptr) return Result::kNotCached;
  uint8_t expected = kLent;
  if (length <= kBlock &&
      state->compare_exchange_strong(expected, kHeld, std::memory_order_acquire, std::memory_order_relaxed)) {
    return Result::kDone;
  }
  if (length > kBlock) expected = state->load(std::memory_order_relaxed);
  return expected == kNotCached ? Result::kNotCached : Result::kRefused;
}

}  // namespace zcrpc::transport::shm
