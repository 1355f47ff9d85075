// The frame codec: round trips, and every malformed case docs/wire.md lists.
#include "zcrpc/base/wire.h"

#include <cstring>

#include <array>
#include <string>
#include <vector>
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
        Malformed{"OlderVersion", [](Bytes& b) { b[4] = 1; }, StatusCode::kInvalidArgument},
        Malformed{"NewerVersion", [](Bytes& b) { b[4] = 3; }, StatusCode::kInvalidArgument},
        Malformed{"TypeZero", [](Bytes& b) { b[5] = 0; }, StatusCode::kInvalidArgument},
        Malformed{"ReservedType", [](Bytes& b) { b[5] = 9; }, StatusCode::kInvalidArgument},
        Malformed{"StreamMessageWithMetadata", [](Bytes& b) { b[5] = 5; }, StatusCode::kInvalidArgument},
        Malformed{"HalfCloseWithBody", [](Bytes& b) { b[5] = 6; }, StatusCode::kInvalidArgument},
        Malformed{"CreditWithBody", [](Bytes& b) { b[5] = 7; }, StatusCode::kInvalidArgument},
        Malformed{"StreamOpenWithAMessage", [](Bytes& b) { Poke<uint16_t>(b, 6, kFlagStream); },
                  StatusCode::kInvalidArgument},
        Malformed{"GoAwayWithACallId", [](Bytes& b) { b[5] = 4; }, StatusCode::kInvalidArgument},
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

// Stream frames (docs/wire.md, "Streams"): the shapes a receiver accepts,
// and the ones it closes the connection for.
WireHeader Bodiless(FrameType type) {
  WireHeader h;
  h.type = type;
  h.call_id = 9;
  return h;
}

TEST(WireStreamFrames, WellFormedOnesDecode) {
  WireHeader open = Bodiless(FrameType::kRequest);
  open.flags = kFlagStream | kFlagMethodPath;
  open.metadata_len = 40;
  WireHeader message = Bodiless(FrameType::kStreamMessage);
  message.message_len = 100;
  message.attachment_count = 1;
  message.attachments_len = kAttachmentLengthSize + 10;
  WireHeader credit = Bodiless(FrameType::kCredit);
  credit.set_credit_bytes(1 << 20);
  for (const WireHeader& h : {open, message, Bodiless(FrameType::kHalfClose), credit}) {
    auto decoded = DecodeWireHeader(Encode(h));
    ASSERT_TRUE(decoded.ok()) << FrameTypeName(h.type) << ": " << decoded.status();
    EXPECT_EQ(decoded->type, h.type);
    EXPECT_EQ(decoded->flags, h.flags);
    EXPECT_EQ(decoded->credit_bytes(), h.credit_bytes());
  }
}

TEST(WireStreamFrames, MalformedOnesAreRejected) {
  WireHeader zero_credit = Bodiless(FrameType::kCredit);
  WireHeader huge_credit = Bodiless(FrameType::kCredit);
  huge_credit.set_credit_bytes(kMaxStreamWindow + 1);
  WireHeader stream_response = Bodiless(FrameType::kResponse);
  stream_response.flags = kFlagStream;
  WireHeader path_on_message = Bodiless(FrameType::kStreamMessage);
  path_on_message.flags = kFlagMethodPath;
  WireHeader open_with_attachment = Bodiless(FrameType::kRequest);
  open_with_attachment.flags = kFlagStream;
  open_with_attachment.attachment_count = 1;
  open_with_attachment.attachments_len = kAttachmentLengthSize + 1;
  for (const WireHeader& h : {zero_credit, huge_credit, stream_response, path_on_message, open_with_attachment}) {
    auto decoded = DecodeWireHeader(Encode(h));
    EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument) << FrameTypeName(h.type);
  }
}

TEST(WireInitialMetadata, AMetadataBlockAloneDecodesAnythingMoreIsRejected) {
  WireHeader initial = Bodiless(FrameType::kInitialMetadata);
  initial.metadata_len = 30;
  auto decoded = DecodeWireHeader(Encode(initial));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->type, FrameType::kInitialMetadata);
  EXPECT_STREQ(FrameTypeName(FrameType::kInitialMetadata), "initial metadata");
  WireHeader with_message = initial;
  with_message.message_len = 1;
  WireHeader with_attachment = initial;
  with_attachment.attachment_count = 1;
  with_attachment.attachments_len = kAttachmentLengthSize + 1;
  for (const WireHeader& h : {with_message, with_attachment}) {
    EXPECT_EQ(DecodeWireHeader(Encode(h)).status().code(), StatusCode::kInvalidArgument);
  }
}

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

TEST(WireHeader, GoAwayHasNoCallAndNoBody) {
  WireHeader h;
  h.type = FrameType::kGoAway;
  h.call_id = 0;
  ASSERT_TRUE(DecodeWireHeader(Encode(h)).ok());
  h.metadata_len = 8;
  EXPECT_EQ(DecodeWireHeader(Encode(h)).status().code(), StatusCode::kInvalidArgument);
}

// --- method identity ---

