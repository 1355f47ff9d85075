// Frame: one message on the wire as the runtime and transports pass it
// around. Each part is its own Buffer: the transport sends them as one
// scatter-gather list and never concatenates them; on receipt each part
// lands in its own page-aligned buffer.
#pragma once

#include <vector>

#include "zcrpc/base/buffer.h"
#include "zcrpc/base/wire.h"

namespace zcrpc {

struct Frame {
  WireHeader header;
  Buffer metadata;                 // encoded metadata block (wire.h)
  Buffer message;                  // serialized protobuf, or error text
  std::vector<Buffer> attachments;

  // Set by a receiver that read and discarded a body over its limits; the
  // parts are then empty and `header` says what the peer sent.
  bool body_discarded = false;
  // With body_discarded: why. A body within the limits is discarded when
  // the receiver's MemoryQuota (memory_quota.h) cannot cover it at that
  // moment, or the system has no memory for it.
  enum class DiscardReason : uint8_t { kOverLimits, kOverQuota, kOutOfMemory };
  DiscardReason discard_reason = DiscardReason::kOverLimits;

  // Requests only, and not on the wire (kFlagStream says all zcrpc peers
  // need): the method's kind, for transports whose own protocol needs more
  // (grpc:// puts a client-streaming call's response in its final frame).
  MethodKind kind = MethodKind::kUnary;

  // Copies the parts' sizes into the header's length fields.
  void SetLengthsFromParts() {
    header.metadata_len = static_cast<uint32_t>(metadata.size());
    header.message_len = static_cast<uint32_t>(message.size());
    header.attachment_count = static_cast<uint32_t>(attachments.size());
    uint64_t total = 0;
    for (const Buffer& a : attachments) total += kAttachmentLengthSize + a.size();
    header.attachments_len = total;
  }
};

}  // namespace zcrpc
