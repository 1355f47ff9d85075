// The transport contract suite on tcp:// (127.0.0.1, a fresh port each
// time). Not built yet: tests/CMakeLists.txt enables it once the tcp port
// to contract v2 lands.
#include "tests/transport/contract/transport_conformance.h"
#include "zcrpc/transport/tcp/tcp_transport.h"

namespace zcrpc::transport::contract {
namespace {

Transport* Tcp() {
  static auto* transport = new tcp::TcpTransport();
  return transport;
}

INSTANTIATE_TEST_SUITE_P(
    Tcp, TransportContract,
    ::testing::Values(ContractTarget{
        .name = "tcp",
        .transport = Tcp,
        .listen_uri = "tcp://127.0.0.1:0",
        .client_uri = [](const std::string& bound) { return bound; },
        // Port 1 (tcpmux) is closed on every test machine: refused at once.
        .unused_uri = "tcp://127.0.0.1:1",
        .bad_uris = {"tcp://no-port", "tcp://127.0.0.1:99999", "tcp://127.0.0.1:x", "tcp://[::1",
                     "tcp://127.0.0.1:0?zerocopy_send=sometimes"},
        // tcp always checks its capabilities: FrameOverReceiverLimitsArrivesDiscarded
        // is covered by tcp_transport_test's raw-socket peer instead.
        .unchecked_client_uri = nullptr,
    }),
    [](const ::testing::TestParamInfo<ContractTarget>& info) { return info.param.name; });

}  // namespace
}  // namespace zcrpc::transport::contract
