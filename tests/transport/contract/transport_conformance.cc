// The cases of the transport contract suite (transport_conformance.h).
// Each checks one promise of zcrpc/transport/transport.h; multi-step cases
// say the situation and the expected outcome at each step.
#include "tests/transport/contract/transport_conformance.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "zcrpc/base/clock.h"

namespace zcrpc::transport::contract {

// ---- helpers ----

Frame MakeFrame(Connection& connection, uint64_t call_id, size_t size, uint8_t fill) {
  Frame frame;
  frame.header.type = FrameType::kRequest;
  frame.header.call_id = call_id;
  frame.header.method_id = 1;
  frame.message = connection.Allocate(size);
  if (size > 0) std::memset(frame.message.data(), fill, size);
  return frame;
}

Frame MakeOwnedFrame(CountingOwner& owner, uint64_t call_id, size_t size, size_t attachments) {
  Frame frame;
  frame.header.type = FrameType::kRequest;
  frame.header.call_id = call_id;
  frame.header.method_id = 1;
  frame.message = owner.Make(size);
  for (size_t i = 0; i < attachments; ++i) frame.attachments.push_back(owner.Make(64));
  return frame;
}

void RecordingHandler::OnFrame(Frame frame) {
  if (!InDeliveryThread()) outside_delivery_ = true;
  if (on_frame) on_frame(frame);
  std::lock_guard lock(mu_);
  if (closed_ > 0) after_close_ = true;
  call_ids_.push_back(frame.header.call_id);
  threads_.push_back(std::this_thread::get_id());
  frames_.push_back(std::move(frame));
  changed_.notify_all();
}

void RecordingHandler::OnWritable() {
  if (!InDeliveryThread()) outside_delivery_ = true;
  if (on_writable) on_writable();
  std::lock_guard lock(mu_);
  if (closed_ > 0) after_close_ = true;
  ++writable_;
  changed_.notify_all();
}

void RecordingHandler::OnClosed(const Status& reason) {
  if (!InDeliveryThread()) outside_delivery_ = true;
  if (on_closed) on_closed(reason);
  std::lock_guard lock(mu_);
  if (++closed_ == 1) reason_ = reason;
  changed_.notify_all();
}

bool RecordingHandler::WaitFrames(size_t n, std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return call_ids_.size() >= n; });
}
bool RecordingHandler::WaitClosed(std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return closed_ > 0; });
}
bool RecordingHandler::WaitWritable(std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return writable_ > 0; });
}
size_t RecordingHandler::frame_count() {
  std::lock_guard lock(mu_);
  return call_ids_.size();
}
std::vector<uint64_t> RecordingHandler::call_ids() {
  std::lock_guard lock(mu_);
  return call_ids_;
}
std::vector<std::thread::id> RecordingHandler::frame_threads() {
  std::lock_guard lock(mu_);
  return threads_;
}
std::vector<Frame> RecordingHandler::TakeFrames() {
  std::lock_guard lock(mu_);
  return std::move(frames_);
}
int RecordingHandler::closed_count() {
  std::lock_guard lock(mu_);
  return closed_;
}
int RecordingHandler::writable_count() {
  std::lock_guard lock(mu_);
  return writable_;
}
Status RecordingHandler::reason() {
  std::lock_guard lock(mu_);
  return reason_;
}

AcceptCallback AcceptQueue::callback() {
  return [state = state_](std::unique_ptr<Connection> connection) {
    std::lock_guard lock(state->mu);
    state->queue.push_back(std::move(connection));
    state->arrived.notify_all();
  };
}

std::unique_ptr<Connection> AcceptQueue::Next(std::chrono::nanoseconds timeout) {
  std::unique_lock lock(state_->mu);
  if (!state_->arrived.wait_for(lock, timeout, [&] { return !state_->queue.empty(); })) return nullptr;
  std::unique_ptr<Connection> connection = std::move(state_->queue.front());
  state_->queue.pop_front();
  return connection;
}

