// Why a received body was discarded (Frame::body_discarded), as the status
// its call ends with: over the receiver's limits, over its memory quota at
// that moment (memory_quota.h), or no memory left for it. All are
// RESOURCE_EXHAUSTED.
#pragma once

#include <string_view>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/base/status.h"

namespace zcrpc::internal {

// `what`: "request", "response", "stream message"; `side`: whose limits.
inline Status DiscardedStatus(const Frame& frame, std::string_view what, std::string_view side,
                              const FrameLimits& limits) {
  if (frame.discard_reason == Frame::DiscardReason::kOutOfMemory) {
    return absl::ResourceExhaustedError(absl::StrCat(ToAbsl(what), " of ", frame.header.body_len(),
                                                     " bytes: the ", ToAbsl(side), " is out of memory"));
  }
  if (frame.discard_reason == Frame::DiscardReason::kOverQuota) {
    return absl::ResourceExhaustedError(absl::StrCat(ToAbsl(what), " of ", frame.header.body_len(),
                                                     " bytes does not fit the ", ToAbsl(side),
                                                     "'s memory quota for bodies still arriving, now"));
  }
  return absl::ResourceExhaustedError(absl::StrCat(ToAbsl(what), " of ", frame.header.body_len(), " bytes exceeds the ",
                                                   ToAbsl(side), "'s limit of ", limits.max_body_bytes));
}

}  // namespace zcrpc::internal
