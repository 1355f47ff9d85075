// The tcp transport against contract v2 (transport.h), with real sockets on
// 127.0.0.1: Send never waits on a peer that does not read, the soft
// budget, OnWritable and WaitWritable, the stalled queue, the preface
// (timeouts, HTTP clients, version-1 peers), asynchronous Connect,
// capabilities, ValidateAddress, and the thread count.
//
// Times are bounded generously (at least 5x what an idle machine needs):
// these tests check behaviour, not speed, on a loaded 2-core machine.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "zcrpc/base/clock.h"
#include "zcrpc/transport/tcp/tcp_connection.h"
#include "zcrpc/transport/tcp/tcp_transport.h"

namespace zcrpc::transport::tcp {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

class Recorder : public ConnectionHandler {
 public:
  void OnFrame(Frame frame) override {
    if (on_frame) on_frame(frame);
    std::lock_guard lock(mu_);
    frames_.push_back(std::move(frame));
    cv_.notify_all();
  }
  void OnWritable() override {
    std::lock_guard lock(mu_);
    ++writable_calls_;
    cv_.notify_all();
  }
  void OnClosed(const Status& reason) override {
    std::lock_guard lock(mu_);
    ++closed_calls_;
    closed_ = reason;
    cv_.notify_all();
  }
  bool WaitForFrames(size_t n, std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return frames_.size() >= n; });
  }
  bool WaitForWritable(std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return writable_calls_ > 0; });
  }
  std::optional<Status> WaitForClose(std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return closed_.has_value(); });
    return closed_;
  }
  size_t frames() {
    std::lock_guard lock(mu_);
    return frames_.size();
  }
  int writable_calls() {
    std::lock_guard lock(mu_);
    return writable_calls_;
  }
  int closed_calls() {
    std::lock_guard lock(mu_);
    return closed_calls_;
  }

  std::function<void(const Frame&)> on_frame;  // set before Start

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Frame> frames_;
  int writable_calls_ = 0;
  int closed_calls_ = 0;
  std::optional<Status> closed_;
};

Frame MakeFrame(uint64_t id, size_t message, size_t attachments = 0, size_t attachment_size = 0) {
  Frame frame;
  frame.header.type = FrameType::kRequest;
  frame.header.call_id = id;
  frame.message = BufferPool::Default().Allocate(message);
  if (message > 0) std::memset(frame.message.data(), 0x5a, message);
  for (size_t i = 0; i < attachments; ++i) frame.attachments.push_back(BufferPool::Default().Allocate(attachment_size));
  return frame;
}

uint16_t PortOf(const std::string& uri) { return static_cast<uint16_t>(std::stoi(uri.substr(uri.rfind(':') + 1))); }

// A listener and one connection to it; the server side is not started
// unless asked, so it never reads: a peer that does not read.
struct Pair {
  explicit Pair(TcpTransport& transport, ConnectionOptions client_options = {},
                ConnectionOptions server_options = {}) {
    std::promise<std::unique_ptr<Connection>> accepted;
    auto l = transport.Listen(Uri{"tcp", "127.0.0.1:0"}, server_options,
                              [&accepted](std::unique_ptr<Connection> c) { accepted.set_value(std::move(c)); });
    EXPECT_TRUE(l.ok()) << l.status();
    listener = *std::move(l);
    auto c = ConnectAndWait(transport, Uri{"tcp", listener->uri().substr(6)}, client_options);
    EXPECT_TRUE(c.ok()) << c.status();
    client = *std::move(c);
    server = accepted.get_future().get();
    client->Start(client_handler);
  }
  TcpConnection& client_tcp() { return static_cast<TcpConnection&>(*client); }

  std::unique_ptr<Listener> listener;
  std::unique_ptr<Connection> client, server;
  std::shared_ptr<Recorder> client_handler = std::make_shared<Recorder>();
  std::shared_ptr<Recorder> server_handler = std::make_shared<Recorder>();
};

