#include "zcrpc/base/wire.h"

#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace zcrpc {
namespace {

// x86-64 and aarch64 are little-endian; the codec assumes it.
static_assert(std::endian::native == std::endian::little, "zcrpc assumes a little-endian host");

template <typename T>
void Put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}
template <typename T>
T Get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Field offsets; docs/wire.md has the same table.
enum Offset : size_t {
  kMagic = 0,
  kVersion = 4,
  kType = 5,
  kFlags = 6,
  kCallId = 8,
  kMethodId = 16,
  kStatusCode = 20,
  kTimeout = 24,
  kMetadataLen = 32,
  kMessageLen = 36,
  kAttachmentCount = 40,
  kReserved1 = 44,
  kAttachmentsLen = 48,
  kPaddingLen = 56,
};

bool IsKnownType(uint8_t t) { return t >= 1 && t <= 3; }

}  // namespace

void EncodeWireHeader(const WireHeader& h, std::span<uint8_t, kWireHeaderSize> out) {
  uint8_t* p = out.data();
  Put<uint32_t>(p + kMagic, kWireMagic);
  p[kVersion] = kWireVersion;
  p[kType] = static_cast<uint8_t>(h.type);
  Put<uint16_t>(p + kFlags, h.flags);
  Put<uint64_t>(p + kCallId, h.call_id);
  Put<uint32_t>(p + kMethodId, h.method_id);
  Put<uint32_t>(p + kStatusCode, h.status_code);
  Put<uint64_t>(p + kTimeout, h.timeout_us);
  Put<uint32_t>(p + kMetadataLen, h.metadata_len);
  Put<uint32_t>(p + kMessageLen, h.message_len);
  Put<uint32_t>(p + kAttachmentCount, h.attachment_count);
  Put<uint32_t>(p + kReserved1, 0);
  Put<uint64_t>(p + kAttachmentsLen, h.attachments_len);
  Put<uint64_t>(p + kPaddingLen, h.padding_len);
}

StatusOr<WireHeader> DecodeWireHeader(std::span<const uint8_t, kWireHeaderSize> in) {
  const uint8_t* p = in.data();
  if (uint32_t magic = Get<uint32_t>(p + kMagic); magic != kWireMagic) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bad frame magic 0x%08x (expected 0x%08x): not a zcrpc peer", magic, kWireMagic));
  }
  if (p[kVersion] != kWireVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported wire version ", p[kVersion], " (this side speaks ", kWireVersion, ")"));
  }
  if (!IsKnownType(p[kType])) {
    return absl::InvalidArgumentError(absl::StrCat("unknown frame type ", p[kType]));
  }
  WireHeader h;
  h.type = static_cast<FrameType>(p[kType]);
  h.flags = Get<uint16_t>(p + kFlags);
  if ((h.flags & ~kKnownFlags) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat("unknown frame flags 0x%04x", h.flags));
  }
  if (Get<uint32_t>(p + kReserved1) != 0) {
    return absl::InvalidArgumentError("reserved header bytes are not zero");
  }
  h.call_id = Get<uint64_t>(p + kCallId);
  if (h.call_id == 0) return absl::InvalidArgumentError("call id 0 is not a valid call");
  h.method_id = Get<uint32_t>(p + kMethodId);
  h.status_code = Get<uint32_t>(p + kStatusCode);
  h.timeout_us = Get<uint64_t>(p + kTimeout);
  h.metadata_len = Get<uint32_t>(p + kMetadataLen);
  h.message_len = Get<uint32_t>(p + kMessageLen);
  h.attachment_count = Get<uint32_t>(p + kAttachmentCount);
  h.attachments_len = Get<uint64_t>(p + kAttachmentsLen);
  h.padding_len = Get<uint64_t>(p + kPaddingLen);
  if (h.padding_len > (uint64_t{h.attachment_count} + 3) * kMaxPaddingPerPart) {
    return absl::InvalidArgumentError(absl::StrCat("padding of ", h.padding_len, " bytes is more than ",
                                                   h.attachment_count + 3, " parts can need"));
  }
  // The section starts with the length table; it must fit in the section.
  // attachment_count < 2^32, so the product cannot overflow.
  if (uint64_t{h.attachment_count} * kAttachmentLengthSize > h.attachments_len) {
    return absl::InvalidArgumentError(absl::StrCat("attachment section of ", h.attachments_len,
                                                   " bytes cannot hold ", h.attachment_count,
                                                   " attachment lengths"));
  }
  if (h.attachments_len > (uint64_t{1} << 62)) {
    return absl::InvalidArgumentError("attachment section length overflows");
  }
  if (h.type == FrameType::kCancel && h.wire_body_len() != 0) {
    return absl::InvalidArgumentError("cancel frame with a body");
  }
  if (h.type == FrameType::kResponse && h.status_code > 16) {
    return absl::InvalidArgumentError(absl::StrCat("status code ", h.status_code, " out of range"));
  }
  return h;
}