void ConnectPair(Transport& transport, const std::string& listen_uri,
                 const std::function<std::string(const std::string&)>& make_client_uri,
                 const ConnectionOptions& client_options, const ConnectionOptions& server_options,
                 ConnectedPair* pair) {
  StatusOr<Uri> listen = Uri::Parse(listen_uri);
  ASSERT_TRUE(listen.ok()) << listen.status();
  StatusOr<std::unique_ptr<Listener>> listener = transport.Listen(*listen, server_options, pair->accepted.callback());
  ASSERT_TRUE(listener.ok()) << listener.status();
  pair->listener = *std::move(listener);
  StatusOr<Uri> target = Uri::Parse(make_client_uri(pair->listener->uri()));
  ASSERT_TRUE(target.ok()) << target.status();
  StatusOr<std::unique_ptr<Connection>> client = ConnectAndWait(transport, *target, client_options);
  ASSERT_TRUE(client.ok()) << client.status();
  pair->client = *std::move(client);
  pair->server = pair->accepted.Next();
  ASSERT_NE(pair->server, nullptr) << "no accepted connection within " << kWait.count() << " s";
}

size_t FillUntilNotWritable(Connection& connection, size_t frame_bytes, size_t max_frames, uint64_t first_call_id) {
  size_t sent = 0;
  while (sent < max_frames && connection.writable()) {
    EXPECT_TRUE(connection.Send(MakeFrame(connection, first_call_id + sent, frame_bytes)).ok());
    ++sent;
  }
  return sent;
}

std::string WithOption(const std::string& uri, const std::string& option) {
  return uri + (uri.find('?') == std::string::npos ? "?" : "&") + option;
}

void TransportContract::Connect(ConnectedPair* pair, const ConnectionOptions& client_options,
                                const ConnectionOptions& server_options) {
  ConnectPair(transport(), GetParam().listen_uri, GetParam().client_uri, client_options, server_options, pair);
}

namespace {

int64_t NowNanos() { return Clock::Real().NowNanos(); }
double SecondsSince(int64_t start) { return (NowNanos() - start) / 1e9; }

// A budget small enough that a few frames fill it, a stall timeout long
// enough that it never fires by accident.
ConnectionOptions SmallBudget() {
  ConnectionOptions options;
  options.send_budget_bytes = 256 << 10;
  options.send_stall_timeout = std::chrono::seconds(60);
  return options;
}
// Frames for filling a send queue: large enough that even tcp's kernel
// buffers (a few MiB) fill within kMaxFill frames.
constexpr size_t kFillFrameBytes = 128 << 10;
constexpr size_t kMaxFill = 1024;

// ---- OnClosed exactly once, after the last OnFrame ----

TEST_P(TransportContract, ClosedOnceAfterLastFrame) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto client = std::make_shared<RecordingHandler>();
  auto server = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  pair.server->Start(server);
  // The client sends 100 frames and closes at once. The server sees a
  // prefix of them in order (a transport may drop what was still queued at
  // Close), then OnClosed once; nothing after it.
  for (uint64_t id = 1; id <= 100; ++id) ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, id)).ok());
  pair.client->Close(absl::CancelledError("test closes"));
  ASSERT_TRUE(server->WaitClosed());
  ASSERT_TRUE(client->WaitClosed());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // room for a wrong second call
  EXPECT_EQ(server->closed_count(), 1);
  EXPECT_EQ(client->closed_count(), 1);
  EXPECT_FALSE(server->after_close());
  EXPECT_FALSE(client->after_close());
  const std::vector<uint64_t> ids = server->call_ids();
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], i + 1);
  // The closing side's reason is its own Close's.
  EXPECT_EQ(client->reason().code(), StatusCode::kCancelled) << client->reason();
  EXPECT_FALSE(server->reason().ok());
}

