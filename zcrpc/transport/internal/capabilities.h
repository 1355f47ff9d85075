// What a connection can carry, from the two prefaces and the transport's own
// ceilings (transport.h, Capabilities), and the check Send() makes against
// it, so every transport answers capabilities() and refuses an oversized
// frame the same way, with the same words.
//
// For transport implementations only. No state; any thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/base/status.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::internal {

// For a transport that moves frames of any size (tcp, loopback).
inline constexpr FrameLimits kNoTransportLimits{UINT64_MAX, UINT32_MAX, UINT32_MAX};

// `transport_max`: what this transport can move in one frame at most (shm:
// what its slab can hold; its descriptor's parts), whatever the peer says.
inline Capabilities NegotiateCapabilities(const Preface& mine, const Preface& peer, const FrameLimits& transport_max,
                                          bool caller_can_poll) {
  Capabilities caps;
  caps.max_body_bytes = std::min(peer.limits.max_body_bytes, transport_max.max_body_bytes);
  caps.max_attachments = std::min(peer.limits.max_attachments, transport_max.max_attachments);
  caps.max_metadata_bytes = std::min(peer.limits.max_metadata_bytes, transport_max.max_metadata_bytes);
  caps.features = mine.features & peer.features;
  caps.caller_can_poll = caller_can_poll;
  return caps;
}

// RESOURCE_EXHAUSTED, naming the limit and the peer, for a frame over
// `caps` (the lengths are taken from the parts, not the header).
inline Status CheckFrameFits(const Capabilities& caps, const Frame& frame, std::string_view peer) {
  if (frame.attachments.size() > caps.max_attachments) {
    return absl::ResourceExhaustedError(absl::StrCat("a frame with ", frame.attachments.size(),
                                                     " attachments is over max_attachments ", caps.max_attachments,
                                                     " of the connection to ", ToAbsl(peer)));
  }
  if (frame.metadata.size() > caps.max_metadata_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("a frame with ", frame.metadata.size(),
                                                     " bytes of metadata is over max_metadata_bytes ",
                                                     caps.max_metadata_bytes, " of the connection to ", ToAbsl(peer)));
  }
  uint64_t body = uint64_t{frame.metadata.size()} + frame.message.size();
  for (const Buffer& a : frame.attachments) body += kAttachmentLengthSize + a.size();
  if (body > caps.max_body_bytes || frame.message.size() > UINT32_MAX) {
    return absl::ResourceExhaustedError(absl::StrCat("a frame of ", body, " body bytes is over max_body_bytes ",
                                                     caps.max_body_bytes, " of the connection to ", ToAbsl(peer)));
  }
  return absl::OkStatus();
}

}  // namespace zcrpc::transport::internal