Status CheckLimits(const WireHeader& h, const FrameLimits& limits) {
  if (h.metadata_len > limits.max_metadata_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("metadata of ", h.metadata_len,
                                                     " bytes exceeds the limit of ",
                                                     limits.max_metadata_bytes));
  }
  if (h.attachment_count > limits.max_attachments) {
    return absl::ResourceExhaustedError(absl::StrCat(h.attachment_count, " attachments exceed the limit of ",
                                                     limits.max_attachments));
  }
  if (h.body_len() > limits.max_body_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("frame body of ", h.body_len(),
                                                     " bytes exceeds the limit of ",
                                                     limits.max_body_bytes));
  }
  return absl::OkStatus();
}

Status ValidateMetadataEntry(std::string_view key, std::string_view value) {
  if (key.empty()) return absl::InvalidArgumentError("empty metadata key");
  for (char c : key) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("invalid character in metadata key '", ToAbsl(key), "'"));
  }
  if (key.size() >= 4 && key.substr(key.size() - 4) == "-bin") return absl::OkStatus();
  for (char c : value) {
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat("metadata value of '", ToAbsl(key), "' is not printable ASCII (use a -bin key)"));
    }
  }
  return absl::OkStatus();
}

size_t EncodedMetadataSize(const Metadata& md) {
  size_t n = 0;
  for (const auto& [k, v] : md) n += 8 + k.size() + v.size();
  return n;
}

void EncodeMetadata(const Metadata& md, std::span<uint8_t> out) {
  uint8_t* p = out.data();
  for (const auto& [k, v] : md) {
    Put<uint32_t>(p, static_cast<uint32_t>(k.size()));
    Put<uint32_t>(p + 4, static_cast<uint32_t>(v.size()));
    std::memcpy(p + 8, k.data(), k.size());
    std::memcpy(p + 8 + k.size(), v.data(), v.size());
    p += 8 + k.size() + v.size();
  }
}

Status DecodeMetadata(std::span<const uint8_t> block, Metadata* out) {
  size_t pos = 0;
  while (pos < block.size()) {
    if (block.size() - pos < 8) return absl::InvalidArgumentError("truncated metadata entry header");
    uint32_t klen = Get<uint32_t>(block.data() + pos);
    uint32_t vlen = Get<uint32_t>(block.data() + pos + 4);
    pos += 8;
    if (klen > block.size() - pos || vlen > block.size() - pos - klen) {
      return absl::InvalidArgumentError("metadata entry runs past the end of the block");
    }
    std::string_view key(reinterpret_cast<const char*>(block.data() + pos), klen);
    std::string_view value(reinterpret_cast<const char*>(block.data() + pos + klen), vlen);
    ZCRPC_RETURN_IF_ERROR(ValidateMetadataEntry(key, value));
    out->emplace_back(key, value);
    pos += klen + vlen;
  }
  return absl::OkStatus();
}

}  // namespace zcrpc