// Fills the client's queue past its budget; returns the frames sent.
int FillPastBudget(Pair& pair, size_t frame_bytes, std::chrono::nanoseconds* slowest_send) {
  int sent = 0;
  *slowest_send = 0ns;
  for (; sent < 10000 && pair.client->writable(); ++sent) {
    const auto start = SteadyClock::now();
    EXPECT_TRUE(pair.client->Send(MakeFrame(static_cast<uint64_t>(sent) + 1, frame_bytes)).ok());
    *slowest_send = std::max<std::chrono::nanoseconds>(*slowest_send, SteadyClock::now() - start);
  }
  return sent;
}

TEST(TcpSendPath, SendNeverWaitsForAPeerThatDoesNotRead) {
  TcpTransport transport;
  ConnectionOptions options;
  options.send_budget_bytes = 1 << 20;
  Pair pair(transport, options);

  // Step 1: the peer never reads. Sends return at once while the kernel's
  // buffers fill, then the queue grows past the budget and writable() says
  // so; Send still takes frames (the budget is soft).
  std::chrono::nanoseconds slowest{};
  const int sent = FillPastBudget(pair, 256 << 10, &slowest);
  ASSERT_LT(sent, 10000) << "writable() never turned false";
  EXPECT_FALSE(pair.client->writable());
  for (int i = 0; i < 4; ++i) {
    const auto start = SteadyClock::now();
    ASSERT_TRUE(pair.client->Send(MakeFrame(100000 + static_cast<uint64_t>(i), 256 << 10)).ok());
    slowest = std::max<std::chrono::nanoseconds>(slowest, SteadyClock::now() - start);
  }
  EXPECT_LT(slowest, 1s) << "a Send waited for the peer";
  const uint64_t queued = pair.client_tcp().stats().queued_bytes;
  EXPECT_GT(queued, uint64_t{1} << 20) << "the budget is soft: frames past it are queued";
  EXPECT_LE(queued, (uint64_t{1} << 20) + 5 * (256 << 10) + 4096) << "queued more than was sent past the budget";

  // Step 2: a caller that may wait gets DEADLINE_EXCEEDED at its deadline.
  const auto wait_start = SteadyClock::now();
  Status waited = pair.client->WaitWritable(Clock::Real().NowNanos() + std::chrono::nanoseconds(200ms).count());
  const auto waited_for = SteadyClock::now() - wait_start;
  EXPECT_EQ(waited.code(), StatusCode::kDeadlineExceeded) << waited;
  EXPECT_GE(waited_for, 190ms);
  EXPECT_LT(waited_for, 5s);
  EXPECT_EQ(pair.client_handler->writable_calls(), 0);

  // Step 3: the peer starts reading: every frame arrives, the queue drains,
  // and OnWritable fires exactly once.
  pair.server->Start(pair.server_handler);
  ASSERT_TRUE(pair.server_handler->WaitForFrames(static_cast<size_t>(sent) + 4, 60s));
  ASSERT_TRUE(pair.client_handler->WaitForWritable());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(pair.client_handler->writable_calls(), 1);
  EXPECT_TRUE(pair.client->writable());
  EXPECT_TRUE(pair.client->WaitWritable(0).ok());
}

TEST(TcpSendPath, WaitWritableInsideOnFrameFailsAtOnce) {
  TcpTransport transport;
  Pair pair(transport);
  std::promise<Status> inside;
  Connection* server = pair.server.get();
  pair.server_handler->on_frame = [&inside, server](const Frame&) {
    inside.set_value(server->WaitWritable(0));
  };
  pair.server->Start(pair.server_handler);
  ASSERT_TRUE(pair.client->Send(MakeFrame(1, 64)).ok());
  auto future = inside.get_future();
  ASSERT_EQ(future.wait_for(30s), std::future_status::ready);
  const Status status = future.get();
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status;
}

