// The shm transport's one way of turning a failed system call into a
// Status: UNAVAILABLE (the connection cannot be made or kept), naming the
// call and errno's text.
#pragma once

#include <cerrno>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "rpc/status.h"

namespace zcrpc::transport::shm {

inline Status ErrnoError(std::string_view what) {
  return absl::UnavailableError(absl::StrCat(ToAbsl(what), ": ", std::strerror(errno)));
}

}  // namespace zcrpc::transport::shm
