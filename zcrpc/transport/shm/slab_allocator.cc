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

}  // namespace zcrpc::transport::shm