TEST_P(TransportContract, ClosedOnceWhenBothSidesCloseAtOnce) {
  for (int round = 0; round < 20; ++round) {
    ConnectedPair pair;
    ASSERT_NO_FATAL_FAILURE(Connect(&pair));
    auto client = std::make_shared<RecordingHandler>();
    auto server = std::make_shared<RecordingHandler>();
    pair.client->Start(client);
    pair.server->Start(server);
    // Both ends send and close from two threads at the same moment: each
    // handler still sees OnClosed exactly once and no frame after it.
    std::atomic<bool> go{false};
    auto closer = [&go](Connection* c) {
      while (!go.load()) std::this_thread::yield();
      (void)c->Send(MakeFrame(*c, 7));
      c->Close(absl::CancelledError("both close"));
    };
    std::thread a(closer, pair.client.get());
    std::thread b(closer, pair.server.get());
    go = true;
    a.join();
    b.join();
    ASSERT_TRUE(client->WaitClosed());
    ASSERT_TRUE(server->WaitClosed());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(client->closed_count(), 1);
    EXPECT_EQ(server->closed_count(), 1);
    EXPECT_FALSE(client->after_close());
    EXPECT_FALSE(server->after_close());
  }
}

// ---- order ----

TEST_P(TransportContract, FramesInOrderFromOneThread) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  constexpr uint64_t kFrames = 2000;
  for (uint64_t id = 1; id <= kFrames; ++id) {
    ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, id, id % 7 * 100)).ok());
  }
  ASSERT_TRUE(server->WaitFrames(kFrames));
  const std::vector<uint64_t> ids = server->call_ids();
  for (uint64_t i = 0; i < kFrames; ++i) ASSERT_EQ(ids[i], i + 1);
}

TEST_P(TransportContract, FramesInOrderFromSeveralThreads) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  // Four threads send 500 frames each, call id = thread << 32 | sequence:
  // each thread's frames arrive in its order, all of them arrive.
  constexpr uint64_t kThreads = 4, kEach = 500;
  std::vector<std::thread> senders;
  for (uint64_t t = 0; t < kThreads; ++t) {
    senders.emplace_back([&pair, t] {
      for (uint64_t i = 1; i <= kEach; ++i) EXPECT_TRUE(pair.client->Send(MakeFrame(*pair.client, t << 32 | i)).ok());
    });
  }
  for (std::thread& s : senders) s.join();
  ASSERT_TRUE(server->WaitFrames(kThreads * kEach));
  std::vector<uint64_t> last(kThreads, 0);
  for (uint64_t id : server->call_ids()) {
    const uint64_t t = id >> 32, seq = id & 0xffffffff;
    ASSERT_LT(t, kThreads);
    ASSERT_EQ(seq, last[t] + 1) << "thread " << t;
    last[t] = seq;
  }
}

// ---- Send after Close ----

TEST_P(TransportContract, SendAfterCloseIsUnavailableAndReleasesBuffers) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto client = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  pair.client->Close(absl::CancelledError("done"));
  // Closed: Send fails with UNAVAILABLE and the frame's buffers go back to
  // their owner before Send returns.
  CountingOwner owner;
  const Status sent = pair.client->Send(MakeOwnedFrame(owner, 1, 4096, 2));
  EXPECT_EQ(sent.code(), StatusCode::kUnavailable) << sent;
  EXPECT_EQ(owner.outstanding(), 0);
  // The peer's side is closed too, with the same outcome for its Send.
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  ASSERT_TRUE(server->WaitClosed());
  EXPECT_EQ(pair.server->Send(MakeOwnedFrame(owner, 2, 4096)).code(), StatusCode::kUnavailable);
  EXPECT_EQ(owner.outstanding(), 0);
}

// ---- re-entrancy ----

TEST_P(TransportContract, CloseFromInsideOnFrame) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto client = std::make_shared<RecordingHandler>();
  auto server = std::make_shared<RecordingHandler>();
  Connection* server_end = pair.server.get();
  // The server closes its end from inside its first OnFrame: OnClosed
  // follows once, after that OnFrame returned; the client learns of it.
  server->on_frame = [server_end](Frame&) { server_end->Close(absl::AbortedError("handler closes")); };
  pair.client->Start(client);
  pair.server->Start(server);
  ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, 1)).ok());
  ASSERT_TRUE(server->WaitClosed());
  ASSERT_TRUE(client->WaitClosed());
  EXPECT_EQ(server->reason().code(), StatusCode::kAborted) << server->reason();
  EXPECT_EQ(server->frame_count(), 1u);
  EXPECT_EQ(server->closed_count(), 1);
  EXPECT_FALSE(server->after_close());
}

