// The tcp stream layout's rules, and the tcp URI options.
#include "zcrpc/transport/tcp/stream_layout.h"

#include <gtest/gtest.h>

#include "zcrpc/base/wire.h"
#include "zcrpc/transport/tcp/tcp_address.h"

namespace zcrpc::transport::tcp {
namespace {

TEST(StreamLayout, SmallPartsAreInlineAndCacheLineAligned) {
  StreamLayout layout;
  PartPlacement metadata = layout.Next(10);
  PartPlacement message = layout.Next(100);
  PartPlacement table = layout.Next(16, PartKind::kTable);
  PartPlacement attachment = layout.Next(64);
  layout.Finish();
  EXPECT_TRUE(metadata.inline_part && message.inline_part && table.inline_part && attachment.inline_part);
  EXPECT_EQ(metadata.offset, 0u);
  EXPECT_EQ(message.offset, 64u);
  EXPECT_EQ(table.offset, 168u);   // tables need 8-byte alignment only
  EXPECT_EQ(attachment.offset, 192u);
  EXPECT_FALSE(layout.spilled());
  EXPECT_EQ(layout.end(), 256u);   // padded to a cache line
  EXPECT_EQ(layout.padding(), 256u - 10 - 100 - 16 - 64);
}

TEST(StreamLayout, LargePartsStartPageAlignedBeyondTheWindow) {
  StreamLayout layout;
  PartPlacement message = layout.Next(1 << 20);
  EXPECT_FALSE(message.inline_part);
  EXPECT_EQ(message.offset, kInlineWindow);  // never inside the window the header is read with
  PartPlacement table = layout.Next(16, PartKind::kTable);
  EXPECT_FALSE(table.inline_part);           // once spilled, everything after spills
  PartPlacement attachment = layout.Next(100);
  EXPECT_FALSE(attachment.inline_part);
  EXPECT_EQ(attachment.offset % kSpillAlign, 0u);
  layout.Finish();
  EXPECT_EQ(layout.end() % kInlineAlign, 0u);
  EXPECT_EQ(layout.inline_end(), 0u);
}

TEST(StreamLayout, APartThatWouldCrossTheWindowSpills) {
  StreamLayout layout;
  EXPECT_TRUE(layout.Next(kInlineWindow - 64).inline_part);
  PartPlacement next = layout.Next(65);
  EXPECT_FALSE(next.inline_part);
  EXPECT_EQ(next.offset, kInlineWindow);
  EXPECT_EQ(layout.inline_end(), kInlineWindow - 64);
}

TEST(StreamLayout, PaddingPerPartStaysWithinTheWireLimit) {
  for (uint64_t first : {0u, 1u, 4095u, 8000u, 8191u, 8192u, 9000u}) {
    StreamLayout layout;
    layout.Next(first);
    uint64_t before = layout.padding();
    layout.Next(100000);
    EXPECT_LE(layout.padding() - before, kMaxPaddingPerPart) << first;
  }
}

TEST(StreamLayout, EmptyPartsTakeNoSpace) {
  StreamLayout layout;
  layout.Next(0);
  layout.Next(0, PartKind::kTable);
  layout.Finish();
  EXPECT_EQ(layout.end(), 0u);
  EXPECT_EQ(layout.padding(), 0u);
}

TEST(TcpAddress, ParsesOptions) {
  auto address = TcpAddress::Parse(
      "127.0.0.1:80?busy_poll_us=50&zerocopy_send=off&zerocopy_min_bytes=4096&zerocopy_receive=probe");
  ASSERT_TRUE(address.ok()) << address.status();
  EXPECT_EQ(address->host, "127.0.0.1");
  EXPECT_EQ(address->port, 80);
  EXPECT_EQ(address->options.busy_poll, std::chrono::microseconds(50));
  EXPECT_EQ(address->options.zerocopy_send, ZeroCopySend::kOff);
  EXPECT_EQ(address->options.zerocopy_min_bytes, 4096u);
  EXPECT_TRUE(address->options.probe_zerocopy_receive);
  auto plain = TcpAddress::Parse("[::1]:9");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->options.zerocopy_send, ZeroCopySend::kAuto);
  EXPECT_EQ(plain->options.busy_poll.count(), 0);
  EXPECT_FALSE(plain->options.probe_zerocopy_receive);
}

TEST(TcpAddress, RejectsUnknownOrBadOptions) {
  for (const char* bad : {"h:1?speed=11", "h:1?busy_poll_us=x", "h:1?zerocopy_send=maybe", "h:1?zerocopy_min_bytes=-1", "h:1?zerocopy_receive=on",
                          "nohost?busy_poll_us=1"}) {
    auto address = TcpAddress::Parse(bad);
    EXPECT_EQ(address.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace zcrpc::transport::tcp
