// The tcp transport's data path with real sockets: every frame shape
// arrives intact with the framework copying nothing, frames split at any
// byte boundary (a proxy that dribbles bytes), MSG_ZEROCOPY buffers held
// until the kernel lets go and its copied-anyway fallback, malformed
// padding, and busy-poll. Contract v2 cases (send path that never waits,
// stall, preface, async connect, capabilities) are in
// tcp_contract_v2_test.cc.
#include "zcrpc/transport/tcp/tcp_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "zcrpc/base/copy_stats.h"
#include "zcrpc/transport/tcp/stream_layout.h"
#include "zcrpc/transport/tcp/tcp_connection.h"

namespace zcrpc::transport::tcp {
namespace {

using namespace std::chrono_literals;

// Collects what a connection delivers.
class Collector final : public ConnectionHandler {
 public:
  void OnWritable() override { writable_calls_.fetch_add(1); }
  int writable_calls() const { return writable_calls_.load(); }
  void OnFrame(Frame frame) override {
    std::lock_guard lock(mu_);
    frames_.push_back(std::move(frame));
    cv_.notify_all();
  }
  void OnClosed(const Status& reason) override {
    std::lock_guard lock(mu_);
    closed_ = reason;
    cv_.notify_all();
  }
  bool WaitForFrames(size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return frames_.size() >= n || closed_.has_value(); }) &&
           frames_.size() >= n;
  }
  std::optional<Status> WaitForClose(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return closed_.has_value(); });
    return closed_;
  }
  std::vector<Frame> Take() {
    std::lock_guard lock(mu_);
    return std::exchange(frames_, {});
  }
  size_t count() {
    std::lock_guard lock(mu_);
    return frames_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Frame> frames_;
  std::optional<Status> closed_;
  std::atomic<int> writable_calls_{0};
};

struct Shape {
  size_t metadata = 0;
  size_t message = 0;
  std::vector<size_t> attachments;
};

uint8_t PatternByte(uint64_t seed, int part, size_t i) { return static_cast<uint8_t>(seed * 31 + part * 7 + i * 13); }

Buffer Filled(size_t size, uint64_t seed, int part) {
  Buffer b = BufferPool::Default().Allocate(size);
  for (size_t i = 0; i < size; ++i) b.data()[i] = PatternByte(seed, part, i);
  return b;
}

Frame MakeFrame(uint64_t seed, const Shape& shape) {
  Frame frame;
  frame.header.type = FrameType::kRequest;
  frame.header.call_id = seed + 1;
  frame.metadata = Filled(shape.metadata, seed, 0);
  frame.message = Filled(shape.message, seed, 1);
  for (size_t i = 0; i < shape.attachments.size(); ++i) {
    frame.attachments.push_back(Filled(shape.attachments[i], seed, 2 + static_cast<int>(i)));
  }
  return frame;
}

// Checks contents and the alignment promise: every part on a cache line,
// parts too large for the inline window on a page.
void ExpectIntact(const Frame& frame, const Shape& shape) {
  const uint64_t seed = frame.header.call_id - 1;
  auto check = [&](const Buffer& b, size_t size, int part) {
    ASSERT_EQ(b.size(), size) << "frame " << seed << " part " << part;
    if (size == 0) return;
    const auto address = reinterpret_cast<uintptr_t>(b.data());
    EXPECT_EQ(address % kInlineAlign, 0u) << "part " << part << " of " << size << " bytes";
    if (size > kInlineWindow) {
      EXPECT_EQ(address % kSpillAlign, 0u) << "part " << part << " of " << size << " bytes";
    }
    for (size_t i = 0; i < size; ++i) {
      if (b.data()[i] != PatternByte(seed, part, i)) {
        FAIL() << "frame " << seed << " part " << part << " differs at byte " << i;
      }
    }
  };
  EXPECT_FALSE(frame.body_discarded);
  check(frame.metadata, shape.metadata, 0);
  check(frame.message, shape.message, 1);
  ASSERT_EQ(frame.attachments.size(), shape.attachments.size());
  for (size_t i = 0; i < shape.attachments.size(); ++i) check(frame.attachments[i], shape.attachments[i], 2 + int(i));
}

const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> shapes = {
      {0, 0, {}},                                  // a cancel-sized frame: header only
      {0, 64, {}},                                 // the common small call
      {12, 4096, {}},                              // metadata and a page of message
      {0, kInlineWindow, {}},                      // exactly the window
      {0, kInlineWindow + 1, {}},                  // one byte too many: spills
      {0, 1 << 20, {}},                            // a large message
      {0, 64, {1 << 20}},                          // a large attachment
      {100, 100, {64, 9000, 0, 300000, 5}},        // inline and spilled attachments mixed
      {5000, 3000, {}},                            // inline parts filling most of the window
      {0, 200000, {100}},                          // spilled message, then everything spills
  };
  return shapes;
}

class TcpDataPath : public ::testing::Test {
 protected:
  // A connected pair: client_ dials a listener with `server_options`.
  void Connect(const std::string& server_options = "", const std::string& client_options = "",
               bool start_server = true) {
    std::promise<std::unique_ptr<Connection>> accepted;
    auto listener = transport_.Listen(Uri{"tcp", "127.0.0.1:0" + server_options}, {},
                                      [&accepted](std::unique_ptr<Connection> c) { accepted.set_value(std::move(c)); });
    ASSERT_TRUE(listener.ok()) << listener.status();
    listener_ = *std::move(listener);
    std::string address = listener_->uri().substr(6);
    auto client = ConnectAndWait(transport_, Uri{"tcp", address + client_options}, {});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    server_ = accepted.get_future().get();
    client_->Start(client_frames_);
    if (start_server) server_->Start(server_frames_);
  }
  TcpConnection& client_tcp() { return static_cast<TcpConnection&>(*client_); }