TEST(TcpSendPath, AStalledQueueClosesThatConnectionOnly) {
  TcpTransport transport;
  ConnectionOptions options;
  options.send_budget_bytes = 1 << 20;
  options.send_stall_timeout = 300ms;
  Pair stalled(transport, options);
  Pair healthy(transport, options);
  healthy.server->Start(healthy.server_handler);

  // The peer of `stalled` never reads: once the kernel's buffers are full
  // the queue makes no progress, and after send_stall_timeout the
  // connection closes with UNAVAILABLE naming the peer and the time.
  std::chrono::nanoseconds slowest{};
  FillPastBudget(stalled, 256 << 10, &slowest);
  const auto filled = SteadyClock::now();
  std::optional<Status> closed = stalled.client_handler->WaitForClose(30s);
  const auto took = SteadyClock::now() - filled;
  ASSERT_TRUE(closed.has_value()) << "the stalled connection stayed open";
  EXPECT_EQ(closed->code(), StatusCode::kUnavailable) << *closed;
  EXPECT_NE(closed->message().find(stalled.client->peer()), std::string::npos) << *closed;
  EXPECT_NE(closed->message().find("300 ms"), std::string::npos) << *closed;
  EXPECT_GE(took, 250ms);  // not before the stall time (less the fill's own last progress)
  EXPECT_LT(took, 10s);
  EXPECT_EQ(stalled.client_handler->closed_calls(), 1);
  EXPECT_EQ(stalled.client->Send(MakeFrame(1, 64)).code(), StatusCode::kUnavailable);

  // The other connection on the same loop keeps working.
  ASSERT_TRUE(healthy.client->Send(MakeFrame(7, 64)).ok());
  ASSERT_TRUE(healthy.server_handler->WaitForFrames(1));
  EXPECT_FALSE(healthy.client_handler->WaitForClose(10ms).has_value());
}

// A raw TCP server on 127.0.0.1 that accepts and does whatever `serve`
// says with the socket.
class RawServer {
 public:
  explicit RawServer(std::function<void(int)> serve) : serve_(std::move(serve)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 4);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      serve_(c);
      ::close(c);
    });
  }
  ~RawServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::function<void(int)> serve_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

// Holds a socket open without writing until the peer closes or 30 s pass.
void HoldSilently(int fd) {
  pollfd p{fd, POLLIN, 0};
  for (auto end = SteadyClock::now() + 30s; SteadyClock::now() < end;) {
    if (::poll(&p, 1, 50) > 0) {
      char bytes[256];
      if (::read(fd, bytes, sizeof bytes) <= 0) return;
    }
  }
}

TEST(TcpConnect, ReturnsAtOnceAndTimesOutWithoutAPreface) {
  RawServer server(HoldSilently);
  TcpTransport transport;
  ConnectionOptions options;
  options.connect_timeout = 1500ms;
  std::promise<StatusOr<std::unique_ptr<Connection>>> result;
  std::atomic<bool> called_inside{false};
  std::atomic<bool> in_connect{true};
  const auto start = SteadyClock::now();
  transport.Connect(Uri{"tcp", server.address()}, options, [&](StatusOr<std::unique_ptr<Connection>> c) {
    if (in_connect.load()) called_inside = true;
    result.set_value(std::move(c));
  });
  in_connect = false;
  const auto returned_after = SteadyClock::now() - start;
  EXPECT_LT(returned_after, 500ms) << "Connect() waited for the network";
  auto future = result.get_future();
  ASSERT_EQ(future.wait_for(30s), std::future_status::ready);
  const auto failed_after = SteadyClock::now() - start;
  StatusOr<std::unique_ptr<Connection>> connection = future.get();
  EXPECT_FALSE(called_inside);
  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.status().code(), StatusCode::kDeadlineExceeded) << connection.status();
  EXPECT_NE(connection.status().message().find("preface"), std::string::npos) << connection.status();
  EXPECT_GE(failed_after, 1400ms);
  EXPECT_LT(failed_after, 15s);
}

