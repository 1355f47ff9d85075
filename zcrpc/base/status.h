// Status types for zcrpc. The codes are gRPC's (absl::StatusCode uses the
// same numbering), so the gRPC bridge maps them one to one.
//
// The Abseil shipped by Debian 12 (20220623) has no status macros; the two
// below are the only ones the project uses.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <string_view>

namespace zcrpc {

// Debian's Abseil is built with its own absl::string_view (not an alias of
// std::string_view); this bridges the two where a std::string_view meets
// absl::StrCat or absl::Status.
inline absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

using Status = absl::Status;
using StatusCode = absl::StatusCode;
template <typename T>
using StatusOr = absl::StatusOr<T>;

}  // namespace zcrpc

#define ZCRPC_INTERNAL_CONCAT2(a, b) a##b
#define ZCRPC_INTERNAL_CONCAT(a, b) ZCRPC_INTERNAL_CONCAT2(a, b)

// Returns from the enclosing function if `expr` is not OK.
#define ZCRPC_RETURN_IF_ERROR(expr)              \
  do {                                           \
    ::absl::Status zcrpc_status_ = (expr);       \
    if (!zcrpc_status_.ok()) return zcrpc_status_; \
  } while (0)

// `lhs = value of expr`, or returns the error of the StatusOr `expr`.
#define ZCRPC_ASSIGN_OR_RETURN(lhs, expr) \
  ZCRPC_INTERNAL_ASSIGN_OR_RETURN(ZCRPC_INTERNAL_CONCAT(zcrpc_or_, __LINE__), lhs, expr)
#define ZCRPC_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(tmp).value()
