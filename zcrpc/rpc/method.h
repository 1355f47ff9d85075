// MethodDescriptor: what the generated code knows about one RPC method. The
// wire carries only the 32-bit id (an FNV-1a hash of the path); servers
// reject two registered paths with the same id.
#pragma once

#include <cstdint>
#include <string_view>

#include "zcrpc/base/wire.h"

namespace zcrpc {

enum class MethodKind : uint8_t { kUnary, kClientStreaming, kServerStreaming, kBidiStreaming };

struct MethodDescriptor {
  constexpr MethodDescriptor(std::string_view path, MethodKind kind)
      : path(path), id(MethodId(path)), kind(kind) {}

  std::string_view path;  // "/package.Service/Method", as gRPC spells it
  uint32_t id;
  MethodKind kind;
};

}  // namespace zcrpc