std::vector<uint8_t> PathEntry(std::string_view key, std::string_view path) {
  std::vector<uint8_t> block(8 + key.size() + path.size());
  const uint32_t klen = static_cast<uint32_t>(key.size()), vlen = static_cast<uint32_t>(path.size());
  std::memcpy(block.data(), &klen, 4);
  std::memcpy(block.data() + 4, &vlen, 4);
  std::memcpy(block.data() + 8, key.data(), key.size());
  std::memcpy(block.data() + 8 + key.size(), path.data(), path.size());
  return block;
}

TEST(MethodPath, RoundTripsAndLeavesTheUserMetadataAfterIt) {
  const std::string_view path = "/zcrpc.test.TestService/Echo";
  Metadata user = {{"k", "v"}};
  std::vector<uint8_t> block(EncodedMethodPathSize(path) + EncodedMetadataSize(user));
  ASSERT_EQ(EncodeMethodPath(path, block), EncodedMethodPathSize(path));
  EncodeMetadata(user, std::span<uint8_t>(block).subspan(EncodedMethodPathSize(path)));
  std::span<const uint8_t> rest = block;
  StatusOr<std::string_view> taken = TakeMethodPath(rest);
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(*taken, path);
  Metadata decoded;
  ASSERT_TRUE(DecodeMetadata(rest, &decoded).ok());
  EXPECT_EQ(decoded, user);
}

TEST(MethodPath, MalformedPathsAreRefused) {
  for (std::string_view bad : {"", "/", "Echo", "/svc", "/svc/", "//Echo", "/a/b/c", "/svc/Ec ho", "/svc/\x7f"}) {
    SCOPED_TRACE(std::string(bad));
    std::vector<uint8_t> block = PathEntry(":path", bad);
    std::span<const uint8_t> span = block;
    EXPECT_EQ(TakeMethodPath(span).status().code(), StatusCode::kInvalidArgument);
  }
  std::vector<uint8_t> other_key = PathEntry(":pat", "/svc/Echo");
  std::span<const uint8_t> span = other_key;
  EXPECT_EQ(TakeMethodPath(span).status().code(), StatusCode::kInvalidArgument);
  std::vector<uint8_t> too_long = PathEntry(":path", "/svc/" + std::string(kMaxMethodPathBytes, 'x'));
  span = too_long;
  EXPECT_EQ(TakeMethodPath(span).status().code(), StatusCode::kInvalidArgument);
  std::vector<uint8_t> truncated = PathEntry(":path", "/svc/Echo");
  truncated.pop_back();
  span = truncated;
  EXPECT_EQ(TakeMethodPath(span).status().code(), StatusCode::kInvalidArgument);
}

TEST(MethodPath, UserMetadataCannotUseTheReservedKey) {
  EXPECT_FALSE(ValidateMetadataEntry(":path", "/svc/Echo").ok());
}

// --- preface ---

std::array<uint8_t, kPrefaceSize> EncodeP(const Preface& p) {
  std::array<uint8_t, kPrefaceSize> out{};
  EncodePreface(p, out);
  return out;
}

TEST(Preface, RoundTripsLimitsAndFeatures) {
  Preface p;
  p.role = PrefaceRole::kServer;
  p.features = 0;
  p.limits.max_body_bytes = 12345;
  p.limits.max_metadata_bytes = 678;
  p.limits.max_attachments = 9;
  auto decoded = DecodePreface(EncodeP(p), PrefaceRole::kServer);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->limits.max_body_bytes, 12345u);
  EXPECT_EQ(decoded->limits.max_metadata_bytes, 678u);
  EXPECT_EQ(decoded->limits.max_attachments, 9u);
}

TEST(Preface, AnHttpClientIsNotAZcrpcPeer) {
  std::array<uint8_t, kPrefaceSize> bytes{};
  std::memcpy(bytes.data(), "GET / HTTP/1.1\r\n", 16);
  auto decoded = DecodePreface(bytes, PrefaceRole::kClient);
  EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(decoded.status().message().find("not a zcrpc peer"), std::string_view::npos);
}

TEST(Preface, AVersionOneFrameAndAnotherVersionNameBothVersions) {
  WireHeader h = SampleRequest();
  std::array<uint8_t, kPrefaceSize> v1{};
  EncodeWireHeader(h, std::span<uint8_t, kWireHeaderSize>(v1.data(), kWireHeaderSize));
  auto decoded = DecodePreface(v1, PrefaceRole::kClient);
  EXPECT_EQ(decoded.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(decoded.status().message().find("version 1"), std::string_view::npos) << decoded.status();
  Preface p;
  p.version = 7;
  decoded = DecodePreface(EncodeP(p), PrefaceRole::kClient);
  EXPECT_EQ(decoded.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(decoded.status().message().find("version 7"), std::string_view::npos) << decoded.status();
}

TEST(Preface, WrongRoleAndReservedBytesAreRefused) {
  Preface p;
  p.role = PrefaceRole::kClient;
  EXPECT_EQ(DecodePreface(EncodeP(p), PrefaceRole::kServer).status().code(), StatusCode::kInvalidArgument);
  auto bytes = EncodeP(p);
  bytes[40] = 1;
  EXPECT_EQ(DecodePreface(bytes, PrefaceRole::kClient).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace zcrpc