TEST(TcpConnect, RefusedIsUnavailableOnATransportThread) {
  // A port that was just free: nothing listens there.
  int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(probe, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(probe);
  TcpTransport transport;
  std::promise<std::pair<Status, std::thread::id>> result;
  transport.Connect(Uri{"tcp", "127.0.0.1:" + std::to_string(ntohs(addr.sin_port))}, {},
                    [&](StatusOr<std::unique_ptr<Connection>> c) {
                      result.set_value({c.status(), std::this_thread::get_id()});
                    });
  auto future = result.get_future();
  ASSERT_EQ(future.wait_for(30s), std::future_status::ready);
  auto [status, thread] = future.get();
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status;
  EXPECT_NE(thread, std::this_thread::get_id());
}

TEST(TcpConnect, AVersionOneServerIsFailedPrecondition) {
  // A version-1 server sends no preface: its first bytes are a frame header.
  RawServer server([](int fd) {
    WireHeader header;
    header.type = FrameType::kResponse;
    header.call_id = 1;
    uint8_t bytes[kWireHeaderSize];
    EncodeWireHeader(header, std::span<uint8_t, kWireHeaderSize>(bytes));
    [[maybe_unused]] ssize_t n = ::write(fd, bytes, sizeof bytes);
    HoldSilently(fd);
  });
  TcpTransport transport;
  auto connection = ConnectAndWait(transport, Uri{"tcp", server.address()}, {});
  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.status().code(), StatusCode::kFailedPrecondition) << connection.status();
  EXPECT_NE(connection.status().message().find("version 1"), std::string::npos) << connection.status();
  EXPECT_NE(connection.status().message().find("speaks 2"), std::string::npos) << connection.status();
}

// A listener whose handshake errors are recorded, and a raw client socket.
class RawClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TcpTransport::Options options;
    options.on_handshake_error = [this](const Status& s) {
      std::lock_guard lock(mu_);
      errors_.push_back(s);
      cv_.notify_all();
    };
    transport_ = std::make_unique<TcpTransport>(options);
    ConnectionOptions connection_options;
    connection_options.connect_timeout = 300ms;
    auto listener = transport_->Listen(Uri{"tcp", "127.0.0.1:0"}, connection_options,
                                       [this](std::unique_ptr<Connection>) { accepted_.fetch_add(1); });
    ASSERT_TRUE(listener.ok()) << listener.status();
    listener_ = *std::move(listener);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(PortOf(listener_->uri()));
    ASSERT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  void TearDown() override {
    if (fd_ >= 0) ::close(fd_);
    listener_.reset();
    transport_.reset();
  }
  // True once the server closed the socket (after whatever it sent).
  bool ClosedByServer(std::chrono::milliseconds timeout = 30s) {
    pollfd p{fd_, POLLIN, 0};
    for (auto end = SteadyClock::now() + timeout; SteadyClock::now() < end;) {
      if (::poll(&p, 1, 50) <= 0) continue;
      char bytes[256];
      ssize_t n = ::read(fd_, bytes, sizeof bytes);
      if (n <= 0) return true;
      received_ += static_cast<size_t>(n);
    }
    return false;
  }
  std::optional<Status> WaitForError(std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !errors_.empty(); })) return std::nullopt;
    return errors_.front();
  }

  std::unique_ptr<TcpTransport> transport_;
  std::unique_ptr<Listener> listener_;
  int fd_ = -1;
  size_t received_ = 0;
  std::atomic<int> accepted_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Status> errors_;
};

TEST_F(RawClientTest, AnHttpRequestIsClosedWithThePrefaceError) {
  const char request[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  ASSERT_EQ(::write(fd_, request, sizeof request - 1), static_cast<ssize_t>(sizeof request - 1));
  EXPECT_TRUE(ClosedByServer());
  EXPECT_EQ(received_, 0u) << "the server answered a peer that is not zcrpc";
  std::optional<Status> error = WaitForError();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), StatusCode::kInvalidArgument) << *error;
  EXPECT_NE(error->message().find("not a zcrpc peer"), std::string::npos) << *error;
  EXPECT_EQ(accepted_.load(), 0);
}