  TcpTransport transport_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<Connection> client_, server_;
  std::shared_ptr<Collector> client_frames_ = std::make_shared<Collector>();
  std::shared_ptr<Collector> server_frames_ = std::make_shared<Collector>();
};

TEST_F(TcpDataPath, EveryShapeArrivesIntactAndAlignedWithNoFrameworkCopy) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  uint64_t seed = 0;
  for (const Shape& shape : Shapes()) {
    const uint64_t before = CopyStats::TotalBytesCopied();
    ASSERT_TRUE(client_->Send(MakeFrame(seed, shape)).ok());
    ASSERT_TRUE(server_frames_->WaitForFrames(1));
    // Sent by gathering from the buffers, received by the kernel's one copy
    // into the stage or the part's own buffer: no framework copy at all.
    EXPECT_EQ(CopyStats::TotalBytesCopied() - before, 0u) << "shape " << seed;
    std::vector<Frame> got = server_frames_->Take();
    ASSERT_EQ(got.size(), 1u);
    ExpectIntact(got[0], shape);
    ++seed;
  }
}

TEST_F(TcpDataPath, BackToBackFramesOfEveryShapeArriveInOrder) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  constexpr int kRounds = 30;
  const uint64_t before = CopyStats::TotalBytesCopied();
  uint64_t sent = 0;
  for (int round = 0; round < kRounds; ++round) {
    for (size_t s = 0; s < Shapes().size(); ++s) {
      Frame frame = MakeFrame(sent * 100 + s, Shapes()[s]);
      ASSERT_TRUE(client_->Send(std::move(frame)).ok());
      ++sent;
    }
  }
  ASSERT_TRUE(server_frames_->WaitForFrames(sent, 30s));
  std::vector<Frame> got = server_frames_->Take();
  for (uint64_t i = 0; i < sent; ++i) {
    const size_t s = i % Shapes().size();
    ASSERT_EQ(got[i].header.call_id - 1, i * 100 + s) << "out of order at " << i;
    ExpectIntact(got[i], Shapes()[s]);
  }
  // The one copy the reader may make: the start of a frame that arrived
  // behind others is moved to a fresh stage, at most one window's worth.
  EXPECT_LE(CopyStats::TotalBytesCopied() - before, sent * kInlineWindow);
}

// Forwards from the client to the server in pieces of `max_piece` bytes or
// fewer (1: one byte per write), so the reader sees frames split
// everywhere; the server's bytes (its preface) go back as they come.
class DribblingProxy {
 public:
  DribblingProxy(uint16_t upstream_port, size_t max_piece) : max_piece_(max_piece) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(listen_fd_, 1);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    upstream_port_ = upstream_port;
    thread_ = std::thread([this] { Run(); });
  }
  ~DribblingProxy() {
    thread_.join();
    ::close(listen_fd_);
  }
  uint16_t port() const { return port_; }

 private:
  void Run() {
    int down = ::accept(listen_fd_, nullptr, nullptr);
    int up = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(upstream_port_);
    ::connect(up, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    int one = 1;
    ::setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread back([down, up] {
      char bytes[4096];
      for (;;) {
        ssize_t n = ::read(up, bytes, sizeof bytes);
        if (n <= 0 || ::write(down, bytes, static_cast<size_t>(n)) != n) break;
      }
      ::shutdown(down, SHUT_WR);
    });
    std::mt19937 random(7);
    std::vector<char> buffer(64 << 10);
    for (;;) {
      ssize_t n = ::read(down, buffer.data(), buffer.size());
      if (n <= 0) break;
      for (ssize_t at = 0; at < n;) {
        size_t piece = std::min<size_t>(n - at, 1 + random() % max_piece_);
        if (::write(up, buffer.data() + at, piece) != static_cast<ssize_t>(piece)) break;
        at += static_cast<ssize_t>(piece);
      }
    }
    ::shutdown(up, SHUT_RDWR);
    back.join();
    ::close(down);
    ::close(up);
  }

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  uint16_t upstream_port_ = 0;
  size_t max_piece_;
  std::thread thread_;
};

void SendThroughProxy(size_t max_piece, const std::vector<Shape>& shapes, int rounds) {
  TcpTransport transport;
  auto frames = std::make_shared<Collector>();
  std::vector<std::unique_ptr<Connection>> accepted;
  std::mutex mu;
  auto listener = transport.Listen(Uri{"tcp", "127.0.0.1:0"}, {}, [&](std::unique_ptr<Connection> c) {
    c->Start(frames);
    std::lock_guard lock(mu);
    accepted.push_back(std::move(c));
  });
  ASSERT_TRUE(listener.ok());
  const uint16_t port = static_cast<uint16_t>(std::stoi((*listener)->uri().substr((*listener)->uri().rfind(':') + 1)));
  DribblingProxy proxy(port, max_piece);
  auto client = ConnectAndWait(transport, Uri{"tcp", "127.0.0.1:" + std::to_string(proxy.port())}, {});
  ASSERT_TRUE(client.ok());
  (*client)->Start(std::make_shared<Collector>());
  uint64_t sent = 0;
  for (int round = 0; round < rounds; ++round) {
    for (size_t s = 0; s < shapes.size(); ++s) ASSERT_TRUE((*client)->Send(MakeFrame(sent++ * 100 + s, shapes[s])).ok());
  }
  ASSERT_TRUE(frames->WaitForFrames(sent, 60s)) << "got " << frames->count() << " of " << sent;
  std::vector<Frame> got = frames->Take();
  for (uint64_t i = 0; i < sent; ++i) ExpectIntact(got[i], shapes[i % shapes.size()]);
  client->reset();  // the proxy sees the end of the stream and exits
}