TEST_P(TransportContract, DestroyHandleInsideOwnHandler) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto client = std::make_shared<RecordingHandler>();
  auto server = std::make_shared<RecordingHandler>();
  // The server's handle is owned by its handler, which destroys it in its
  // first OnFrame: allowed, and OnClosed still follows exactly once.
  auto owned = std::make_shared<std::unique_ptr<Connection>>(std::move(pair.server));
  Connection* server_end = owned->get();
  server->on_frame = [owned](Frame&) { owned->reset(); };
  pair.client->Start(client);
  server_end->Start(server);
  ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, 1)).ok());
  // May already find the connection closed by the handler.
  (void)pair.client->Send(MakeFrame(*pair.client, 2));
  ASSERT_TRUE(server->WaitClosed());
  ASSERT_TRUE(client->WaitClosed());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(server->closed_count(), 1);
  EXPECT_GE(server->frame_count(), 1u);
  EXPECT_FALSE(server->after_close());
  server->on_frame = nullptr;
}

// ---- buffer lifetimes ----

TEST_P(TransportContract, ReceivedBuffersOutliveConnection) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  // Frames of several sizes arrive and are kept; then both ends close and
  // their handles go. The kept buffers still hold what was sent.
  const size_t sizes[] = {1, 4000, 70000, 1 << 20};
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, i + 1, sizes[i], static_cast<uint8_t>(0x31 + i))).ok());
  }
  ASSERT_TRUE(server->WaitFrames(4));
  std::vector<Frame> kept = server->TakeFrames();
  pair.client->Close(absl::CancelledError("done"));
  ASSERT_TRUE(server->WaitClosed());
  pair.client.reset();
  pair.server.reset();
  pair.listener.reset();
  ASSERT_EQ(kept.size(), 4u);
  for (size_t i = 0; i < kept.size(); ++i) {
    ASSERT_EQ(kept[i].message.size(), sizes[i]);
    const uint8_t want = static_cast<uint8_t>(0x30 + i + 1);
    EXPECT_TRUE(std::all_of(kept[i].message.data(), kept[i].message.data() + sizes[i],
                            [want](uint8_t b) { return b == want; }))
        << "frame " << i;
  }
}

TEST_P(TransportContract, AllocatedBuffersOutliveConnection) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  // Buffers allocated from a connection stay usable after it closed and
  // its handles went (they keep their memory alive).
  Buffer small = pair.client->Allocate(100);
  Buffer large = pair.client->Allocate(1 << 20);
  pair.client->Close(absl::CancelledError("done"));
  pair.client.reset();
  pair.server.reset();
  pair.listener.reset();
  ASSERT_EQ(small.size(), 100u);
  ASSERT_EQ(large.size(), size_t{1} << 20);
  std::memset(small.data(), 1, small.size());
  std::memset(large.data(), 2, large.size());
  EXPECT_EQ(large.data()[large.size() - 1], 2);
  small.reset();
  large.reset();
}

// ---- back-pressure ----

TEST_P(TransportContract, SendInsideOnFrameNeverBlocksOnAFullQueue) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, SmallBudget()));
  // The server end is never started: it does not drain. The client's
  // handler, on a delivering thread, sends far past its budget. Every Send
  // returns at once (OK: the budget is soft), and the queue reports
  // itself not writable.
  auto client = std::make_shared<RecordingHandler>();
  std::atomic<int> failed{0};
  std::atomic<double> seconds{-1};
  std::atomic<bool> writable_after{true};
  Connection* client_end = pair.client.get();
  client->on_frame = [&, client_end](Frame&) {
    const int64_t start = NowNanos();
    // 512 x 128 KiB: past any transport's own room (shm: a 256-slot ring)
    // and far past the budget.
    for (size_t i = 0; i < 512; ++i) {
      if (!client_end->Send(MakeFrame(*client_end, 100 + i, kFillFrameBytes)).ok()) ++failed;
    }
    seconds = SecondsSince(start);
    writable_after = client_end->writable();
  };
  pair.client->Start(client);
  ASSERT_TRUE(pair.server->Send(MakeFrame(*pair.server, 1)).ok());
  ASSERT_TRUE(client->WaitFrames(1));
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GE(seconds.load(), 0);
  EXPECT_LT(seconds.load(), 5.0) << "Send blocked a delivering thread";
  EXPECT_FALSE(writable_after.load());
  client->on_frame = nullptr;
}

