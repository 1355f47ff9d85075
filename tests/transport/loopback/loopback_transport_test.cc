// loopback:// beyond the contract: its address and fault hooks, unique
// names, zero copy, shutdown. The contract cases run on it in
// tests/transport/contract/ (same binary, label contract); these carry the
// label fault.
#include "zcrpc/transport/loopback/loopback_transport.h"

#include <gtest/gtest.h>

#include "tests/transport/contract/transport_conformance.h"
#include "zcrpc/base/clock.h"

namespace zcrpc::transport::loopback {
namespace {

using contract::ConnectedPair;
using contract::ConnectPair;
using contract::MakeFrame;
using contract::RecordingHandler;

double SecondsSince(int64_t start) { return (Clock::Real().NowNanos() - start) / 1e9; }

// A pair on a transport of the test's own, dialled with `client_options`
// appended to the client URI and `listen_options` to the listen URI.
class LoopbackTest : public ::testing::Test {
 protected:
  void Connect(ConnectedPair* pair, const std::string& listen_options = "", const std::string& client_options = "",
               const ConnectionOptions& client = {}, const ConnectionOptions& server = {}) {
    std::string listen = "loopback://fault-*";
    if (!listen_options.empty()) listen += "?" + listen_options;
    ConnectPair(
        transport_, listen,
        [&](const std::string& bound) { return client_options.empty() ? bound : bound + "?" + client_options; },
        client, server, pair);
  }
  LoopbackTransport transport_;
};

TEST(LoopbackAddress, ParsesNameAndEveryFault) {
  StatusOr<LoopbackAddress> a = LoopbackAddress::Parse(
      "orders?delay_us=200&drop_every=3&fail_send_at=5&close_at_frame=10&stall=1&connect_delay_us=7&unchecked_send=1");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->name, "orders");
  EXPECT_EQ(a->uri(), "loopback://orders");
  EXPECT_EQ(a->faults.delay_us, 200u);
  EXPECT_EQ(a->faults.drop_every, 3u);
  EXPECT_EQ(a->faults.fail_send_at, 5u);
  EXPECT_EQ(a->faults.close_at_frame, 10u);
  EXPECT_TRUE(a->faults.stall);
  EXPECT_EQ(a->faults.connect_delay_us, 7u);
  EXPECT_TRUE(a->faults.unchecked_send);
  EXPECT_TRUE(LoopbackAddress::Parse("demo-*")->wants_unique_name());
}

TEST(LoopbackAddress, RefusesBadNamesAndValues) {
  for (const char* bad : {"", "?stall=1", "a b", "a*b", "x?stall=yes", "x?delay_us=-1", "x?delay_us=99999999999",
                          "x?nope=1", "x?drop_every"}) {
    EXPECT_EQ(LoopbackAddress::Parse(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(LoopbackTest, StarNamesAreUniqueAndTakenNamesRefused) {
  contract::AcceptQueue accepted;
  auto a = transport_.Listen(*Uri::Parse("loopback://uniq-*"), {}, accepted.callback());
  auto b = transport_.Listen(*Uri::Parse("loopback://uniq-*"), {}, accepted.callback());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)->uri(), (*b)->uri());
  EXPECT_EQ((*a)->uri().find('*'), std::string::npos);
  // The name is taken: a second listener on it cannot "bind".
  auto again = transport_.Listen(*Uri::Parse((*a)->uri()), {}, accepted.callback());
  EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);
  // Once the first goes, the name is free again.
  const std::string name = (*a)->uri();
  a->reset();
  EXPECT_TRUE(transport_.Listen(*Uri::Parse(name), {}, accepted.callback()).ok());
}

TEST_F(LoopbackTest, FramesMoveWithoutCopy) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  // The receiver gets the very bytes the sender allocated.
  Frame frame = MakeFrame(*pair.client, 1, 1 << 20);
  const uint8_t* sent = frame.message.data();
  ASSERT_TRUE(pair.client->Send(std::move(frame)).ok());
  ASSERT_TRUE(server->WaitFrames(1));
  EXPECT_EQ(server->TakeFrames()[0].message.data(), sent);
}

TEST_F(LoopbackTest, DelayHoldsEachFrameBack) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, "delay_us=100000"));
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  // delay_us on the server: 3 frames arrive no sooner than 100 ms after
  // they were sent, in order.
  const int64_t start = Clock::Real().NowNanos();
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, id)).ok());
  ASSERT_TRUE(server->WaitFrames(3));
  EXPECT_GE(SecondsSince(start), 0.09);
  EXPECT_EQ(server->call_ids(), (std::vector<uint64_t>{1, 2, 3}));
}