// Shapes small enough to push through one byte per write in good time, yet
// crossing every boundary: header, inline parts, the window, padding, spills.
const std::vector<Shape>& DribbleShapes() {
  static const std::vector<Shape> shapes = {
      {0, 64, {}}, {12, 300, {7, 0, 64}}, {0, kInlineWindow + 1, {}}, {0, 10, {20000}}, {0, 0, {}}, {100, 5000, {3000}},
  };
  return shapes;
}

TEST(TcpDribble, FramesSplitAtEveryByteArriveIntact) {
  SendThroughProxy(1, DribbleShapes(), 2);
}

TEST(TcpDribble, FramesSplitInRandomPiecesArriveIntact) {
  SendThroughProxy(700, DribbleShapes(), 40);
}

TEST_F(TcpDataPath, ZeroCopySendHoldsBuffersUntilTheKernelReleasesThem) {
  // The server does not read yet, so once its receive buffer is full the
  // data waits in the client's socket, its pages pinned by MSG_ZEROCOPY
  // ("on": keep using it even though loopback reports copies).
  ASSERT_NO_FATAL_FAILURE(Connect("", "?zerocopy_send=on&zerocopy_min_bytes=0", /*start_server=*/false));
  constexpr size_t kSize = 1 << 20;
  constexpr int kFrames = 24;
  std::atomic<int> sent{0};
  std::thread sender([&] {
    for (int i = 0; i < kFrames; ++i) {
      ASSERT_TRUE(client_->Send(MakeFrame(static_cast<uint64_t>(i), Shape{0, 64, {kSize}})).ok());
      sent.fetch_add(1);
    }
  });
  // Wait until the sender stalls on the full socket.
  for (int previous = -1; sent.load() != previous && sent.load() < kFrames;) {
    previous = sent.load();
    std::this_thread::sleep_for(200ms);
  }
  const TcpConnectionStats held = client_tcp().stats();
  ASSERT_GT(held.zerocopy.sends, 0u);
  ASSERT_GT(held.zerocopy.frames_held, 0u) << "the kernel completed every send before the peer read: nothing to test";

  // Frames whose Send() returned were released by the caller. If the
  // transport gave their pages back before the kernel's completion, the
  // pool hands them out here and the scribble reaches the peer.
  std::vector<Buffer> scribbles;
  for (int i = 0; i < 32; ++i) {
    Buffer b = BufferPool::Default().Allocate(kSize);
    std::memset(b.data(), 0xff, b.size());
    scribbles.push_back(std::move(b));
  }
  scribbles.clear();

  server_->Start(server_frames_);
  sender.join();
  ASSERT_TRUE(server_frames_->WaitForFrames(kFrames, 30s));
  for (Frame& frame : server_frames_->Take()) ExpectIntact(frame, Shape{0, 64, {kSize}});
  // The completions come in as the peer acknowledges; then nothing is held.
  for (int i = 0; i < 200 && client_tcp().stats().zerocopy.frames_held > 0; ++i) {
    ASSERT_TRUE(client_->Send(MakeFrame(100, Shape{0, 64, {}})).ok());  // reaps on the way
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(client_tcp().stats().zerocopy.frames_held, 0u);
  EXPECT_TRUE(client_tcp().stats().zerocopy.enabled) << "'on' keeps MSG_ZEROCOPY even when the kernel copies";
}

TEST_F(TcpDataPath, ZeroCopyTurnsItselfOffWhenTheKernelCopiesAnyway) {
  ASSERT_NO_FATAL_FAILURE(Connect("", "?zerocopy_min_bytes=65536"));
  ASSERT_TRUE(client_tcp().stats().zerocopy.enabled);
  ASSERT_TRUE(client_->Send(MakeFrame(1, Shape{0, 64, {1 << 20}})).ok());
  ASSERT_TRUE(server_frames_->WaitForFrames(1));
  // Loopback always copies (MACHINE-FACTS.md): the first completion says so.
  for (int i = 0; i < 200 && client_tcp().stats().zerocopy.completions == 0; ++i) {
    ASSERT_TRUE(client_->Send(MakeFrame(2, Shape{0, 64, {}})).ok());  // small: never zero-copy, reaps completions
    std::this_thread::sleep_for(5ms);
  }
  TcpConnectionStats after_probe = client_tcp().stats();
  EXPECT_EQ(after_probe.zerocopy.sends, 1u);
  EXPECT_EQ(after_probe.zerocopy.copied_completions, 1u);
  EXPECT_FALSE(after_probe.zerocopy.enabled);
  EXPECT_EQ(after_probe.zerocopy.frames_held, 0u);
  // Large writes now go out plainly.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(client_->Send(MakeFrame(3, Shape{0, 64, {1 << 20}})).ok());
  EXPECT_EQ(client_tcp().stats().zerocopy.sends, 1u);
  ASSERT_TRUE(server_frames_->WaitForFrames(2 + after_probe.frames_sent - 2 + 5 - 1));
}

TEST_F(TcpDataPath, ZeroCopyOffNeverUsesItAndSmallWritesNeverDo) {
  ASSERT_NO_FATAL_FAILURE(Connect("", "?zerocopy_send=off"));
  ASSERT_TRUE(client_->Send(MakeFrame(1, Shape{0, 64, {1 << 20}})).ok());
  ASSERT_TRUE(server_frames_->WaitForFrames(1));
  EXPECT_EQ(client_tcp().stats().zerocopy.sends, 0u);
  EXPECT_FALSE(client_tcp().stats().zerocopy.enabled);
  auto& server_tcp = static_cast<TcpConnection&>(*server_);  // default: auto, 64 KiB threshold
  ASSERT_TRUE(server_->Send(MakeFrame(2, Shape{0, 1000, {}})).ok());
  ASSERT_TRUE(client_frames_->WaitForFrames(1));
  EXPECT_EQ(server_tcp.stats().zerocopy.sends, 0u);
}

// zerocopy_receive=probe: the first large part is offered to
// TCP_ZEROCOPY_RECEIVE once; whatever the kernel maps is copied into the
// part (counted), everything arrives intact, and later frames copy nothing.
void ExpectOneZeroCopyReceiveProbe(Connection& client, Connection& server, Collector& server_frames) {
  const Shape big{0, 64, {1 << 20}};
  const uint64_t before = CopyStats::TotalBytesCopied();
  ASSERT_TRUE(client.Send(MakeFrame(1, big)).ok());
  ASSERT_TRUE(server_frames.WaitForFrames(1));
  const auto probe = static_cast<TcpConnection&>(server).stats().zerocopy_receive;
  ASSERT_TRUE(probe.done) << "the probe did not run on a 1 MiB part";
  EXPECT_EQ(probe.error, 0) << std::strerror(probe.error);
  EXPECT_EQ(probe.asked, 256u << 10);
  EXPECT_LE(probe.mapped, probe.asked);
  EXPECT_EQ(CopyStats::TotalBytesCopied() - before, probe.mapped) << "mapped bytes are copied into the part, counted";
  for (Frame& f : server_frames.Take()) ExpectIntact(f, big);
  const uint64_t after_probe = CopyStats::TotalBytesCopied();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client.Send(MakeFrame(2 + static_cast<uint64_t>(i), big)).ok());
  ASSERT_TRUE(server_frames.WaitForFrames(3));
  for (Frame& f : server_frames.Take()) ExpectIntact(f, big);
  EXPECT_EQ(CopyStats::TotalBytesCopied(), after_probe) << "once probed, the connection reads with recv";
  std::printf("TCP_ZEROCOPY_RECEIVE probe: kernel mapped %llu of %llu bytes\n",
              static_cast<unsigned long long>(probe.mapped), static_cast<unsigned long long>(probe.asked));
}