TEST_P(TransportContract, NotWritablePastBudgetThenOnWritableOnce) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, SmallBudget()));
  auto client = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  // The server does not drain: the client fills its queue until
  // writable() says false (which arms one OnWritable).
  const size_t sent = FillUntilNotWritable(*pair.client, kFillFrameBytes, kMaxFill, 1);
  ASSERT_LT(sent, kMaxFill) << "never stopped being writable";
  EXPECT_FALSE(pair.client->writable());
  EXPECT_EQ(client->writable_count(), 0);
  // The server starts draining: OnWritable comes once, and the queue is
  // writable again.
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  ASSERT_TRUE(client->WaitWritable());
  ASSERT_TRUE(server->WaitFrames(sent));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(client->writable_count(), 1);
  EXPECT_TRUE(pair.client->writable());
}

TEST_P(TransportContract, WaitWritableHonoursDeadline) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, SmallBudget()));
  auto client = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  ASSERT_LT(FillUntilNotWritable(*pair.client, kFillFrameBytes, kMaxFill, 1), kMaxFill);
  // Full, nobody drains: WaitWritable returns DEADLINE_EXCEEDED at its
  // deadline (200 ms), not before it and not much later.
  int64_t start = NowNanos();
  Status waited = pair.client->WaitWritable(start + 200'000'000);
  EXPECT_EQ(waited.code(), StatusCode::kDeadlineExceeded) << waited;
  EXPECT_GE(SecondsSince(start), 0.19);
  EXPECT_LT(SecondsSince(start), 5.0);
  // The server starts draining 100 ms from now: a wait with a far deadline
  // returns OK once there is room.
  auto server = std::make_shared<RecordingHandler>();
  std::thread drain([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    pair.server->Start(server);
  });
  start = NowNanos();
  waited = pair.client->WaitWritable(start + std::chrono::nanoseconds(kWait).count());
  drain.join();
  EXPECT_TRUE(waited.ok()) << waited;
  // And once closed, a wait fails with UNAVAILABLE at once.
  pair.client->Close(absl::CancelledError("done"));
  EXPECT_EQ(pair.client->WaitWritable(0).code(), StatusCode::kUnavailable);
}

TEST_P(TransportContract, StalledSendQueueClosesConnection) {
  ConnectionOptions options = SmallBudget();
  options.send_stall_timeout = std::chrono::milliseconds(300);
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, options));
  auto client = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  // The server never reads; the client's queue stops moving. After the
  // stall timeout the client's end closes with UNAVAILABLE, and Send says
  // so too.
  ASSERT_LT(FillUntilNotWritable(*pair.client, kFillFrameBytes, kMaxFill, 1), kMaxFill);
  const int64_t start = NowNanos();
  ASSERT_TRUE(client->WaitClosed());
  EXPECT_GE(SecondsSince(start), 0.1);  // not at once: the queue had 300 ms
  EXPECT_EQ(client->reason().code(), StatusCode::kUnavailable) << client->reason();
  EXPECT_EQ(pair.client->Send(MakeFrame(*pair.client, 9999)).code(), StatusCode::kUnavailable);
}

// ---- threads ----

TEST_P(TransportContract, BlockingCallsFailInsideHandlers) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto client = std::make_shared<RecordingHandler>();
  Status wait_status, connect_status;
  Connection* client_end = pair.client.get();
  Transport* t = &transport();
  const std::string unused = GetParam().unused_uri;
  // Inside OnFrame, WaitWritable and ConnectAndWait fail at once with
  // FAILED_PRECONDITION instead of waiting.
  client->on_frame = [&, client_end, t](Frame&) {
    wait_status = client_end->WaitWritable(0);
    connect_status = ConnectAndWait(*t, *Uri::Parse(unused), ConnectionOptions{}).status();
  };
  pair.client->Start(client);
  ASSERT_TRUE(pair.server->Send(MakeFrame(*pair.server, 1)).ok());
  ASSERT_TRUE(client->WaitFrames(1));
  EXPECT_EQ(wait_status.code(), StatusCode::kFailedPrecondition) << wait_status;
  EXPECT_EQ(connect_status.code(), StatusCode::kFailedPrecondition) << connect_status;
  client->on_frame = nullptr;
}

