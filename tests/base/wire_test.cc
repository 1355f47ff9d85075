// The frame codec: round trips, and every malformed case docs/wire.md lists.
#include "zcrpc/base/wire.h"

#include <cstring>

#include <gtest/gtest.h>

namespace zcrpc {
namespace {

using Bytes = std::array<uint8_t, kWireHeaderSize>;

WireHeader SampleRequest() {
  WireHeader h;
  h.type = FrameType::kRequest;
  h.call_id = (uint64_t{7} << 32) | 3;
  h.method_id = MethodId("/zcrpc.examples.Echo/Say");
  h.timeout_us = 250'000;
  h.metadata_len = 12;
  h.message_len = 4096;
  h.attachment_count = 2;
  h.attachments_len = 2 * kAttachmentLengthSize + 100;
  h.padding_len = 4084;
  return h;
}

Bytes Encode(const WireHeader& h) {
  Bytes b;
  EncodeWireHeader(h, b);
  return b;
}

template <typename T>
void Poke(Bytes& b, size_t offset, T v) {
  std::memcpy(b.data() + offset, &v, sizeof v);
}

TEST(WireHeader, RoundTripsEveryField) {
  WireHeader h = SampleRequest();
  auto decoded = DecodeWireHeader(Encode(h));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->type, h.type);
  EXPECT_EQ(decoded->call_id, h.call_id);
  EXPECT_EQ(decoded->method_id, h.method_id);
  EXPECT_EQ(decoded->timeout_us, h.timeout_us);
  EXPECT_EQ(decoded->metadata_len, h.metadata_len);
  EXPECT_EQ(decoded->message_len, h.message_len);
  EXPECT_EQ(decoded->attachment_count, h.attachment_count);
  EXPECT_EQ(decoded->attachments_len, h.attachments_len);
  EXPECT_EQ(decoded->body_len(), 12u + 4096u + 116u);
  EXPECT_EQ(decoded->padding_len, h.padding_len);
  EXPECT_EQ(decoded->wire_body_len(), decoded->body_len() + h.padding_len);
}

TEST(WireHeader, IsLittleEndianWithMagicFirst) {
  Bytes b = Encode(SampleRequest());
  EXPECT_EQ(std::string(reinterpret_cast<char*>(b.data()), 4), "ZCRP");
  EXPECT_EQ(b[4], kWireVersion);
  EXPECT_EQ(b[5], 1);     // request
  EXPECT_EQ(b[8], 3);     // call id, low byte first
  EXPECT_EQ(b[12], 7);
}

TEST(WireHeader, ResponseCarriesStatus) {
  WireHeader h;
  h.type = FrameType::kResponse;
  h.call_id = 1;
  h.status_code = static_cast<uint32_t>(StatusCode::kNotFound);
  auto decoded = DecodeWireHeader(Encode(h));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->status_code, 5u);
}

struct Malformed {
  const char* name;
  void (*mutate)(Bytes&);
  StatusCode code;
};

class WireHeaderMalformed : public ::testing::TestWithParam<Malformed> {};

