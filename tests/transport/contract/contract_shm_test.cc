// The transport contract suite on shm:// (an abstract socket with a unique
// name per listener).
#include "tests/transport/contract/transport_conformance.h"
#include "zcrpc/transport/shm/shm_transport.h"

namespace zcrpc::transport::contract {
namespace {

Transport* Shm() {
  static auto* transport = new shm::ShmTransport();
  return transport;
}

INSTANTIATE_TEST_SUITE_P(
    Shm, TransportContract,
    ::testing::Values(ContractTarget{
        .name = "shm",
        .transport = Shm,
        // On shm a receiver that keeps the frames it got keeps the sender's
        // slab blocks (docs/transports.md): the slab is then the window.
        // The back-pressure cases keep every frame while the sender fills
        // its ring (256 descriptors of 128 KiB, 32 MiB) and then its queue,
        // so the slab must hold more than the ring: 64 MiB, the default.
        .listen_uri = "shm://zcrpc-contract-*?slab_mb=64",
        .client_uri = [](const std::string& bound) { return bound; },
        .unused_uri = "shm://zcrpc-contract-nobody-listens",
        .bad_uris = {"shm://?slab_mb=8", "shm://x?slab_mb=3", "shm://x?busy_poll=2", "shm://x?ring_depth=many"},
        // shm checks its capabilities on Send; the hostile-peer process in
        // tests/transport/shm covers over-limit descriptors.
        .unchecked_client_uri = nullptr,
    }),
    [](const ::testing::TestParamInfo<ContractTarget>& info) { return info.param.name; });

}  // namespace
}  // namespace zcrpc::transport::contract