TEST_P(TransportContract, InDeliveryThreadOnlyInsideHandlers) {
  EXPECT_FALSE(InDeliveryThread());
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  EXPECT_FALSE(InDeliveryThread());
  ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, 1)).ok());
  ASSERT_TRUE(server->WaitFrames(1));
  pair.client->Close(absl::CancelledError("done"));
  ASSERT_TRUE(server->WaitClosed());
  // RecordingHandler notes any OnFrame/OnClosed outside a delivering thread.
  EXPECT_FALSE(server->outside_delivery());
  EXPECT_FALSE(InDeliveryThread());
}

// ---- leader/follower ----

// A server end that echoes every frame back and lets its handle go at
// OnClosed (it owns it, so the test can drop its own reference).
class EchoHandler : public ConnectionHandler {
 public:
  explicit EchoHandler(std::shared_ptr<Connection> connection) : connection_(std::move(connection)) {}
  void OnFrame(Frame frame) override {
    if (connection_) (void)connection_->Send(MakeFrame(*connection_, frame.header.call_id));
  }
  void OnClosed(const Status&) override { connection_.reset(); }

 private:
  std::shared_ptr<Connection> connection_;
};

TEST_P(TransportContract, PollUntilReadsOwnReplyWhilePollerIdle) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  if (!pair.client->capabilities().caller_can_poll) GTEST_SKIP() << "no caller polling";
  auto client = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  std::shared_ptr<Connection> server_end = std::move(pair.server);
  server_end->Start(std::make_shared<EchoHandler>(server_end));
  server_end.reset();
  // 50 round trips; after each Send the caller reads its own reply with
  // PollUntil (false when another thread reads: then it just waits). The
  // poller is idle, so the caller delivers at least some replies itself,
  // on its own thread, inside a delivery scope.
  int caller_took = 0;
  std::atomic<bool> in_scope{true};
  const std::thread::id me = std::this_thread::get_id();
  client->on_frame = [&in_scope, me](Frame&) {
    if (std::this_thread::get_id() == me && !InDeliveryThread()) in_scope = false;
  };
  for (size_t i = 1; i <= 50; ++i) {
    ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, i)).ok());
    const int64_t start = NowNanos();
    while (client->frame_count() < i) {
      if (!pair.client->PollUntil([&] { return client->frame_count() >= i; }, std::chrono::milliseconds(100))) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      ASSERT_LT(SecondsSince(start), 10.0) << "reply " << i << " never came";
    }
  }
  for (std::thread::id t : client->frame_threads()) caller_took += t == me;
  EXPECT_GT(caller_took, 0) << "the caller never read its own reply";
  EXPECT_TRUE(in_scope.load());
  EXPECT_FALSE(client->outside_delivery());
  client->on_frame = nullptr;
  pair.client->Close(absl::CancelledError("done"));
  ASSERT_TRUE(client->WaitClosed());
}

TEST_P(TransportContract, PollUntilHandsBackToPoller) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  if (!pair.client->capabilities().caller_can_poll) GTEST_SKIP() << "no caller polling";
  auto client = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  // While the caller polls until it has 3 frames, the server sends 7: the
  // caller stops after its 3, and the 4 that arrived while it held the
  // receive side are still delivered (the poller gets the connection back).
  std::thread sender([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (uint64_t id = 1; id <= 7; ++id) EXPECT_TRUE(pair.server->Send(MakeFrame(*pair.server, id)).ok());
  });
  const int64_t start = NowNanos();
  while (client->frame_count() < 3 && SecondsSince(start) < 10) {
    if (!pair.client->PollUntil([&] { return client->frame_count() >= 3; }, std::chrono::seconds(1))) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  sender.join();
  ASSERT_TRUE(client->WaitFrames(7));
  // Later frames, with nobody polling, come through the poller.
  for (uint64_t id = 8; id <= 10; ++id) ASSERT_TRUE(pair.server->Send(MakeFrame(*pair.server, id)).ok());
  ASSERT_TRUE(client->WaitFrames(10));
  const std::vector<uint64_t> ids = client->call_ids();
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], i + 1);
  const std::vector<std::thread::id> threads = client->frame_threads();
  for (size_t i = 7; i < threads.size(); ++i) EXPECT_NE(threads[i], std::this_thread::get_id());
}

