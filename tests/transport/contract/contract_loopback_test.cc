// The transport contract suite on loopback:// (in-process), one poller
// thread (the default) and, to shake out races between two delivering
// threads, two.
#include "tests/transport/contract/transport_conformance.h"
#include "zcrpc/transport/loopback/loopback_transport.h"

namespace zcrpc::transport::contract {
namespace {

Transport* OnePoller() {
  static auto* transport = new loopback::LoopbackTransport();
  return transport;
}
Transport* TwoPollers() {
  static auto* transport = new loopback::LoopbackTransport(loopback::LoopbackTransport::Options{.poller_threads = 2});
  return transport;
}

ContractTarget Loopback(std::string name, Transport* (*transport)()) {
  return ContractTarget{
      .name = std::move(name),
      .transport = transport,
      .listen_uri = "loopback://contract-*",
      .client_uri = [](const std::string& bound) { return bound; },
      .unused_uri = "loopback://contract-nobody-listens",
      .bad_uris = {"loopback://has space", "loopback://a*b", "loopback://x?delay_us=soon", "loopback://x?stall=2",
                   "loopback://?delay_us=1", "loopback://x?drop_every=-1"},
      .unchecked_client_uri = [](const std::string& bound) { return WithOption(bound, "unchecked_send=1"); },
  };
}

INSTANTIATE_TEST_SUITE_P(Loopback, TransportContract,
                         ::testing::Values(Loopback("loopback", OnePoller), Loopback("loopback2", TwoPollers)),
                         [](const ::testing::TestParamInfo<ContractTarget>& info) { return info.param.name; });

}  // namespace
}  // namespace zcrpc::transport::contract
