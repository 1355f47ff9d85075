#include "zcrpc/transport/shm/slab_allocator.h"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "zcrpc/transport/shm/region.h"

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

// --- SmallBlockCache ---

TEST(SmallBlockCache, AdoptedBlocksCycleThroughFreeHeldLent) {
  SmallBlockCache cache(kSlab, 2);
  EXPECT_FALSE(cache.Pop().has_value());
  EXPECT_TRUE(cache.Adopt(0));
  EXPECT_TRUE(cache.Adopt(4096));
  EXPECT_FALSE(cache.Adopt(8192)) << "over capacity";
  EXPECT_EQ(cache.owned(), 2u);
  EXPECT_TRUE(cache.Free(0));
  EXPECT_FALSE(cache.Free(0)) << "already free";
  ASSERT_EQ(cache.Pop(), std::optional<uint64_t>(0));
  EXPECT_FALSE(cache.Pop().has_value()) << "4096 is held, not free";
  EXPECT_TRUE(cache.Lend(0));
  EXPECT_FALSE(cache.Lend(8192)) << "not cached: the SlabAllocator's";
  EXPECT_EQ(cache.Return(0), SmallBlockCache::Result::kDone);
  EXPECT_EQ(cache.Return(0), SmallBlockCache::Result::kRefused) << "a second return";
  EXPECT_EQ(cache.Return(4096), SmallBlockCache::Result::kRefused) << "held, never lent";
  EXPECT_EQ(cache.Return(8192), SmallBlockCache::Result::kNotCached);
  EXPECT_EQ(cache.Return(1), SmallBlockCache::Result::kNotCached) << "not a page: the allocator refuses it";
  EXPECT_EQ(cache.Return(kSlab), SmallBlockCache::Result::kNotCached) << "outside the slab";
  EXPECT_TRUE(cache.Lend(4096));
  EXPECT_EQ(cache.Reclaim(4096, 4097), SmallBlockCache::Result::kRefused) << "longer than the block";
  EXPECT_EQ(cache.Reclaim(4096, 4096), SmallBlockCache::Result::kDone);
  EXPECT_EQ(cache.Reclaim(4096, 10), SmallBlockCache::Result::kRefused) << "held again";
  EXPECT_EQ(cache.Return(4096), SmallBlockCache::Result::kRefused) << "held again";
  EXPECT_TRUE(cache.Free(4096));
  std::set<uint64_t> evicted;
  cache.EvictFree([&](uint64_t offset) { evicted.insert(offset); });
  EXPECT_EQ(evicted, (std::set<uint64_t>{0, 4096}));
  EXPECT_EQ(cache.owned(), 0u);
  EXPECT_EQ(cache.Return(0), SmallBlockCache::Result::kNotCached);
}