// ---- capabilities and limits ----

TEST_P(TransportContract, CapabilitiesReflectPeerLimits) {
  ConnectionOptions client_options, server_options;
  server_options.limits = FrameLimits{1 << 20, 4 << 10, 3};
  client_options.limits = FrameLimits{2 << 20, 8 << 10, 5};
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, client_options, server_options));
  // Each end reports what its peer announced (no transport here carries
  // less than these small limits).
  const Capabilities to_server = pair.client->capabilities();
  EXPECT_EQ(to_server.max_body_bytes, 1u << 20);
  EXPECT_EQ(to_server.max_metadata_bytes, 4u << 10);
  EXPECT_EQ(to_server.max_attachments, 3u);
  const Capabilities to_client = pair.server->capabilities();
  EXPECT_EQ(to_client.max_body_bytes, 2u << 20);
  EXPECT_EQ(to_client.max_metadata_bytes, 8u << 10);
  EXPECT_EQ(to_client.max_attachments, 5u);
}

TEST_P(TransportContract, SendOverCapabilitiesIsRefused) {
  ConnectionOptions server_options;
  server_options.limits = FrameLimits{1 << 20, 4 << 10, 3};
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair, {}, server_options));
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  // Over the peer's attachment count, over its body size: refused with
  // RESOURCE_EXHAUSTED (or INVALID_ARGUMENT), buffers released, the
  // connection still open: the next frame arrives.
  CountingOwner owner;
  std::vector<Frame> over;
  over.push_back(MakeOwnedFrame(owner, 1, 16, 4));
  over.push_back(MakeOwnedFrame(owner, 2, (1 << 20) + 1));
  for (Frame& frame : over) {
    const Status sent = pair.client->Send(std::move(frame));
    EXPECT_TRUE(sent.code() == StatusCode::kResourceExhausted || sent.code() == StatusCode::kInvalidArgument)
        << sent;
  }
  EXPECT_EQ(owner.outstanding(), 0);
  ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, 3)).ok());
  ASSERT_TRUE(server->WaitFrames(1));
  EXPECT_EQ(server->call_ids()[0], 3u);
}

TEST_P(TransportContract, FrameOverReceiverLimitsArrivesDiscarded) {
  if (!GetParam().unchecked_client_uri) GTEST_SKIP() << "no way to send past the capabilities";
  ConnectionOptions server_options;
  server_options.limits = FrameLimits{64 << 10, 4 << 10, 3};
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(transport(), GetParam().listen_uri, GetParam().unchecked_client_uri, {},
                                      server_options, &pair));
  auto server = std::make_shared<RecordingHandler>();
  pair.server->Start(server);
  // A peer that ignores the limits sends 128 KiB to a 64 KiB receiver:
  // the frame arrives with body_discarded, no parts, the header saying
  // what was sent; the connection stays open for the next frame.
  ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, 1, 128 << 10)).ok());
  ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, 2, 100)).ok());
  ASSERT_TRUE(server->WaitFrames(2));
  std::vector<Frame> frames = server->TakeFrames();
  EXPECT_TRUE(frames[0].body_discarded);
  EXPECT_TRUE(frames[0].message.empty());
  EXPECT_EQ(frames[0].header.message_len, 128u << 10);
  EXPECT_FALSE(frames[1].body_discarded);
  EXPECT_EQ(frames[1].message.size(), 100u);
  EXPECT_EQ(server->closed_count(), 0);
}