TEST_F(TcpDataPath, ZeroCopyReceiveProbeFromAPlainSender) {
  ASSERT_NO_FATAL_FAILURE(Connect("?zerocopy_receive=probe", "?zerocopy_send=off"));
  ExpectOneZeroCopyReceiveProbe(*client_, *server_, *server_frames_);
}

TEST_F(TcpDataPath, ZeroCopyReceiveProbeFromAZeroCopySender) {
  ASSERT_NO_FATAL_FAILURE(Connect("?zerocopy_receive=probe", "?zerocopy_send=on&zerocopy_min_bytes=0"));
  ExpectOneZeroCopyReceiveProbe(*client_, *server_, *server_frames_);
}

TEST_F(TcpDataPath, PaddingThatDoesNotMatchTheLayoutClosesTheConnection) {
  std::promise<std::shared_ptr<Collector>> accepted_frames;
  std::unique_ptr<Connection> accepted;
  auto listener = transport_.Listen(Uri{"tcp", "127.0.0.1:0"}, {}, [&](std::unique_ptr<Connection> c) {
    auto frames = std::make_shared<Collector>();
    c->Start(frames);
    accepted = std::move(c);
    accepted_frames.set_value(frames);
  });
  ASSERT_TRUE(listener.ok());
  const std::string uri = (*listener)->uri();
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(uri.substr(uri.rfind(':') + 1))));
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  // A well-behaved client's preface first, then the bad frame.
  uint8_t preface[kPrefaceSize];
  EncodePreface(Preface{}, std::span<uint8_t, kPrefaceSize>(preface));
  ASSERT_EQ(::write(fd, preface, sizeof preface), static_cast<ssize_t>(sizeof preface));
  WireHeader header;
  header.call_id = 1;
  header.message_len = 100;
  header.padding_len = 60;  // the layout needs 28 (100 bytes, padded to 128)
  uint8_t bytes[kWireHeaderSize + 160] = {};
  EncodeWireHeader(header, std::span<uint8_t, kWireHeaderSize>(bytes, kWireHeaderSize));
  ASSERT_EQ(::write(fd, bytes, sizeof bytes), static_cast<ssize_t>(sizeof bytes));
  std::shared_ptr<Collector> frames = accepted_frames.get_future().get();
  std::optional<Status> closed = frames->WaitForClose();
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->code(), StatusCode::kInvalidArgument) << *closed;
  EXPECT_NE(closed->message().find("padding"), std::string::npos) << *closed;
  EXPECT_EQ(frames->count(), 0u);
  ::close(fd);
}

double ProcessCpuSeconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