TEST_P(WireHeaderMalformed, IsRejected) {
  Bytes b = Encode(SampleRequest());
  GetParam().mutate(b);
  auto decoded = DecodeWireHeader(b);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), GetParam().code) << decoded.status();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, WireHeaderMalformed,
    ::testing::Values(
        Malformed{"BadMagic", [](Bytes& b) { b[0] = 'H'; }, StatusCode::kInvalidArgument},
        Malformed{"UnknownVersion", [](Bytes& b) { b[4] = 2; }, StatusCode::kInvalidArgument},
        Malformed{"TypeZero", [](Bytes& b) { b[5] = 0; }, StatusCode::kInvalidArgument},
        Malformed{"ReservedStreamingType", [](Bytes& b) { b[5] = 4; }, StatusCode::kInvalidArgument},
        Malformed{"UnknownFlags", [](Bytes& b) { Poke<uint16_t>(b, 6, 0x8000); }, StatusCode::kInvalidArgument},
        Malformed{"ZeroCallId", [](Bytes& b) { Poke<uint64_t>(b, 8, 0); }, StatusCode::kInvalidArgument},
        Malformed{"ReservedWordSet", [](Bytes& b) { Poke<uint32_t>(b, 44, 1); }, StatusCode::kInvalidArgument},
        Malformed{"PaddingMorePartsCanNeed",
                  [](Bytes& b) { Poke<uint64_t>(b, 56, (2 + 3) * kMaxPaddingPerPart + 1); },
                  StatusCode::kInvalidArgument},
        Malformed{"AttachmentTableLargerThanSection",
                  [](Bytes& b) { Poke<uint64_t>(b, 48, 8); }, StatusCode::kInvalidArgument},
        Malformed{"AttachmentLengthOverflows",
                  [](Bytes& b) { Poke<uint64_t>(b, 48, ~uint64_t{0}); }, StatusCode::kInvalidArgument},
        Malformed{"CancelWithBody", [](Bytes& b) { b[5] = 3; }, StatusCode::kInvalidArgument},
        Malformed{"ResponseStatusOutOfRange",
                  [](Bytes& b) {
                    b[5] = 2;
                    Poke<uint32_t>(b, 20, 17);
                  },
                  StatusCode::kInvalidArgument}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(WireLimits, AcceptsWithinAndRejectsBeyond) {
  FrameLimits limits;
  limits.max_body_bytes = 1000;
  limits.max_metadata_bytes = 100;
  limits.max_attachments = 1;
  WireHeader h;
  h.message_len = 1000;
  EXPECT_TRUE(CheckLimits(h, limits).ok());
  h.message_len = 1001;
  EXPECT_EQ(CheckLimits(h, limits).code(), StatusCode::kResourceExhausted);
  h.message_len = 0;
  h.metadata_len = 101;
  EXPECT_EQ(CheckLimits(h, limits).code(), StatusCode::kResourceExhausted);
  h.metadata_len = 0;
  h.attachment_count = 2;
  h.attachments_len = 16;
  EXPECT_EQ(CheckLimits(h, limits).code(), StatusCode::kResourceExhausted);
}

TEST(WireLimits, LengthsNearMaxDoNotOverflow) {
  WireHeader h;
  h.metadata_len = UINT32_MAX;
  h.message_len = UINT32_MAX;
  h.attachments_len = uint64_t{1} << 62;
  EXPECT_EQ(CheckLimits(h, FrameLimits{}).code(), StatusCode::kResourceExhausted);
  EXPECT_GT(h.body_len(), kMaxDiscardBytes);
}

TEST(Metadata, RoundTripsTextAndBinary) {
  Metadata md = {{"x-trace", "abc"}, {"blob-bin", std::string("\0\xff", 2)}, {"x-trace", "again"}};
  std::vector<uint8_t> block(EncodedMetadataSize(md));
  EncodeMetadata(md, block);
  Metadata out;
  ASSERT_TRUE(DecodeMetadata(block, &out).ok());
  EXPECT_EQ(out, md);
}

TEST(Metadata, RejectsTruncatedAndOverlongEntries) {
  Metadata md = {{"key", "value"}};
  std::vector<uint8_t> block(EncodedMetadataSize(md));
  EncodeMetadata(md, block);
  for (size_t cut = 1; cut < block.size(); ++cut) {
    Metadata out;
    EXPECT_FALSE(DecodeMetadata(std::span(block.data(), cut), &out).ok()) << cut;
  }
  block[4] = 0xff;  // value length far past the block
  Metadata out;
  EXPECT_FALSE(DecodeMetadata(block, &out).ok());
}

TEST(Metadata, EnforcesGrpcKeyAndValueRules) {
  EXPECT_TRUE(ValidateMetadataEntry("x-ok_1.2", "printable").ok());
  EXPECT_FALSE(ValidateMetadataEntry("", "v").ok());
  EXPECT_FALSE(ValidateMetadataEntry("Upper", "v").ok());
  EXPECT_FALSE(ValidateMetadataEntry("k", "\n").ok());
  EXPECT_TRUE(ValidateMetadataEntry("k-bin", std::string("\0\n", 2)).ok());
}

TEST(MethodId, IsStableFnv1a) {
  EXPECT_EQ(MethodId(""), 2166136261u);
  EXPECT_NE(MethodId("/a.B/C"), MethodId("/a.B/D"));
  static_assert(MethodId("/a.B/C") == MethodId("/a.B/C"));
}

}  // namespace
}  // namespace zcrpc
