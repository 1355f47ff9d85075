// The built-in transports of zcrpc_tcp_only (tests/CMakeLists.txt): tcp
// alone, so registry.cc links without the transports that are still being
// ported. zcrpc/builtin_transports.cc is the real list.
#include "zcrpc/transport/registry.h"
#include "zcrpc/transport/tcp/tcp_transport.h"

namespace zcrpc::transport {

void RegisterBuiltinTransports(Registry& registry) {
  (void)registry.Register("tcp", [] { return std::make_unique<tcp::TcpTransport>(); });
}

}  // namespace zcrpc::transport