TEST_F(TcpDataPath, BusyPollSpinsForItsBudgetThenBlocks) {
  // The server's reader spins 300 ms after the last bytes, then sleeps.
  ASSERT_NO_FATAL_FAILURE(Connect("?busy_poll_us=300000", ""));
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(client_->Send(MakeFrame(static_cast<uint64_t>(i), Shape{0, 64, {}})).ok());
  ASSERT_TRUE(server_frames_->WaitForFrames(50));
  for (Frame& f : server_frames_->Take()) ExpectIntact(f, Shape{0, 64, {}});

  // Within the budget the reader spins: a frame that arrives then is
  // picked up by it, without the loop being armed again (interest
  // changes counted by the connection). Not measured by CPU time: on a
  // loaded machine a spinner that yields gets little of it.
  std::this_thread::sleep_for(100ms);
  auto& server_tcp = static_cast<TcpConnection&>(*server_);
  const uint64_t interest_before = server_tcp.stats().interest_changes;
  ASSERT_TRUE(client_->Send(MakeFrame(99, Shape{0, 64, {}})).ok());
  ASSERT_TRUE(server_frames_->WaitForFrames(1));
  EXPECT_EQ(server_tcp.stats().interest_changes, interest_before) << "the reader did not spin after its last frame";
  // Past the budget (restarted by that frame), it blocks: next to no CPU.
  std::this_thread::sleep_for(450ms);
  double start = ProcessCpuSeconds();
  std::this_thread::sleep_for(300ms);
  const double blocked = ProcessCpuSeconds() - start;
  EXPECT_GT(server_tcp.stats().interest_changes, interest_before) << "the reader never went back to the loop";
  EXPECT_LT(blocked, 0.06) << "the reader kept spinning past its budget";
}

TEST_F(TcpDataPath, ACallerWaitingForItsReplyReadsTheSocketItself) {
  ASSERT_NO_FATAL_FAILURE(Connect("", "?busy_poll_us=1000"));
  for (int i = 0; i < 20; ++i) {
    // The reply is sent while the caller already waits in PollUntil, so
    // the socket is idle when it takes over reading.
    std::thread server([&] {
      std::this_thread::sleep_for(2ms);
      ASSERT_TRUE(server_->Send(MakeFrame(static_cast<uint64_t>(i), Shape{0, 64, {100000}})).ok());
    });
    const bool polled = client_->PollUntil([&] { return client_frames_->count() >= 1; }, 0ns);
    server.join();
    EXPECT_TRUE(polled);
    std::vector<Frame> got = client_frames_->Take();
    ASSERT_EQ(got.size(), 1u);  // PollUntil returned only once the frame was there
    ExpectIntact(got[0], Shape{0, 64, {100000}});
  }
}

// ---- who reads: the loop's read interest left to callers ----
//
// Blocking callers read their own replies (PollUntil inside a
// PollsOwnReplyScope) and leave the loop unarmed between calls; these show
// that costs no epoll_ctl per call and loses nothing. The lazy tick is set
// to 10 s here, so anything that arrives within the tests' 2 s did not
// wait for it.

// A server end that answers each request with a response of the same call
// id at once, except the ids it is told to hold, answered by Release().
class Responder final : public ConnectionHandler {
 public:
  void SetConnection(Connection* connection) { connection_ = connection; }
  void Hold(uint64_t call_id) {
    std::lock_guard lock(mu_);
    held_.insert(call_id);
  }
  // Waits until the held request arrived, then answers it.
  bool Release(uint64_t call_id) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, 10s, [&] { return arrived_.count(call_id) > 0; })) return false;
    arrived_.erase(call_id);
    held_.erase(call_id);
    lock.unlock();
    return connection_->Send(Response(call_id)).ok();
  }
  void OnFrame(Frame frame) override {
    const uint64_t id = frame.header.call_id;
    {
      std::lock_guard lock(mu_);
      if (held_.count(id) > 0) {
        arrived_.insert(id);
        cv_.notify_all();
        return;
      }
    }
    (void)connection_->Send(Response(id));
  }
  void OnClosed(const Status&) override {}

 private:
  Frame Response(uint64_t call_id) {
    Frame frame;
    frame.header.type = FrameType::kResponse;
    frame.header.call_id = call_id;
    frame.message = BufferPool::Default().Allocate(64);
    std::memset(frame.message.data(), 'r', 64);
    return frame;
  }

  Connection* connection_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<uint64_t> held_;
  std::set<uint64_t> arrived_;
};

Frame Request(uint64_t call_id) {
  Frame frame;
  frame.header.type = FrameType::kRequest;
  frame.header.call_id = call_id;
  frame.message = BufferPool::Default().Allocate(64);
  std::memset(frame.message.data(), 'q', 64);
  return frame;
}

class TcpLazyRead : public ::testing::Test {
 protected:
  TcpLazyRead() : transport_(Options()) {}
  static TcpTransport::Options Options() {
    TcpTransport::Options options;
    options.lazy_tick = 10s;
    return options;
  }

  void Connect(const std::string& client_options = "") {
    std::promise<std::unique_ptr<Connection>> accepted;
    auto listener = transport_.Listen(Uri{"tcp", "127.0.0.1:0"}, {},
                                      [&accepted](std::unique_ptr<Connection> c) { accepted.set_value(std::move(c)); });
    ASSERT_TRUE(listener.ok()) << listener.status();
    listener_ = *std::move(listener);
    auto client = ConnectAndWait(transport_, Uri{"tcp", listener_->uri().substr(6) + client_options}, {});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    server_ = accepted.get_future().get();
    responder_->SetConnection(server_.get());
    client_->Start(replies_);
    server_->Start(responder_);
  }
  TcpConnection& client_tcp() { return static_cast<TcpConnection&>(*client_); }

