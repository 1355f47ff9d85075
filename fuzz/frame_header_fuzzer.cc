// Fuzzes the frame header and preface decoders (zcrpc/base/wire.h): any 64
// bytes either decode to a header that re-encodes to itself, or are refused
// with a status; nothing reads past the 64 bytes.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "zcrpc/base/wire.h"

namespace {

using zcrpc::kPrefaceSize;
using zcrpc::kWireHeaderSize;

void CheckHeader(std::span<const uint8_t, kWireHeaderSize> bytes) {
  zcrpc::StatusOr<zcrpc::WireHeader> header = zcrpc::DecodeWireHeader(bytes);
  if (!header.ok()) return;
  (void)zcrpc::CheckLimits(*header, zcrpc::FrameLimits{});
  (void)zcrpc::FrameTypeName(header->type);
  (void)header->wire_body_len();
  std::array<uint8_t, kWireHeaderSize> again{};
  zcrpc::EncodeWireHeader(*header, std::span<uint8_t, kWireHeaderSize>(again));
  zcrpc::StatusOr<zcrpc::WireHeader> twice = zcrpc::DecodeWireHeader(std::span<const uint8_t, kWireHeaderSize>(again));
  // What was accepted once is accepted again, unchanged.
  if (!twice.ok() || twice->type != header->type || twice->flags != header->flags ||
      twice->call_id != header->call_id || twice->method_id != header->method_id ||
      twice->status_code != header->status_code || twice->timeout_us != header->timeout_us ||
      twice->metadata_len != header->metadata_len || twice->message_len != header->message_len ||
      twice->attachment_count != header->attachment_count || twice->attachments_len != header->attachments_len ||
      twice->padding_len != header->padding_len) {
    __builtin_trap();
  }
}

void CheckPreface(std::span<const uint8_t, kPrefaceSize> bytes, zcrpc::PrefaceRole role) {
  zcrpc::StatusOr<zcrpc::Preface> preface = zcrpc::DecodePreface(bytes, role);
  if (!preface.ok()) return;
  std::array<uint8_t, kPrefaceSize> again{};
  zcrpc::EncodePreface(*preface, std::span<uint8_t, kPrefaceSize>(again));
  zcrpc::StatusOr<zcrpc::Preface> twice = zcrpc::DecodePreface(std::span<const uint8_t, kPrefaceSize>(again), role);
  if (!twice.ok() || twice->features != preface->features ||
      twice->limits.max_body_bytes != preface->limits.max_body_bytes ||
      twice->limits.max_metadata_bytes != preface->limits.max_metadata_bytes ||
      twice->limits.max_attachments != preface->limits.max_attachments) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Shorter inputs are zero-padded, as a reader's buffer would be.
  std::array<uint8_t, kWireHeaderSize> bytes{};
  std::copy(data, data + std::min(size, bytes.size()), bytes.begin());
  CheckHeader(bytes);
  static_assert(kPrefaceSize == kWireHeaderSize);
  CheckPreface(bytes, zcrpc::PrefaceRole::kClient);
  CheckPreface(bytes, zcrpc::PrefaceRole::kServer);
  return 0;
}