// ---- addresses and connecting ----

TEST_P(TransportContract, ValidateAddressRefusesGarbageAndUnknownOptions) {
  for (const std::string& bad : GetParam().bad_uris) {
    StatusOr<Uri> uri = Uri::Parse(bad);
    if (!uri.ok()) continue;  // refused before any transport sees it
    EXPECT_EQ(transport().ValidateAddress(*uri).code(), StatusCode::kInvalidArgument) << bad;
  }
  // An unknown option on a good address is refused too; the good address
  // itself, and one nobody listens on, pass (no network is touched).
  StatusOr<Uri> listen = Uri::Parse(GetParam().listen_uri);
  ASSERT_TRUE(listen.ok());
  EXPECT_TRUE(transport().ValidateAddress(*listen).ok());
  StatusOr<Uri> unused = Uri::Parse(GetParam().unused_uri);
  ASSERT_TRUE(unused.ok());
  EXPECT_TRUE(transport().ValidateAddress(*unused).ok()) << transport().ValidateAddress(*unused);
  StatusOr<Uri> unknown = Uri::Parse(WithOption(GetParam().unused_uri, "zz_no_such_option=1"));
  ASSERT_TRUE(unknown.ok());
  const Status refused = transport().ValidateAddress(*unknown);
  EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("zz_no_such_option"), std::string::npos) << refused;
}

TEST_P(TransportContract, ConnectToNobodyIsUnavailableViaCallback) {
  // Nobody listens: the callback runs once, with UNAVAILABLE, on a
  // transport thread, never inside Connect().
  struct Result {
    std::mutex mu;
    std::condition_variable done;
    int calls = 0;
    bool inside_connect = false;
    Status status;
  };
  auto result = std::make_shared<Result>();
  // A callback on the calling thread can only have run inside Connect().
  const std::thread::id caller = std::this_thread::get_id();
  transport().Connect(*Uri::Parse(GetParam().unused_uri), ConnectionOptions{},
                      [result, caller](StatusOr<std::unique_ptr<Connection>> connection) {
                        std::lock_guard lock(result->mu);
                        ++result->calls;
                        result->inside_connect = std::this_thread::get_id() == caller;
                        result->status = connection.status();
                        result->done.notify_all();
                      });
  std::unique_lock lock(result->mu);
  ASSERT_TRUE(result->done.wait_for(lock, kWait, [&] { return result->calls > 0; }));
  EXPECT_FALSE(result->inside_connect);
  EXPECT_EQ(result->status.code(), StatusCode::kUnavailable) << result->status;
  lock.unlock();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  lock.lock();
  EXPECT_EQ(result->calls, 1);
}

TEST_P(TransportContract, ListenerDestructionStopsAcceptingKeepsConnections) {
  ConnectedPair pair;
  ASSERT_NO_FATAL_FAILURE(Connect(&pair));
  auto client = std::make_shared<RecordingHandler>();
  auto server = std::make_shared<RecordingHandler>();
  pair.client->Start(client);
  pair.server->Start(server);
  // The listener goes. A new Connect to its address fails (UNAVAILABLE);
  // the connection it accepted still carries frames both ways.
  const std::string bound = pair.listener->uri();
  pair.listener.reset();
  StatusOr<std::unique_ptr<Connection>> late =
      ConnectAndWait(transport(), *Uri::Parse(GetParam().client_uri(bound)), ConnectionOptions{});
  EXPECT_EQ(late.status().code(), StatusCode::kUnavailable) << late.status();
  EXPECT_EQ(pair.accepted.Next(std::chrono::milliseconds(100)), nullptr);
  ASSERT_TRUE(pair.client->Send(MakeFrame(*pair.client, 1)).ok());
  ASSERT_TRUE(pair.server->Send(MakeFrame(*pair.server, 2)).ok());
  ASSERT_TRUE(server->WaitFrames(1));
  ASSERT_TRUE(client->WaitFrames(1));
  EXPECT_EQ(client->closed_count(), 0);
  EXPECT_EQ(server->closed_count(), 0);
}

}  // namespace
}  // namespace zcrpc::transport::contract