TEST_F(LoopbackTest, DropEveryNthFrame) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, "drop_every=3"));
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  // 9 frames; the 3rd, 6th and 9th are lost, the connection stays open.
  for (uint64_t id = 1; id <= 9; ++id) ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, id)).ok());
  ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, 10)).ok());
  ASSERT_TRUE(server->WaitFrames(7));
  EXPECT_EQ(server->call_ids(), (std::vector<uint64_t>{1, 2, 4, 5, 7, 8, 10}));
  EXPECT_EQ(server->closed_count(), 0);
  EXPECT_TRUE(pair.client->writable());  // dropped frames drained the budget too
}

TEST_F(LoopbackTest, FailSendAtClosesWithUnavailable) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, "", "fail_send_at=5"));
  auto client = std::make_shared<RecordingHandler>();
  auto server = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  pair.server->Start(server);
  // Sends 1-4 go; the 5th fails with UNAVAILABLE and the connection is
  // closed on both ends, as after a socket error; later sends fail too.
  for (uint64_t id = 1; id <= 4; ++id) ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, id)).ok());
  const Status fifth = pair.client->Send(MakeFrame(*pair.client, 5));
  EXPECT_EQ(fifth.code(), StatusCode::kUnavailable);
  EXPECT_NE(fifth.message().find("fail_send_at"), std::string::npos) << fifth;
  ASSERT_TRUE(client->WaitClosed());
  ASSERT_TRUE(server->WaitClosed());
  EXPECT_EQ(client->reason().code(), StatusCode::kUnavailable);
  EXPECT_EQ(server->call_ids(), (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(pair.client->Send(MakeFrame(*pair.client, 6)).code(), StatusCode::kUnavailable);
}

TEST_F(LoopbackTest, CloseAtFrame) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, "close_at_frame=10"));
  auto client = std::make_shared<RecordingHandler>();
  auto server = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  pair.server->Start(server);
  // The server end closes when frame 10 arrives: 1-9 delivered, then
  // OnClosed(UNAVAILABLE) on both ends.
  for (uint64_t id = 1; id <= 12; ++id) (void)pair.client->Send(MakeFrame(*pair.client, id));
  ASSERT_TRUE(server->WaitClosed());
  ASSERT_TRUE(client->WaitClosed());
  EXPECT_EQ(server->frame_count(), 9u);
  EXPECT_EQ(server->reason().code(), StatusCode::kUnavailable);
  EXPECT_NE(server->reason().message().find("close_at_frame"), std::string::npos) << server->reason();
  EXPECT_EQ(client->reason().code(), StatusCode::kUnavailable);
}

TEST_F(LoopbackTest, StallFillsBudgetThenClosesSender) {
  ConnectionOptions client_options;
  client_options.send_budget_bytes = 64 << 10;
  client_options.send_stall_timeout = std::chrono::milliseconds(200);
  // The server end is started but stalled (set by the transport API for
  // the next accepted end): nothing is taken from its queue.
  transport_.SetFaults("stalled", Faults{.stall = true});
  contract::AcceptQueue accepted;
  auto listener = transport_.Listen(*Uri::Parse("loopback://stalled"), {}, accepted.callback());
  ASSERT_TRUE(listener.ok());
  auto client_end = ConnectAndWait(transport_, *Uri::Parse("loopback://stalled"), client_options);
  ASSERT_TRUE(client_end.ok());
  auto server_end = accepted.Next();
  ASSERT_NE(server_end, nullptr);
  auto client = std::make_shared<RecordingHandler>();
  auto server = std::make_shared<RecordingHandler>();
  (*client_end)->Start(client);
  server_end->Start(server);
  // Past the budget: not writable. After ~200 ms without progress the
  // client closes (UNAVAILABLE); the stalled server still gets OnClosed.
  EXPECT_LT(contract::FillUntilNotWritable(**client_end, 16 << 10, 100, 1), 100u);
  ASSERT_TRUE(client->WaitClosed());
  EXPECT_EQ(client->reason().code(), StatusCode::kUnavailable);
  EXPECT_NE(client->reason().message().find("no progress"), std::string::npos) << client->reason();
  ASSERT_TRUE(server->WaitClosed());
  EXPECT_EQ(server->frame_count(), 0u);
  transport_.ClearFaults("stalled");
}

