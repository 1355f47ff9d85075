#include "zcrpc/base/buffer.h"

#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "zcrpc/base/copy_stats.h"

namespace zcrpc {
namespace {

TEST(BufferPool, BuffersArePageAligned) {
  BufferPool pool;
  for (size_t size : {1, 64, 4095, 4096, 4097, 65536, 1 << 20, (1 << 20) + 1, 16 << 20}) {
    Buffer b = pool.Allocate(size);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % BufferPool::kPageSize, 0u) << size;
    EXPECT_EQ(b.size(), size);
    EXPECT_GE(b.capacity(), size);
    std::memset(b.data(), 0xab, size);  // the whole size is writable (ASan checks)
  }
  EXPECT_EQ(pool.outstanding(), 0u);
}

TEST(BufferPool, ZeroSizeIsEmptyWithoutMemory) {
  BufferPool pool;
  Buffer b = pool.Allocate(0);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool.outstanding(), 0u);
}

TEST(BufferPool, RecyclesReleasedBuffersOfTheSameClass) {
  BufferPool pool;
  uint8_t* first;
  {
    Buffer b = pool.Allocate(5000);  // the 8 KiB class
    first = b.data();
    EXPECT_EQ(pool.outstanding(), 1u);
  }
  EXPECT_EQ(pool.outstanding(), 0u);
  EXPECT_EQ(pool.cached_bytes(), 8192u);
  Buffer again = pool.Allocate(8000);
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

TEST(BufferPool, CacheIsBounded) {
  BufferPool::Options options;
  options.max_cached_bytes_per_class = 2 * 4096;
  BufferPool pool(options);
  {
    std::vector<Buffer> held;
    for (int i = 0; i < 10; ++i) held.push_back(pool.Allocate(100));
  }
  EXPECT_EQ(pool.cached_bytes(), 2u * 4096);
}

// The default pool's per-thread cache: a buffer released on a thread comes
// back on that thread without the shared lists, and what a thread caches
// goes back to the shared lists when it exits.
TEST(BufferPool, DefaultPoolCachesSmallBuffersPerThreadAndFlushesAtExit) {
  BufferPool& pool = BufferPool::Default();
  const size_t outstanding_before = pool.outstanding();
  const size_t shared_before = pool.cached_bytes();
  std::thread worker([&] {
    uint8_t* first;
    {
      Buffer b = pool.Allocate(100);
      first = b.data();
    }
    // Released into this thread's cache, handed out again from it.
    Buffer again = pool.Allocate(100);
    EXPECT_EQ(again.data(), first);
    // Fill this thread's cache for the 4 KiB class.
    std::vector<Buffer> held;
    for (size_t i = 0; i < BufferPool::kThreadCacheDepth; ++i) held.push_back(pool.Allocate(4096));
  });
  worker.join();
  // Every buffer came back, and the exiting thread's full cache of 4 KiB
  // buffers went to the shared lists (no other thread runs here to take
  // them).
  EXPECT_EQ(pool.outstanding(), outstanding_before);
  EXPECT_GE(pool.cached_bytes(), shared_before + BufferPool::kThreadCacheDepth * 4096);
}

// Buffers allocated on one thread and released on another stay accounted.
TEST(BufferPool, BuffersCrossThreadsFreely) {
  BufferPool& pool = BufferPool::Default();
  const size_t outstanding_before = pool.outstanding();
  std::vector<Buffer> made;
  for (int i = 0; i < 64; ++i) made.push_back(pool.Allocate(static_cast<size_t>(i) * 700 + 1));
  std::thread releaser([&] { made.clear(); });
  releaser.join();
  EXPECT_EQ(pool.outstanding(), outstanding_before);
}

TEST(Buffer, MoveHandsOverWithoutCopy) {
  BufferPool pool;
  Buffer a = pool.Allocate(100);
  uint8_t* data = a.data();
  uint64_t copied = CopyStats::ThreadBytesCopied();
  Buffer b = std::move(a);
  EXPECT_EQ(b.data(), data);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_EQ(CopyStats::ThreadBytesCopied(), copied);
  b.reset();
  EXPECT_EQ(pool.outstanding(), 0u);
}

TEST(CopyStats, CountsCopiesThroughTheHelper) {
  uint8_t src[100] = {1, 2, 3};
  uint64_t before = CopyStats::ThreadBytesCopied();
  uint64_t total_before = CopyStats::TotalBytesCopied();
  Buffer b = CopyToBuffer(src);
  EXPECT_EQ(b.data()[2], 3);
  EXPECT_EQ(CopyStats::ThreadBytesCopied() - before, 100u);
  EXPECT_GE(CopyStats::TotalBytesCopied() - total_before, 100u);
}

}  // namespace
}  // namespace zcrpc

namespace zcrpc {
namespace {

// Counts releases, so a test sees exactly when the bytes go back.
class CountingOwner final : public BufferOwner {
 public:
  void Release(uint8_t* data, size_t) noexcept override {
    ++releases;
    last = data;
  }
  int releases = 0;
  uint8_t* last = nullptr;
};

TEST(BufferShare, BytesGoBackWithTheLastHandleOnly) {
  CountingOwner owner;
  uint8_t bytes[64] = {1, 2, 3};
  Buffer first = Buffer::Take(bytes, 3, sizeof bytes, &owner);
  EXPECT_FALSE(first.shared());
  // Two more handles: all three see the same bytes, none copied.
  Buffer second = first.Share();
  Buffer third = second.Share();
  EXPECT_TRUE(first.shared());
  EXPECT_TRUE(third.shared());
  EXPECT_EQ(second.data(), bytes);
  EXPECT_EQ(third.size(), 3u);
  EXPECT_EQ(third.data()[2], 3);
  // Dropping handles in any order returns the bytes once, with the last.
  second.reset();
  first = Buffer();
  EXPECT_EQ(owner.releases, 0);
  third.reset();
  EXPECT_EQ(owner.releases, 1);
  EXPECT_EQ(owner.last, bytes);
}

TEST(BufferShare, SharedPoolBufferReturnsToThePool) {
  BufferPool pool;
  Buffer buffer = pool.Allocate(4096);
  Buffer kept = buffer.Share();
  EXPECT_EQ(pool.outstanding(), 1u);
  buffer.reset();
  EXPECT_EQ(pool.outstanding(), 1u);  // `kept` still holds it
  kept.reset();
  EXPECT_EQ(pool.outstanding(), 0u);
}

TEST(BufferShare, EmptyBufferSharesAsEmpty) {
  Buffer empty;
  Buffer shared = empty.Share();
  EXPECT_TRUE(shared.empty());
  EXPECT_FALSE(shared.shared());
}

TEST(BufferShare, HandlesMayDieOnDifferentThreads) {
  BufferPool pool;
  for (int round = 0; round < 200; ++round) {
    Buffer a = pool.Allocate(64);
    Buffer b = a.Share();
    std::thread t([moved = std::move(b)]() mutable { moved.reset(); });
    a.reset();
    t.join();
  }
  EXPECT_EQ(pool.outstanding(), 0u);
}

}  // namespace
}  // namespace zcrpc