// Many threads pop, own, lend, return, reclaim and free the same few blocks:
// no block is ever owned by two threads at once (the tagged stack's ABA
// guard and the state CASes), and none is lost.
TEST(SmallBlockCache, ConcurrentOwnersNeverShareABlock) {
  constexpr uint32_t kBlocks = 8;
  constexpr int kThreads = 4;
  SmallBlockCache cache(kSlab, kBlocks);
  for (uint32_t i = 0; i < kBlocks; ++i) {
    ASSERT_TRUE(cache.Adopt(uint64_t{i} * 4096));
    ASSERT_TRUE(cache.Free(uint64_t{i} * 4096));
  }
  std::vector<std::atomic<int>> owner(kSlab / 4096);
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int step = 0; step < 200000 && !failed.load(); ++step) {
        std::optional<uint64_t> offset = cache.Pop();
        if (!offset) continue;
        std::atomic<int>& mine = owner[*offset / 4096];
        if (mine.exchange(t + 1) != 0) failed.store(true);
        mine.store(0);
        switch (rng() % 3) {
          case 0:
            if (!cache.Free(*offset)) failed.store(true);
            break;
          case 1:
            if (!cache.Lend(*offset) || cache.Return(*offset) != SmallBlockCache::Result::kDone) failed.store(true);
            break;
          default:
            if (!cache.Lend(*offset) || cache.Reclaim(*offset, 4096) != SmallBlockCache::Result::kDone ||
                !cache.Free(*offset)) {
              failed.store(true);
            }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_FALSE(failed.load());
  std::set<uint64_t> left;
  while (std::optional<uint64_t> offset = cache.Pop()) EXPECT_TRUE(left.insert(*offset).second) << "popped twice";
  EXPECT_EQ(left.size(), kBlocks);
}

// A hostile peer both returns a lent block and sends it back in a frame, on
// two threads at once: exactly one of the two takes it.
TEST(SmallBlockCache, ReturnAndReclaimOfOneLendNeverBothWin) {
  SmallBlockCache cache(kSlab, 1);
  ASSERT_TRUE(cache.Adopt(0));
  std::atomic<int> round{0};
  std::atomic<int> done{0};
  std::atomic<int> wins{0};
  constexpr int kRounds = 3000;
  std::thread returner([&] {
    for (int r = 1; r <= kRounds; ++r) {
      while (round.load() != r) std::this_thread::yield();
      if (cache.Return(0) == SmallBlockCache::Result::kDone) wins.fetch_add(1);
      done.fetch_add(1);
    }
  });
  int both = 0;
  for (int r = 1; r <= kRounds; ++r) {
    ASSERT_TRUE(cache.Lend(0));
    wins.store(0);
    done.store(0);
    round.store(r);
    if (cache.Reclaim(0, 4096) == SmallBlockCache::Result::kDone) wins.fetch_add(1);
    while (done.load() != 1) std::this_thread::yield();
    if (wins.load() != 1) ++both;
    (void)cache.Free(0);  // if Reclaim won; if Return won, it is free already
    ASSERT_EQ(cache.Pop(), std::optional<uint64_t>(0));
  }
  returner.join();
  EXPECT_EQ(both, 0);
}

// --- Region: both sides of one region in this process ---

class RegionPair : public ::testing::Test {
 protected:
  void SetUp() override {
    params_.slab_bytes = 1 << 20;
    params_.ring_depth = 16;
    StatusOr<int> memfd = Region::CreateMemfd(params_);
    ASSERT_TRUE(memfd.ok()) << memfd.status();
    const int second = dup(*memfd);
    internal::UniqueFd client_bells[2] = {internal::UniqueFd(eventfd(0, EFD_CLOEXEC)),
                                          internal::UniqueFd(eventfd(0, EFD_CLOEXEC))};
    internal::UniqueFd server_bells[2] = {internal::UniqueFd(dup(client_bells[0].get())),
                                          internal::UniqueFd(dup(client_bells[1].get()))};
    raw_fd_ = dup(*memfd);
    StatusOr<Region*> server = Region::Map(*memfd, params_, /*is_server=*/true, server_bells);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *server;
    StatusOr<Region*> client = Region::Map(second, params_, /*is_server=*/false, client_bells);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *client;
    raw_ = static_cast<uint8_t*>(
        mmap(nullptr, client_->layout().total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, raw_fd_, 0));
    ASSERT_NE(raw_, MAP_FAILED);
  }
  void TearDown() override {
    if (raw_ != nullptr && raw_ != MAP_FAILED) munmap(raw_, client_->layout().total_bytes);
    if (raw_fd_ >= 0) close(raw_fd_);
    if (client_ != nullptr) client_->Unref();
    if (server_ != nullptr) server_->Unref();
  }
  // The client lends a block: the descriptor's part, minus the ring.
  uint64_t Lend(Buffer buffer) {
    const uint64_t offset = *client_->LocalOffset(buffer);
    client_->Lend(std::move(buffer));
    return offset;
  }
  // What a hostile server writes into the client's return ring.
  void ForgeReturn(uint64_t offset) {
    const RegionLayout& layout = client_->layout();
    auto* control = reinterpret_cast<RingControl*>(raw_ + layout.control) + kClientToServer;
    auto* slots = reinterpret_cast<uint64_t*>(raw_ + layout.returns[kClientToServer]);
    const uint64_t produced = control->returns_produced.load();
    slots[produced % layout.return_capacity] = offset;
    control->returns_produced.store(produced + 1);
  }

  RegionParams params_;
  Region* client_ = nullptr;
  Region* server_ = nullptr;
  int raw_fd_ = -1;
  uint8_t* raw_ = nullptr;
};

TEST_F(RegionPair, ASmallBlockReturnedTwiceIsAStickyViolation) {
  Buffer buffer = client_->Allocate(100);
  ASSERT_FALSE(buffer.empty());
  const uint64_t offset = Lend(std::move(buffer));
  ForgeReturn(offset);
  EXPECT_TRUE(client_->ReclaimReturns().ok());
  ForgeReturn(offset);
  EXPECT_EQ(client_->ReclaimReturns().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(client_->ReclaimReturns().code(), absl::StatusCode::kDataLoss) << "sticky";
}

TEST_F(RegionPair, ASmallBlockNeverLentOrBothReturnedAndSentBackIsRefused) {
  Buffer held = client_->Allocate(10);
  ASSERT_FALSE(held.empty());
  const uint64_t held_offset = *client_->LocalOffset(held);
  EXPECT_FALSE(client_->TakeBackLocalBlock(held_offset, 10).ok()) << "held, not lent";
  const uint64_t offset = Lend(client_->Allocate(10));
  StatusOr<Buffer> back = client_->TakeBackLocalBlock(offset, 10);
  ASSERT_TRUE(back.ok()) << back.status();
  ForgeReturn(offset);  // and also returned: a double return
  EXPECT_EQ(client_->ReclaimReturns().code(), absl::StatusCode::kDataLoss);
}

TEST_F(RegionPair, OverlappingPeerBlocksAreRefusedUntilReturned) {
  const uint64_t offset = Lend(client_->Allocate(3 * 4096));
  StatusOr<Buffer> taken = server_->TakePeerBlock(offset, 3 * 4096);
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_FALSE(server_->TakePeerBlock(offset + 8192, 10).ok()) << "inside a held block";
  taken->reset();
  EXPECT_TRUE(server_->returns_error().ok());
  ASSERT_TRUE(client_->ReclaimReturns().ok());
}

// Two client threads allocate and lend (small blocks, and now and then a
// large one), one server thread reads (the only one that may take peer
// blocks), three threads release what it took, concurrently, and a client
// thread reclaims meanwhile. Each block carries a tag the reader checks: a
// block reused while the peer still held it would show another tag.
TEST_F(RegionPair, ConcurrentLendReturnAndReclaimLoseNothing) {
  struct Sent {
    uint64_t offset;
    uint64_t length;
    uint64_t tag;
  };
  std::mutex mu;
  std::deque<Sent> wire;
  std::deque<Buffer> taken;
  std::atomic<bool> stop{false};
  std::atomic<bool> failed{false};
  std::atomic<uint64_t> sent_count{0};
  constexpr uint64_t kPerSender = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (uint64_t i = 0; i < kPerSender && !failed.load();) {
        const uint64_t length = rng() % 16 == 0 ? 20000 : 1 + rng() % 4096;
        Buffer buffer = client_->Allocate(length);
        if (buffer.empty()) {
          std::this_thread::yield();
          continue;
        }
        const uint64_t tag = (uint64_t{static_cast<uint32_t>(t)} << 32) | i;
        std::memcpy(buffer.data(), &tag, sizeof tag);
        const uint64_t offset = Lend(std::move(buffer));
        {
          std::lock_guard lock(mu);
          wire.push_back({offset, length, tag});
        }
        sent_count.fetch_add(1);
        ++i;
      }
    });
  }
  threads.emplace_back([&] {  // the server's reader
    uint64_t got = 0;
    while (got < 2 * kPerSender && !failed.load()) {
      std::optional<Sent> next;
      {
        std::lock_guard lock(mu);
        if (!wire.empty()) {
          next = wire.front();
          wire.pop_front();
        }
      }
      if (!next) {
        std::this_thread::yield();
        continue;
      }
      StatusOr<Buffer> buffer = server_->TakePeerBlock(next->offset, next->length);
      uint64_t tag = 0;
      if (buffer.ok()) std::memcpy(&tag, buffer->data(), sizeof tag);
      if (!buffer.ok() || tag != next->tag) {
        ADD_FAILURE() << (buffer.ok() ? "a block was reused while the peer held it" : buffer.status().ToString());
        failed.store(true);
        break;
      }
      std::lock_guard lock(mu);
      taken.push_back(*std::move(buffer));
      ++got;
    }
    stop.store(true);
  });
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {  // releasers: concurrent producers of the return ring
      for (;;) {
        Buffer buffer;
        {
          std::lock_guard lock(mu);
          if (!taken.empty()) {
            buffer = std::move(taken.front());
            taken.pop_front();
          } else if (stop.load()) {
            return;
          }
        }
        if (buffer.empty()) std::this_thread::yield();
      }
    });
  }
  threads.emplace_back([&] {  // the client's poller
    while (!stop.load()) {
      if (!client_->ReclaimReturns().ok()) failed.store(true);
      std::this_thread::yield();
    }
  });
  for (std::thread& thread : threads) thread.join();
  ASSERT_FALSE(failed.load());
  EXPECT_TRUE(server_->returns_error().ok()) << server_->returns_error();
  ASSERT_TRUE(client_->ReclaimReturns().ok());
  const RegionLayout& layout = client_->layout();
  auto* control = reinterpret_cast<RingControl*>(raw_ + layout.control) + kClientToServer;
  EXPECT_EQ(control->returns_produced.load(), 2 * kPerSender) << "every block published, none twice";
  EXPECT_EQ(control->returns_consumed.load(), 2 * kPerSender);
  // Everything came back: half the slab is one free block again.
  Buffer half = client_->Allocate(params_.slab_bytes / 2);
  EXPECT_FALSE(half.empty());
}

}  // namespace
}  // namespace zcrpc::transport::shm
