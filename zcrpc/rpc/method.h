// MethodDescriptor: what the generated code knows about one RPC method: its
// full path, as gRPC spells it, and its kind. The path is what identifies a
// method on the wire (docs/wire.md, "Method identity"); the hash only
// speeds up tables keyed by path.
#pragma once

#include <cstdint>
#include <string_view>

#include "zcrpc/base/wire.h"

namespace zcrpc {

struct MethodDescriptor {
  constexpr MethodDescriptor(std::string_view path, MethodKind kind)
      : path(path), path_hash(MethodId(path)), kind(kind) {}

  std::string_view path;  // "/package.Service/Method", as gRPC spells it
  uint32_t path_hash;  // FNV-1a of `path`
  MethodKind kind;
};

}  // namespace zcrpc
