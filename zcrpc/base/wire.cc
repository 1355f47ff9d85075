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

bool IsKnownType(uint8_t t) { return t >= 1 && t <= 10; }

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
  // A go-away belongs to the connection, not a call: its id is 0, and only its.
  if ((h.call_id == 0) != (h.type == FrameType::kGoAway)) {
    return absl::InvalidArgumentError(h.call_id == 0 ? "call id 0 is not a valid call"
                                                     : "go-away frame with a call id");
  }
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
  const bool bodiless = h.type == FrameType::kCancel || h.type == FrameType::kGoAway ||
                        h.type == FrameType::kHalfClose || h.type == FrameType::kCredit ||
                        h.type == FrameType::kPing || h.type == FrameType::kPingAck;
  if (bodiless && h.wire_body_len() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(FrameTypeName(h.type), " frame with a body"));
  }
  if ((h.flags & kFlagStream) != 0) {
    if (h.type != FrameType::kRequest) return absl::InvalidArgumentError("stream flag on a frame that is not a request");
    if (h.message_len != 0 || h.attachments_len != 0) {
      return absl::InvalidArgumentError("a stream's opening request carries a message (messages follow it)");
    }
  }
  if ((h.flags & kFlagMethodPath) != 0 && h.type != FrameType::kRequest) {
    return absl::InvalidArgumentError("method path flag on a frame that is not a request");
  }
  if (h.type == FrameType::kInitialMetadata && (h.message_len != 0 || h.attachments_len != 0)) {
    return absl::InvalidArgumentError("initial metadata frame with a message or attachments");
  }
  if (h.type == FrameType::kStreamMessage && h.metadata_len != 0) {
    return absl::InvalidArgumentError("stream message with a metadata block");
  }
  if (h.type == FrameType::kCredit && (h.credit_bytes() == 0 || h.credit_bytes() > kMaxStreamWindow)) {
    return absl::InvalidArgumentError(absl::StrCat("credit of ", h.credit_bytes(), " bytes (must be 1 to 2^40)"));
  }
  if (h.type == FrameType::kResponse && h.status_code > 16) {
    return absl::InvalidArgumentError(absl::StrCat("status code ", h.status_code, " out of range"));
  }
  return h;
}

const char* FrameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kRequest: return "request";
    case FrameType::kResponse: return "response";
    case FrameType::kCancel: return "cancel";
    case FrameType::kGoAway: return "go-away";
    case FrameType::kStreamMessage: return "stream message";
    case FrameType::kHalfClose: return "half-close";
    case FrameType::kCredit: return "credit";
    case FrameType::kInitialMetadata: return "initial metadata";
    case FrameType::kPing: return "ping";
    case FrameType::kPingAck: return "ping ack";
  }
  return "unknown";
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
  for (const auto& [k, v] : md) n += EncodedMetadataEntrySize(k, v);
  return n;
}

uint8_t* EncodeMetadataEntry(std::string_view key, std::string_view value, uint8_t* out) {
  Put<uint32_t>(out, static_cast<uint32_t>(key.size()));
  Put<uint32_t>(out + 4, static_cast<uint32_t>(value.size()));
  std::memcpy(out + 8, key.data(), key.size());
  std::memcpy(out + 8 + key.size(), value.data(), value.size());
  return out + EncodedMetadataEntrySize(key, value);
}