TEST_F(RawClientTest, AVersionOneFrameWithoutPrefaceIsFailedPrecondition) {
  WireHeader header;
  header.call_id = 1;
  header.message_len = 64;
  uint8_t bytes[kWireHeaderSize + 64] = {};
  EncodeWireHeader(header, std::span<uint8_t, kWireHeaderSize>(bytes, kWireHeaderSize));
  ASSERT_EQ(::write(fd_, bytes, sizeof bytes), static_cast<ssize_t>(sizeof bytes));
  EXPECT_TRUE(ClosedByServer());
  std::optional<Status> error = WaitForError();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), StatusCode::kFailedPrecondition) << *error;
  EXPECT_NE(error->message().find("version 1"), std::string::npos) << *error;
  EXPECT_NE(error->message().find("speaks 2"), std::string::npos) << *error;
  EXPECT_EQ(accepted_.load(), 0);
}

TEST_F(RawClientTest, ASilentClientIsClosedAfterConnectTimeout) {
  const auto start = SteadyClock::now();
  EXPECT_TRUE(ClosedByServer());
  EXPECT_GE(SteadyClock::now() - start, 250ms);
  std::optional<Status> error = WaitForError();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), StatusCode::kDeadlineExceeded) << *error;
  EXPECT_EQ(accepted_.load(), 0);
}

