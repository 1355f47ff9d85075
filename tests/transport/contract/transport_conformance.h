// The transport contract suite: one GoogleTest suite, TransportContract,
// whose cases each check a promise of zcrpc/transport/transport.h. It is
// parameterized over a ContractTarget, so every transport runs the same
// cases: contract_loopback_test.cc instantiates it for loopback://,
// contract_tcp_test.cc and contract_shm_test.cc for tcp:// and shm://.
// A new transport adds one such file with an INSTANTIATE_TEST_SUITE_P.
//
// Both ends of every connection live in the test process, on the same
// transport instance. "The peer does not drain" is always an accepted
// connection that is not Start()ed yet, so the cases need nothing
// transport-specific (loopback's stall hook is tested on its own).
//
// Also holds the helpers (handlers that record, frame makers, a counting
// buffer owner) the transport-specific tests use. Test threads only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "zcrpc/base/buffer.h"
#include "zcrpc/base/frame.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::contract {

// How to reach one transport.
struct ContractTarget {
  std::string name;  // the test-name suffix: "loopback", "tcp", "shm"
  // The transport to use, made once and never destroyed (as the default
  // registry's are).
  Transport* (*transport)() = nullptr;
  // What the suite listens on; a fresh address each time (port 0, a '*').
  std::string listen_uri;
  // The URI a client dials, from the listener's uri().
  std::function<std::string(const std::string& bound)> client_uri;
  // A well-formed URI of this scheme nobody listens on.
  std::string unused_uri;
  // URIs of this scheme that ValidateAddress must refuse.
  std::vector<std::string> bad_uris;
  // Optional: a client URI whose Send skips the capability check (a peer
  // that ignores the receiver's limits). Empty: that case is skipped.
  std::function<std::string(const std::string& bound)> unchecked_client_uri;
};
inline void PrintTo(const ContractTarget& target, std::ostream* os) { *os << target.name; }

inline constexpr std::chrono::seconds kWait{10};  // generous: a loaded 2-core machine

// A BufferOwner on the heap that counts buffers not yet given back, to see
// that a transport releases what it refused.
class CountingOwner final : public BufferOwner {
 public:
  Buffer Make(size_t size, uint8_t fill = 0xab) {
    auto* data = new uint8_t[size];
    std::fill(data, data + size, fill);
    outstanding_.fetch_add(1);
    return Buffer::Take(data, size, size, this);
  }
  void Release(uint8_t* data, size_t) noexcept override {
    delete[] data;
    outstanding_.fetch_sub(1);
  }
  int outstanding() const { return outstanding_.load(); }

 private:
  std::atomic<int> outstanding_{0};
};

// A request frame with `call_id` and a message of `size` bytes of `fill`,
// allocated by `connection`.
Frame MakeFrame(Connection& connection, uint64_t call_id, size_t size = 16, uint8_t fill = 0x5a);
// The same with buffers from `owner`.
Frame MakeOwnedFrame(CountingOwner& owner, uint64_t call_id, size_t size, size_t attachments = 0);

// Records what a connection delivers, and checks on the way that nothing
// comes after OnClosed and that every call is on a delivering thread.
class RecordingHandler : public ConnectionHandler {
 public:
  // Optional hooks, run inside the handler before it records.
  std::function<void(Frame&)> on_frame;
  std::function<void()> on_writable;
  std::function<void(const Status&)> on_closed;

  void OnFrame(Frame frame) override;
  void OnWritable() override;
  void OnClosed(const Status& reason) override;

  bool WaitFrames(size_t n, std::chrono::nanoseconds timeout = kWait);
  bool WaitClosed(std::chrono::nanoseconds timeout = kWait);
  bool WaitWritable(std::chrono::nanoseconds timeout = kWait);

  size_t frame_count();
  std::vector<uint64_t> call_ids();
  std::vector<std::thread::id> frame_threads();
  // Takes the recorded frames (their buffers) out.
  std::vector<Frame> TakeFrames();
  int closed_count();
  int writable_count();
  Status reason();
  bool after_close() { return after_close_.load(); }
  bool outside_delivery() { return outside_delivery_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<Frame> frames_;
  std::vector<uint64_t> call_ids_;
  std::vector<std::thread::id> threads_;
  int closed_ = 0;
  int writable_ = 0;
  Status reason_;
  std::atomic<bool> after_close_{false};
  std::atomic<bool> outside_delivery_{false};
};

// Accepted connections, handed from the accept callback to the test.
class AcceptQueue {
 public:
  AcceptCallback callback();
  std::unique_ptr<Connection> Next(std::chrono::nanoseconds timeout = kWait);

 private:
  struct State {
    std::mutex mu;
    std::condition_variable arrived;
    std::deque<std::unique_ptr<Connection>> queue;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// A listener and one connection to it, both ends. The server end is not
// started.
struct ConnectedPair {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Connection> client;
  std::unique_ptr<Connection> server;
  AcceptQueue accepted;
};

// Listens on `listen_uri`, connects to `make_client_uri(bound)`, waits for
// both ends. ADD_FAILUREs and leaves ends null on error.
void ConnectPair(Transport& transport, const std::string& listen_uri,
                 const std::function<std::string(const std::string&)>& make_client_uri,
                 const ConnectionOptions& client_options, const ConnectionOptions& server_options,
                 ConnectedPair* pair);

// Sends frames of `frame_bytes` until writable() turns false; returns how
// many went (at most `max_frames`).
size_t FillUntilNotWritable(Connection& connection, size_t frame_bytes, size_t max_frames, uint64_t first_call_id);

// "uri?option" or "uri&option", whichever fits.
std::string WithOption(const std::string& uri, const std::string& option);

class TransportContract : public ::testing::TestWithParam<ContractTarget> {
 protected:
  Transport& transport() { return *GetParam().transport(); }
  // ConnectPair with the target's URIs.
  void Connect(ConnectedPair* pair, const ConnectionOptions& client_options = {},
               const ConnectionOptions& server_options = {});
};

}  // namespace zcrpc::transport::contract