  // A blocking call as Channel::CallUnary makes it: send inside the scope,
  // then read the reply on this thread, or, when PollUntil() says another
  // thread reads (the loop, just after a callback reply), wait for it. The
  // reply is dropped at once, as a caller done with it would.
  void BlockingCall(uint64_t call_id) {
    const size_t before = replies_->count();
    transport::PollsOwnReplyScope scope;
    ASSERT_TRUE(client_->Send(Request(call_id)).ok());
    if (!client_->PollUntil([&] { return replies_->count() > before; }, 0ns)) {
      ASSERT_TRUE(replies_->WaitForFrames(before + 1, 2s)) << "reply " << call_id << " waited for the lazy tick";
    }
    std::vector<Frame> got = replies_->Take();
    ASSERT_EQ(got.size(), before + 1);
    EXPECT_EQ(got.back().header.call_id, call_id);
  }

  TcpTransport transport_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<Connection> client_, server_;
  std::shared_ptr<Collector> replies_ = std::make_shared<Collector>();
  std::shared_ptr<Responder> responder_ = std::make_shared<Responder>();
};

TEST_F(TcpLazyRead, BlockingCallsCostNoEpollCtlAndNoNewReceiveStage) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  // The first call takes the socket from the loop (one epoll_ctl); from
  // then on callers keep it.
  for (uint64_t id = 1; id <= 20; ++id) ASSERT_NO_FATAL_FAILURE(BlockingCall(id));
  const TcpConnectionStats warm = client_tcp().stats();
  for (uint64_t id = 21; id <= 520; ++id) ASSERT_NO_FATAL_FAILURE(BlockingCall(id));
  const TcpConnectionStats after = client_tcp().stats();
  EXPECT_EQ(after.interest_changes, warm.interest_changes) << "epoll_ctl calls during 500 blocking calls";
  // Each reply's stage came back when its frame was dropped and was read
  // into again.
  EXPECT_EQ(after.receive_stages_made, warm.receive_stages_made) << "receive stages made during 500 blocking calls";
}

TEST_F(TcpLazyRead, ACallbackReplyArrivesAtOnceAfterBlockingCallsLeftTheSocketToCallers) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  for (uint64_t id = 1; id <= 20; ++id) ASSERT_NO_FATAL_FAILURE(BlockingCall(id));
  // A request sent outside the scope: nobody will poll for its reply, so
  // the send re-arms the loop, which delivers it.
  for (uint64_t id = 100; id < 110; ++id) {
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(client_->Send(Request(id)).ok());
    ASSERT_TRUE(replies_->WaitForFrames(1, 2s)) << "callback reply " << id << " waited for the lazy tick";
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
    EXPECT_EQ(replies_->Take().at(0).header.call_id, id);
    // ... and blocking calls take the socket back.
    ASSERT_NO_FATAL_FAILURE(BlockingCall(id + 1000));
  }
}

TEST_F(TcpLazyRead, ACallbackReplyStillOwedWhenBlockingCallsStopArrivesAtOnce) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  for (uint64_t id = 1; id <= 20; ++id) ASSERT_NO_FATAL_FAILURE(BlockingCall(id));
  // A callback call whose reply the server holds while blocking calls come
  // and go: each lets go of the socket with that reply still owed.
  responder_->Hold(500);
  ASSERT_TRUE(client_->Send(Request(500)).ok());
  for (uint64_t id = 21; id <= 60; ++id) ASSERT_NO_FATAL_FAILURE(BlockingCall(id));
  // Nobody polls any more; the reply comes now.
  ASSERT_TRUE(responder_->Release(500));
  ASSERT_TRUE(replies_->WaitForFrames(1, 2s)) << "the owed callback reply waited for the lazy tick";
  EXPECT_EQ(replies_->Take().at(0).header.call_id, 500u);
  // With nothing owed any more, callers keep the socket again (once one
  // took it back: the loop that delivered the reply may still hold it for
  // the first few).
  for (uint64_t id = 61; id <= 70; ++id) ASSERT_NO_FATAL_FAILURE(BlockingCall(id));
  const uint64_t changes = client_tcp().stats().interest_changes;
  for (uint64_t id = 71; id <= 110; ++id) ASSERT_NO_FATAL_FAILURE(BlockingCall(id));
  EXPECT_EQ(client_tcp().stats().interest_changes, changes);
}

TEST_F(TcpLazyRead, AScopedCallerThatCannotReadItsReplyLeavesItToTheLoop) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  for (uint64_t id = 1; id <= 20; ++id) ASSERT_NO_FATAL_FAILURE(BlockingCall(id));
  // Thread A polls for reply 700, which the server holds.
  responder_->Hold(700);
  responder_->Hold(701);
  std::thread a([&] {
    transport::PollsOwnReplyScope scope;
    EXPECT_TRUE(client_->Send(Request(700)).ok());
    EXPECT_TRUE(client_->PollUntil([&] { return replies_->count() >= 1; }, 0ns));
  });
  // Wait until A holds the socket: a PollUntil here then returns false.
  const auto give_up = std::chrono::steady_clock::now() + 5s;
  while (client_->PollUntil([] { return true; }, 0ns)) {
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "thread A never took the socket";
    std::this_thread::sleep_for(1ms);
  }
  // This thread sends 701 in the scope, cannot take the socket (A reads)
  // and waits without polling, as Channel::CallUnary then does.
  {
    transport::PollsOwnReplyScope scope;
    ASSERT_TRUE(client_->Send(Request(701)).ok());
    ASSERT_FALSE(client_->PollUntil([&] { return replies_->count() >= 2; }, 0ns));
  }
  // 700 is answered first: A lets go while 701 is still owed, and only the
  // loop can deliver it.
  ASSERT_TRUE(responder_->Release(700));
  a.join();
  ASSERT_TRUE(responder_->Release(701));
  ASSERT_TRUE(replies_->WaitForFrames(2, 2s)) << "the reply of a caller that could not poll waited for the lazy tick";
}

