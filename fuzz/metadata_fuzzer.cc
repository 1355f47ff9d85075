// Fuzzes the metadata block parser and the method path entry
// (zcrpc/base/wire.h): any bytes either parse to entries that re-encode to
// the same block, or are refused; nothing reads past the block.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "zcrpc/base/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-size copy, so ASan sees any read past the block.
  auto block = std::make_unique<uint8_t[]>(size);
  std::copy(data, data + size, block.get());
  const std::span<const uint8_t> bytes(block.get(), size);

  zcrpc::Metadata metadata;
  if (zcrpc::DecodeMetadata(bytes, &metadata).ok()) {
    const size_t encoded_size = zcrpc::EncodedMetadataSize(metadata);
    if (encoded_size != size) __builtin_trap();
    std::vector<uint8_t> again(encoded_size);
    zcrpc::EncodeMetadata(metadata, again);
    if (!std::equal(again.begin(), again.end(), bytes.begin())) __builtin_trap();
    for (const auto& [key, value] : metadata) {
      if (!zcrpc::ValidateMetadataEntry(key, value).ok()) __builtin_trap();
    }
  }

  std::span<const uint8_t> rest = bytes;
  zcrpc::StatusOr<std::string_view> path = zcrpc::TakeMethodPath(rest);
  if (path.ok()) {
    if (path->empty() || path->front() != '/') __builtin_trap();
    if (rest.size() > bytes.size()) __builtin_trap();
    zcrpc::Metadata after;
    (void)zcrpc::DecodeMetadata(rest, &after);
  }
  return 0;
}
