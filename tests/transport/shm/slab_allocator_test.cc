#include "zcrpc/transport/shm/slab_allocator.h"

#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

namespace zcrpc::transport::shm {
namespace {

constexpr size_t kSlab = 1 << 20;  // 256 pages

TEST(SlabAllocator, BlocksArePageAlignedPowersOfTwoAndDisjoint) {
  SlabAllocator slab(kSlab);
  std::vector<SlabAllocator::Block> blocks;
  for (size_t size : {1u, 4096u, 4097u, 20000u, 65536u}) {
    auto block = slab.Allocate(size);
    ASSERT_TRUE(block.has_value());
    EXPECT_EQ(block->offset % 4096, 0u);
    EXPECT_EQ(block->offset % block->size, 0u) << "buddy blocks are aligned to their size";
    EXPECT_GE(block->size, size);
    EXPECT_LT(block->size, 2 * std::max<size_t>(size, 4096));
    blocks.push_back(*block);
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    for (size_t j = i + 1; j < blocks.size(); ++j) {
      const bool disjoint = blocks[i].offset + blocks[i].size <= blocks[j].offset ||
                            blocks[j].offset + blocks[j].size <= blocks[i].offset;
      EXPECT_TRUE(disjoint) << i << " and " << j << " overlap";
    }
  }
}

TEST(SlabAllocator, FullSlabSaysSoAndFreeingMergesBack) {
  SlabAllocator slab(kSlab);
  std::vector<uint64_t> offsets;
  while (auto block = slab.Allocate(4096)) offsets.push_back(block->offset);
  EXPECT_EQ(offsets.size(), kSlab / 4096);
  EXPECT_EQ(slab.free_bytes(), 0u);
  EXPECT_FALSE(slab.Allocate(1).has_value());
  for (uint64_t offset : offsets) slab.Free(offset);
  EXPECT_EQ(slab.free_bytes(), kSlab);
  auto whole = slab.Allocate(kSlab);  // only possible if every buddy merged
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->offset, 0u);
}

TEST(SlabAllocator, TooLargeOrEmptyRequestsFail) {
  SlabAllocator slab(kSlab);
  EXPECT_FALSE(slab.Allocate(0).has_value());
  EXPECT_FALSE(slab.Allocate(kSlab + 1).has_value());
}

TEST(SlabAllocator, ReturnAcceptsOnlyLentBlocksOnce) {
  SlabAllocator slab(kSlab);
  auto block = slab.Allocate(8192);
  ASSERT_TRUE(block.has_value());
  EXPECT_FALSE(slab.Return(block->offset)) << "held, not lent";
  slab.Lend(block->offset);
  EXPECT_FALSE(slab.Return(block->offset + 4096)) << "not the start of a block";
  EXPECT_FALSE(slab.Return(block->offset + 1)) << "not page-aligned";
  EXPECT_FALSE(slab.Return(kSlab)) << "outside the slab";
  EXPECT_TRUE(slab.Return(block->offset));
  EXPECT_FALSE(slab.Return(block->offset)) << "a second return";
  EXPECT_EQ(slab.free_bytes(), kSlab);
}

TEST(SlabAllocator, ReclaimTurnsALentBlockBackIntoAHeldOne) {
  SlabAllocator slab(kSlab);
  auto block = slab.Allocate(4096);
  ASSERT_TRUE(block.has_value());
  EXPECT_EQ(slab.Reclaim(block->offset), 0u) << "not lent";
  slab.Lend(block->offset);
  EXPECT_EQ(slab.Reclaim(block->offset), 4096u);
  EXPECT_FALSE(slab.Return(block->offset)) << "held again, so not returnable";
  slab.Free(block->offset);
  EXPECT_EQ(slab.free_bytes(), kSlab);
}

TEST(SlabAllocator, RandomWorkloadKeepsTheBooksBalanced) {
  SlabAllocator slab(kSlab);
  std::mt19937 rng(1);
  std::set<std::pair<uint64_t, uint64_t>> live;
  size_t used = 0;
  for (int step = 0; step < 20000; ++step) {
    if (!live.empty() && (rng() % 2 == 0)) {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      slab.Lend(it->first);
      ASSERT_TRUE(slab.Return(it->first));
      used -= it->second;
      live.erase(it);
    } else if (auto block = slab.Allocate(1 + rng() % 40000)) {
      for (const auto& [offset, size] : live) {
        ASSERT_TRUE(block->offset + block->size <= offset || offset + size <= block->offset);
      }
      live.insert({block->offset, block->size});
      used += block->size;
    }
    ASSERT_EQ(slab.free_bytes(), kSlab - used);
  }
}

}  // namespace
}  // namespace zcrpc::transport::shm