TEST_F(TcpLazyRead, APeerCloseIsReportedWhileCallersHaveTheSocket) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  for (uint64_t id = 1; id <= 20; ++id) ASSERT_NO_FATAL_FAILURE(BlockingCall(id));
  // Idle, reading left to callers: the loop still hears the close.
  server_->Close(absl::CancelledError("server goes"));
  const std::optional<Status> closed = replies_->WaitForClose(2s);
  ASSERT_TRUE(closed.has_value()) << "OnClosed waited for the lazy tick";
  EXPECT_EQ(closed->code(), StatusCode::kUnavailable);
}

TEST(TcpLazyTick, AFrameNobodyWaitsForArrivesWithinTheLazyTick) {
  // The default tick: a server's go-away (a frame nobody polls for) that
  // comes while callers have the socket is read by the loop within about
  // two ticks (10 ms), not left for the next call.
  TcpTransport transport;
  std::promise<std::unique_ptr<Connection>> accepted;
  auto listener = transport.Listen(Uri{"tcp", "127.0.0.1:0"}, {},
                                   [&accepted](std::unique_ptr<Connection> c) { accepted.set_value(std::move(c)); });
  ASSERT_TRUE(listener.ok());
  auto client = ConnectAndWait(transport, Uri{"tcp", (*listener)->uri().substr(6)}, {});
  ASSERT_TRUE(client.ok());
  std::unique_ptr<Connection> server = accepted.get_future().get();
  auto replies = std::make_shared<Collector>();
  auto responder = std::make_shared<Responder>();
  responder->SetConnection(server.get());
  (*client)->Start(replies);
  server->Start(responder);
  for (uint64_t id = 1; id <= 20; ++id) {
    transport::PollsOwnReplyScope scope;
    ASSERT_TRUE((*client)->Send(Request(id)).ok());
    if (!(*client)->PollUntil([&] { return replies->count() >= 1; }, 0ns)) {
      ASSERT_TRUE(replies->WaitForFrames(1));
    }
    replies->Take();
  }
  Frame go_away;
  go_away.header.type = FrameType::kGoAway;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(server->Send(std::move(go_away)).ok());
  ASSERT_TRUE(replies->WaitForFrames(1, 2s));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(replies->Take().at(0).header.type, FrameType::kGoAway);
  // Two ticks, and generous room for a loaded machine.
  EXPECT_LT(took, 200ms) << std::chrono::duration_cast<std::chrono::microseconds>(took).count() << " us";
}

TEST(TcpBusyPoll, SpinnersSharingOneCpuLetEachOtherRun) {
  // Client and server, their loop thread and the caller, all on one CPU,
  // both spinning 2 ms after their last bytes (busy_poll_us=2000). A spin
  // that never yields would hold the CPU until the scheduler preempts it,
  // and each round trip would take about that long.
  cpu_set_t all;
  ASSERT_EQ(::sched_getaffinity(0, sizeof all, &all), 0);
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &all)) {
      CPU_SET(cpu, &one);
      break;
    }
  }
  ASSERT_EQ(::sched_setaffinity(0, sizeof one, &one), 0);
  std::vector<double> micros;
  {
    TcpTransport transport;  // its loop thread inherits the one CPU
    std::promise<std::unique_ptr<Connection>> accepted;
    auto listener = transport.Listen(Uri{"tcp", "127.0.0.1:0?busy_poll_us=2000"}, {},
                                     [&accepted](std::unique_ptr<Connection> c) { accepted.set_value(std::move(c)); });
    ASSERT_TRUE(listener.ok());
    auto client = ConnectAndWait(transport, Uri{"tcp", (*listener)->uri().substr(6) + "?busy_poll_us=2000"}, {});
    ASSERT_TRUE(client.ok());
    std::unique_ptr<Connection> server = accepted.get_future().get();
    auto replies = std::make_shared<Collector>();
    auto responder = std::make_shared<Responder>();
    responder->SetConnection(server.get());
    (*client)->Start(replies);
    server->Start(responder);
    for (uint64_t id = 1; id <= 300; ++id) {
      const auto start = std::chrono::steady_clock::now();
      transport::PollsOwnReplyScope scope;
      ASSERT_TRUE((*client)->Send(Request(id)).ok());
      if (!(*client)->PollUntil([&] { return replies->count() >= 1; }, 0ns)) {
      ASSERT_TRUE(replies->WaitForFrames(1));
    }
      replies->Take();
      if (id > 50) {
        micros.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
      }
    }
  }
  ASSERT_EQ(::sched_setaffinity(0, sizeof all, &all), 0);
  std::sort(micros.begin(), micros.end());
  const double median = micros[micros.size() / 2];
  std::printf("busy-poll round trip on one CPU: median %.1f us\n", median);
  EXPECT_LT(median, 500) << "median round trip " << median << " us with client and server on one CPU";
}


}  // namespace
}  // namespace zcrpc::transport::tcp

