// Every transport's one way of turning a failed system call into a
// Status: UNAVAILABLE (the connection cannot be made or kept), naming the
// call and errno's text.
#pragma once

#include <cerrno>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/status.h"

namespace zcrpc::transport::internal {

inline Status ErrnoError(std::string_view what) {
  return absl::UnavailableError(absl::StrCat(ToAbsl(what), ": ", std::strerror(errno)));
}

}  // namespace zcrpc::transport::internal