void EncodeMetadata(const Metadata& md, std::span<uint8_t> out) {
  uint8_t* p = out.data();
  for (const auto& [k, v] : md) p = EncodeMetadataEntry(k, v, p);
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

size_t EncodeMethodPath(std::string_view path, std::span<uint8_t> out) {
  uint8_t* p = out.data();
  Put<uint32_t>(p, static_cast<uint32_t>(kMethodPathKey.size()));
  Put<uint32_t>(p + 4, static_cast<uint32_t>(path.size()));
  std::memcpy(p + 8, kMethodPathKey.data(), kMethodPathKey.size());
  std::memcpy(p + 8 + kMethodPathKey.size(), path.data(), path.size());
  return EncodedMethodPathSize(path);
}

StatusOr<std::string_view> TakeMethodPath(std::span<const uint8_t>& block) {
  if (block.size() < 8) return absl::InvalidArgumentError("request announces a method path but has no :path entry");
  const uint32_t klen = Get<uint32_t>(block.data());
  const uint32_t vlen = Get<uint32_t>(block.data() + 4);
  if (klen != kMethodPathKey.size() || vlen > kMaxMethodPathBytes || block.size() - 8 < uint64_t{klen} + vlen ||
      std::memcmp(block.data() + 8, kMethodPathKey.data(), klen) != 0) {
    return absl::InvalidArgumentError("request announces a method path but its first metadata entry is not :path");
  }
  std::string_view path(reinterpret_cast<const char*>(block.data() + 8 + klen), vlen);
  // "/service/method": a leading slash, one more slash, neither part empty.
  const size_t second = path.size() > 1 ? path.find('/', 1) : std::string_view::npos;
  bool ok = !path.empty() && path.front() == '/' && second != std::string_view::npos && second > 1 &&
            second + 1 < path.size() && path.find('/', second + 1) == std::string_view::npos;
  for (char c : path) ok = ok && c > 0x20 && c < 0x7f;
  if (!ok) return absl::InvalidArgumentError("malformed method path (expected \"/package.Service/Method\")");
  block = block.subspan(8 + klen + vlen);
  return path;
}

namespace {
enum PrefaceOffset : size_t {
  kPfMagic = 0,
  kPfVersion = 4,
  kPfRole = 5,
  kPfReserved0 = 6,
  kPfFeatures = 8,
  kPfMaxBody = 16,
  kPfMaxMetadata = 24,
  kPfMaxAttachments = 28,
  kPfReserved1 = 32,  // to the end: zero
};
}  // namespace

void EncodePreface(const Preface& preface, std::span<uint8_t, kPrefaceSize> out) {
  uint8_t* p = out.data();
  std::memset(p, 0, kPrefaceSize);
  Put<uint32_t>(p + kPfMagic, kPrefaceMagic);
  p[kPfVersion] = preface.version;
  p[kPfRole] = static_cast<uint8_t>(preface.role);
  Put<uint64_t>(p + kPfFeatures, preface.features);
  Put<uint64_t>(p + kPfMaxBody, preface.limits.max_body_bytes);
  Put<uint32_t>(p + kPfMaxMetadata, preface.limits.max_metadata_bytes);
  Put<uint32_t>(p + kPfMaxAttachments, preface.limits.max_attachments);
}

StatusOr<Preface> DecodePreface(std::span<const uint8_t, kPrefaceSize> in, PrefaceRole expected_role) {
  const uint8_t* p = in.data();
  const uint32_t magic = Get<uint32_t>(p + kPfMagic);
  if (magic == kWireMagic) {
    return absl::FailedPreconditionError(
        "the peer sent a frame without a preface: it speaks zcrpc wire version 1, this side speaks 2");
  }
  if (magic != kPrefaceMagic) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bad preface magic 0x%08x (expected 0x%08x): not a zcrpc peer", magic, kPrefaceMagic));
  }
  Preface preface;
  preface.version = p[kPfVersion];
  if (preface.version != kWireVersion) {
    return absl::FailedPreconditionError(absl::StrCat("the peer speaks zcrpc wire version ", preface.version,
                                                      ", this side speaks ", kWireVersion));
  }
  if (p[kPfRole] != static_cast<uint8_t>(expected_role)) {
    return absl::InvalidArgumentError(absl::StrCat("preface role ", p[kPfRole], " where ",
                                                   static_cast<int>(expected_role), " was expected"));
  }
  preface.role = expected_role;
  for (size_t i = kPfReserved1; i < kPrefaceSize; ++i) {
    if (p[i] != 0) return absl::InvalidArgumentError("reserved preface bytes are not zero");
  }
  if (Get<uint16_t>(p + kPfReserved0) != 0) return absl::InvalidArgumentError("reserved preface bytes are not zero");
  preface.features = Get<uint64_t>(p + kPfFeatures);
  preface.limits.max_body_bytes = Get<uint64_t>(p + kPfMaxBody);
  preface.limits.max_metadata_bytes = Get<uint32_t>(p + kPfMaxMetadata);
  preface.limits.max_attachments = Get<uint32_t>(p + kPfMaxAttachments);
  return preface;
}

}  // namespace zcrpc