TEST_F(LoopbackTest, LiveStallThenUnstallCallsOnWritableOnce) {
  ConnectionOptions client_options;
  client_options.send_budget_bytes = 64 << 10;
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, "stall=1", "", client_options));
  auto client = std::make_shared<RecordingHandler>();
  auto server = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  pair.server->Start(server);
  // Stalled from the listen URI: the client fills its budget.
  const size_t sent = contract::FillUntilNotWritable(*pair.client, 16 << 10, 100, 1);
  ASSERT_LT(sent, 100u);
  EXPECT_EQ(server->frame_count(), 0u);
  // The stall is lifted on the live connection: everything arrives, and
  // the client hears OnWritable once.
  auto* live = static_cast<LoopbackConnection*>(pair.server.get());
  EXPECT_TRUE(live->faults().stall);
  live->SetFaults(Faults{});
  ASSERT_TRUE(server->WaitFrames(sent));
  ASSERT_TRUE(client->WaitWritable());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(client->writable_count(), 1);
}

TEST_F(LoopbackTest, ConnectDelayPastTimeoutIsDeadlineExceeded) {
  contract::AcceptQueue accepted;
  auto listener = transport_.Listen(*Uri::Parse("loopback://slow-*?connect_delay_us=5000000"), {}, accepted.callback());
  ASSERT_TRUE(listener.ok());
  // The server takes 5 s to "answer the preface"; the client gives up
  // after its 100 ms connect_timeout with DEADLINE_EXCEEDED.
  ConnectionOptions options;
  options.connect_timeout = std::chrono::milliseconds(100);
  const int64_t start = Clock::Real().NowNanos();
  auto late = ConnectAndWait(transport_, *Uri::Parse((*listener)->uri()), options);
  EXPECT_EQ(late.status().code(), StatusCode::kDeadlineExceeded) << late.status();
  EXPECT_GE(SecondsSince(start), 0.09);
  EXPECT_LT(SecondsSince(start), 4.0);
  // A delay under the timeout (50 ms from the client's URI) only slows
  // the connect down.
  auto quick = transport_.Listen(*Uri::Parse("loopback://quick-*"), {}, accepted.callback());
  ASSERT_TRUE(quick.ok());
  options.connect_timeout = std::chrono::seconds(10);
  const int64_t again = Clock::Real().NowNanos();
  auto slow = ConnectAndWait(transport_, *Uri::Parse((*quick)->uri() + "?connect_delay_us=50000"), options);
  EXPECT_TRUE(slow.ok()) << slow.status();
  EXPECT_GE(SecondsSince(again), 0.045);
}

TEST_F(LoopbackTest, MalformedHeaderClosesConnection) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  // Call id 0 is malformed on the wire: the receiving end closes with
  // INVALID_ARGUMENT, as tcp's reader would.
  ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, 0)).ok());
  ASSERT_TRUE(server->WaitClosed());
  EXPECT_EQ(server->reason().code(), StatusCode::kInvalidArgument) << server->reason();
  EXPECT_EQ(server->frame_count(), 0u);
}

TEST(LoopbackTransport, DestroyingTransportClosesConnections) {
  auto transport = std::make_unique<LoopbackTransport>(LoopbackTransport::Options{.poller_threads = 2});
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(*transport, "loopback://gone-*", [](const std::string& b) { return b; }, {},
                                      {}, &pair));
  auto client = std::make_shared<RecordingHandler>();
  auto server = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  pair.server->Start(server);
  pair.listener.reset();
  // The transport goes first: both handlers have had OnClosed by the time
  // its destructor returns; the handles only report UNAVAILABLE now.
  transport.reset();
  EXPECT_EQ(client->closed_count(), 1);
  EXPECT_EQ(server->closed_count(), 1);
  EXPECT_EQ(pair.client->Send(MakeFrame(*pair.client, 1)).code(), StatusCode::kUnavailable);
  EXPECT_FALSE(pair.client->PollUntil([] { return false; }, std::chrono::milliseconds(1)));
}

}  // namespace
}  // namespace zcrpc::transport::loopback