namespace zcrpc::transport::tcp {
namespace {

// A host name is looked up off the caller's thread (and off the loop's),
// then connected like a numeric address.
TEST(TcpConnect, AHostNameResolvesOffTheCallersThreadAndConnects) {
  TcpTransport transport;
  auto listener = transport.Listen(Uri{"tcp", "127.0.0.1:0"}, {}, [](std::unique_ptr<Connection> c) {
    c->Start(std::make_shared<Collector>());
  });
  ASSERT_TRUE(listener.ok()) << listener.status();
  const std::string port = (*listener)->uri().substr((*listener)->uri().rfind(':') + 1);
  std::promise<Status> connected;
  std::thread::id resolved_on;
  const std::thread::id caller = std::this_thread::get_id();
  transport.Connect(Uri{"tcp", "localhost:" + port}, {}, [&](StatusOr<std::unique_ptr<Connection>> c) {
    resolved_on = std::this_thread::get_id();
    connected.set_value(c.status());
  });
  auto result = connected.get_future();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  // "localhost" may name ::1 first, where nothing listens here: either way
  // the answer came, on a loop thread, not inside Connect().
  Status status = result.get();
  EXPECT_TRUE(status.ok() || status.code() == StatusCode::kUnavailable) << status;
  EXPECT_NE(resolved_on, caller);
}

// A name that cannot be resolved fails with a message that names it,
// within connect_timeout, whatever DNS does.
TEST(TcpConnect, AnUnresolvableNameFailsNamingItWithinTheConnectTimeout) {
  TcpTransport transport;
  ConnectionOptions options;
  options.connect_timeout = std::chrono::milliseconds(500);
  std::promise<Status> done;
  transport.Connect(Uri{"tcp", "no-such-host.invalid:1"}, options,
                    [&](StatusOr<std::unique_ptr<Connection>> c) { done.set_value(c.status()); });
  auto result = done.get_future();
  // Generous: 500 ms plus a loaded machine's scheduling.
  ASSERT_EQ(result.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  Status status = result.get();
  EXPECT_TRUE(status.code() == StatusCode::kUnavailable || status.code() == StatusCode::kDeadlineExceeded) << status;
  EXPECT_NE(status.message().find("no-such-host.invalid"), std::string_view::npos) << status;
}

}  // namespace
}  // namespace zcrpc::transport::tcp

namespace zcrpc::transport::tcp {
namespace {

// accept() failing with EMFILE leaves the connection in the backlog, so the
// listening socket stays readable: the listener must back off rather than
// spin, and accept the connection once descriptors are free again.
TEST(TcpAccept, OutOfDescriptorsBacksOffThenAcceptsOnceTheyAreFree) {
  // Reported here: each accept() that ran out of descriptors, and then the
  // accepted socket's failed handshake (the raw client below sends no
  // preface), which shows that it was accepted.
  std::mutex mu;
  int out_of_descriptors = 0;
  std::promise<Status> handshake_failed;
  bool accepted = false;
  std::string first_handshake_error;
  TcpTransport::Options transport_options;
  transport_options.on_handshake_error = [&](const Status& s) {
    std::lock_guard lock(mu);
    if (s.message().find("accept on") != std::string_view::npos) {
      ++out_of_descriptors;
    } else if (!accepted) {
      accepted = true;
      first_handshake_error = s.ToString();
      handshake_failed.set_value(s);
    }
  };
  TcpTransport transport(transport_options);
  ConnectionOptions options;
  options.connect_timeout = std::chrono::milliseconds(200);
  std::atomic<int> handed_over{0};
  auto listener = transport.Listen(Uri{"tcp", "127.0.0.1:0"}, options,
                                   [&](std::unique_ptr<Connection>) { handed_over.fetch_add(1); });
  ASSERT_TRUE(listener.ok()) << listener.status();
  const uint16_t port = static_cast<uint16_t>(std::stoi((*listener)->uri().substr((*listener)->uri().rfind(':') + 1)));

  // One whole connection first, while descriptors are free. UBSan's vptr
  // check, the first time it meets a class at a call site, probes the
  // object's memory through a pipe(); out of descriptors that probe fails
  // and UBSan reports the listener's valid Watcher as "not an object of
  // type 'Watcher'". Once seen, the type is cached and never probed again.
  auto open_descriptors = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/fd"), std::filesystem::directory_iterator{});
  };
  const auto descriptors_before = open_descriptors();
  {
    auto warm = ConnectAndWait(transport, Uri{"tcp", (*listener)->uri().substr(6)}, options);
    ASSERT_TRUE(warm.ok()) << warm.status();
    // Kept open until the server has finished its side of the handshake:
    // closed earlier, the server could see it fail, which this test counts.
    for (int i = 0; i < 500 && handed_over.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(handed_over.load(), 1);
  }
  // Both ends of it close on the loop thread, a little later: a descriptor
  // freed after the ones below are used up would let an accept through.
  for (int i = 0; i < 500 && open_descriptors() > descriptors_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_LE(open_descriptors(), descriptors_before);

  const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(client, 0);
  // Use up every descriptor under a lowered limit (this test runs in a
  // process of its own under ctest).
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit low = saved;
  low.rlim_cur = 256;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> filler;
  for (int fd; (fd = ::dup(client)) >= 0;) filler.push_back(fd);
  ASSERT_EQ(errno, EMFILE);

  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);  // completes in the backlog

  const double cpu_before = ProcessCpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const double cpu_used = ProcessCpuSeconds() - cpu_before;
  // A spinning loop would burn ~0.5 s of CPU here; backing off by 100 ms
  // costs a few accept() calls. Generous for a loaded machine.
  EXPECT_LT(cpu_used, 0.25) << "the listener spins while out of descriptors";
  {
    std::lock_guard lock(mu);
    EXPECT_FALSE(accepted) << "accepted although no descriptor was free: " << first_handshake_error;
    // One try per 100 ms back-off, not one per wake-up.
    EXPECT_GE(out_of_descriptors, 1);
    EXPECT_LE(out_of_descriptors, 10);
  }

  for (int fd : filler) ::close(fd);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  auto result = handshake_failed.get_future();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "never accepted";
  EXPECT_NE(result.get().message().find("127.0.0.1"), std::string_view::npos);
  ::close(client);
}

}  // namespace
}  // namespace zcrpc::transport::tcp
