// The one place that names the concrete built-in transports. The runtime
// reaches them only through Registry::Default().
#include "zcrpc/transport/grpc/grpc_transport.h"
#include "zcrpc/transport/loopback/loopback_transport.h"
#include "zcrpc/transport/registry.h"
#include "zcrpc/transport/shm/shm_transport.h"
#include "zcrpc/transport/tcp/tcp_transport.h"

namespace zcrpc::transport {

void RegisterBuiltinTransports(Registry& registry) {
  (void)registry.Register("tcp", [] { return std::make_unique<tcp::TcpTransport>(); });
  (void)registry.Register("shm", [] { return std::make_unique<shm::ShmTransport>(); });
  (void)registry.Register("grpc", [] { return std::make_unique<grpc_bridge::GrpcTransport>(); });
  (void)registry.Register("loopback", [] { return std::make_unique<loopback::LoopbackTransport>(); });
}

}  // namespace zcrpc::transport