TEST_F(RawClientTest, APrefaceInPiecesIsAccepted) {
  uint8_t preface[kPrefaceSize];
  EncodePreface(Preface{}, std::span<uint8_t, kPrefaceSize>(preface));
  for (size_t at = 0; at < kPrefaceSize; at += 7) {
    const size_t n = std::min<size_t>(7, kPrefaceSize - at);
    ASSERT_EQ(::write(fd_, preface + at, n), static_cast<ssize_t>(n));
    std::this_thread::sleep_for(2ms);
  }
  for (int i = 0; i < 3000 && accepted_.load() == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(accepted_.load(), 1);
  // The server answered with its own preface.
  uint8_t answer[kPrefaceSize];
  size_t have = 0;
  while (have < kPrefaceSize) {
    ssize_t n = ::read(fd_, answer + have, kPrefaceSize - have);
    ASSERT_GT(n, 0);
    have += static_cast<size_t>(n);
  }
  auto decoded = DecodePreface(std::span<const uint8_t, kPrefaceSize>(answer), PrefaceRole::kServer);
  EXPECT_TRUE(decoded.ok()) << decoded.status();
}

TEST(TcpCapabilities, ReflectThePeersLimitsAndRefuseLargerFrames) {
  TcpTransport transport;
  ConnectionOptions server_options;
  server_options.limits.max_body_bytes = 100000;
  server_options.limits.max_metadata_bytes = 1000;
  server_options.limits.max_attachments = 3;
  Pair pair(transport, {}, server_options);
  pair.server->Start(pair.server_handler);

  const Capabilities caps = pair.client->capabilities();
  EXPECT_EQ(caps.max_body_bytes, 100000u);
  EXPECT_EQ(caps.max_metadata_bytes, 1000u);
  EXPECT_EQ(caps.max_attachments, 3u);
  EXPECT_EQ(caps.features, kKnownFeatures);  // both sides announce streams
  EXPECT_TRUE(caps.caller_can_poll);
  EXPECT_EQ(caps.receive_memory_bytes, 0u);  // bounded by this process's memory alone
  const Capabilities server_caps = pair.server->capabilities();  // the client's defaults
  EXPECT_EQ(server_caps.max_body_bytes, FrameLimits{}.max_body_bytes);
  EXPECT_EQ(server_caps.max_attachments, FrameLimits{}.max_attachments);

  Status too_big = pair.client->Send(MakeFrame(1, 200000));
  EXPECT_EQ(too_big.code(), StatusCode::kResourceExhausted) << too_big;
  EXPECT_NE(too_big.message().find("100000"), std::string::npos) << too_big;
  Status too_many = pair.client->Send(MakeFrame(2, 64, 4, 10));
  EXPECT_EQ(too_many.code(), StatusCode::kResourceExhausted) << too_many;
  EXPECT_NE(too_many.message().find("max_attachments 3"), std::string::npos) << too_many;
  // A refused frame leaves the connection as it was.
  ASSERT_TRUE(pair.client->Send(MakeFrame(3, 64, 3, 10)).ok());
  ASSERT_TRUE(pair.server_handler->WaitForFrames(1));
  EXPECT_FALSE(pair.client_handler->WaitForClose(10ms).has_value());
}

TEST(TcpAddressCheck, ValidateAddressNamesTheBadPart) {
  TcpTransport transport;
  EXPECT_TRUE(transport.ValidateAddress(Uri{"tcp", "127.0.0.1:80"}).ok());
  EXPECT_TRUE(transport.ValidateAddress(Uri{"tcp", "[::1]:80?busy_poll_us=5&zerocopy_send=off"}).ok());
  Status unknown = transport.ValidateAddress(Uri{"tcp", "127.0.0.1:80?busy_pol_us=5"});
  EXPECT_EQ(unknown.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.message().find("busy_pol_us"), std::string::npos) << unknown;
  Status bad_value = transport.ValidateAddress(Uri{"tcp", "127.0.0.1:80?zerocopy_send=maybe"});
  EXPECT_EQ(bad_value.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_value.message().find("zerocopy_send"), std::string::npos) << bad_value;
  EXPECT_EQ(transport.ValidateAddress(Uri{"tcp", "127.0.0.1"}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(transport.ValidateAddress(Uri{"tcp", "127.0.0.1:99999"}).code(), StatusCode::kInvalidArgument);
  // No network: a name that resolves nowhere is still a valid address.
  EXPECT_TRUE(transport.ValidateAddress(Uri{"tcp", "no-such-host.invalid:80"}).ok());
}

int ThreadCount() {
  int n = 0;
  if (DIR* dir = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(dir)) n += e->d_name[0] != '.';
    ::closedir(dir);
  }
  return n;
}

TEST(TcpThreads, OnlyThePollerThreadsWhateverTheConnections) {
  const int before = ThreadCount();
  TcpTransport::Options options;
  options.poller_threads = 2;
  TcpTransport transport(options);
  EXPECT_EQ(ThreadCount(), before + 2);
  std::vector<std::unique_ptr<Pair>> pairs;
  for (int i = 0; i < 4; ++i) pairs.push_back(std::make_unique<Pair>(transport));
  EXPECT_EQ(ThreadCount(), before + 2) << "a thread per connection or for setup";
  for (auto& pair : pairs) {
    pair->server->Start(pair->server_handler);
    ASSERT_TRUE(pair->client->Send(MakeFrame(1, 64)).ok());
    ASSERT_TRUE(pair->server_handler->WaitForFrames(1));
  }
}

TEST(TcpClose, OnClosedOnceAfterTheLastFrameWhenTheTransportGoes) {
  auto transport = std::make_unique<TcpTransport>();
  auto pair = std::make_unique<Pair>(*transport);
  pair->server->Start(pair->server_handler);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(pair->client->Send(MakeFrame(static_cast<uint64_t>(i) + 1, 64)).ok());
  ASSERT_TRUE(pair->server_handler->WaitForFrames(20));
  pair->client.reset();  // the owner closes: the server sees the end
  std::optional<Status> closed = pair->server_handler->WaitForClose();
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->code(), StatusCode::kUnavailable) << *closed;
  ASSERT_TRUE(pair->client_handler->WaitForClose().has_value()) << "the owner's close is reported too";
  EXPECT_EQ(pair->client_handler->closed_calls(), 1);
  transport.reset();
  EXPECT_EQ(pair->server_handler->closed_calls(), 1);
  EXPECT_EQ(pair->server_handler->frames(), 20u);
}

}  // namespace
}  // namespace zcrpc::transport::tcp
