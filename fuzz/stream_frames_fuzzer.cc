// Fuzzes one end of a stream (zcrpc/rpc/internal/stream_state.h) with what
// a peer can send it, interleaved with what the application does: stream
// messages of any size (within or over the limits), half-closes, credit
// frames, frames that do not belong in a stream, and reads, writes, closes
// and ends. The credit accounting must refuse a peer that overruns its
// window or grows ours past 2^40, and never crash, overflow or hang. The
// stream sends its credit and messages on a real loopback:// connection,
// whose other end discards them.
#include <google/protobuf/wrappers.pb.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "zcrpc/base/buffer.h"
#include "zcrpc/rpc/internal/stream_state.h"
#include "zcrpc/transport/registry.h"
#include "zcrpc/transport/transport.h"

namespace {

namespace transport = zcrpc::transport;

class Discard final : public transport::ConnectionHandler {
 public:
  void OnFrame(zcrpc::Frame) override {}
  void OnClosed(const zcrpc::Status&) override {}
};

// One loopback connection pair for the whole run: the stream is attached
// to the client end; the server end throws away what arrives.
transport::Connection& Connection() {
  static transport::Connection* client = [] {
    transport::Registry& registry = transport::Registry::Default();
    transport::Transport* loopback = *registry.Find("loopback");
    static std::unique_ptr<transport::Connection> server;
    transport::ConnectionOptions options;
    options.send_stall_timeout = std::chrono::hours(1);
    static std::unique_ptr<transport::Listener> listener =
        *loopback->Listen(*transport::Uri::Parse("loopback://stream-fuzz"), options,
                          [](std::unique_ptr<transport::Connection> c) {
                            server = std::move(c);
                            server->Start(std::make_shared<Discard>());
                          });
    auto connected = transport::ConnectAndWait(*loopback, *transport::Uri::Parse("loopback://stream-fuzz"), options);
    if (!connected.ok()) __builtin_trap();
    (*connected)->Start(std::make_shared<Discard>());
    return connected->release();
  }();
  return *client;
}

// Reads the input front to back; zeros once it runs out.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return at_ >= size_; }
  uint8_t Byte() { return at_ < size_ ? data_[at_++] : 0; }
  // Fills `out` from the input (zeros past its end), in one copy.
  void Fill(std::span<uint8_t> out) {
    if (out.empty()) return;  // an empty Buffer has no data(): nothing to copy
    const size_t n = std::min(out.size(), size_ - std::min(at_, size_));
    std::memcpy(out.data(), data_ + at_, n);
    std::memset(out.data() + n, 0, out.size() - n);
    at_ += n;
  }
  uint64_t Bytes(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | Byte();
    return v;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

zcrpc::Frame StreamFrame(zcrpc::FrameType type, zcrpc::CallId id) {
  zcrpc::Frame frame;
  frame.header.type = type;
  frame.header.call_id = id;
  return frame;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  static zcrpc::CallId next_id = 1;
  const zcrpc::CallId id = next_id++;
  zcrpc::internal::StreamState::Options options;
  options.receive_window = in.Bytes(3) << 4;  // clamped to at least 64 KiB
  options.sends_half_close = (in.Byte() & 1) != 0;
  bool aborted = false;
  zcrpc::internal::StreamState stream(options, [&](zcrpc::Status) { aborted = true; });
  stream.Attach(&Connection(), id, /*deadline_nanos=*/0);
  stream.AnnounceWindow();

  google::protobuf::BytesValue message;
  while (!in.empty()) {
    switch (in.Byte() % 9) {
      case 0: {  // a stream message: its bytes from the input, its size up to 64 KiB
        zcrpc::Frame frame = StreamFrame(zcrpc::FrameType::kStreamMessage, id);
        const size_t n = in.Bytes(2);
        frame.message = zcrpc::BufferPool::Default().Allocate(n);
        in.Fill(frame.message.span());
        frame.header.message_len = static_cast<uint32_t>(n);
        if (in.Byte() & 1) {  // and an attachment
          frame.attachments.push_back(zcrpc::BufferPool::Default().Allocate(in.Byte()));
          frame.header.attachment_count = 1;
          frame.header.attachments_len = 8 + frame.attachments.back().size();
        }
        if (!stream.OnFrame(std::move(frame)).ok()) stream.End(zcrpc::Status(absl::InternalError("fuzz")));
        break;
      }
      case 1: {  // a message over the limits: read and discarded, its lengths claim anything
        zcrpc::Frame frame = StreamFrame(zcrpc::FrameType::kStreamMessage, id);
        frame.body_discarded = true;
        frame.header.message_len = static_cast<uint32_t>(in.Bytes(4));
        frame.header.attachments_len = in.Bytes(5);
        if (!stream.OnFrame(std::move(frame)).ok()) stream.End(zcrpc::Status(absl::InternalError("fuzz")));
        break;
      }
      case 2:
        if (!stream.OnFrame(StreamFrame(zcrpc::FrameType::kHalfClose, id)).ok()) {
          stream.End(zcrpc::Status(absl::InternalError("fuzz")));
        }
        break;
      case 3: {  // credit, in the range the header decoder lets through (1 .. 2^40)
        zcrpc::Frame frame = StreamFrame(zcrpc::FrameType::kCredit, id);
        frame.header.set_credit_bytes(in.Bytes(5) % zcrpc::kMaxStreamWindow + 1);
        if (!stream.OnFrame(std::move(frame)).ok()) stream.End(zcrpc::Status(absl::InternalError("fuzz")));
        break;
      }
      case 4: {  // a frame that has no place in a stream
        const auto type = static_cast<zcrpc::FrameType>(1 + in.Byte() % 10);
        if (!stream.OnFrame(StreamFrame(type, id)).ok()) stream.End(zcrpc::Status(absl::InternalError("fuzz")));
        break;
      }
      case 5: {
        std::vector<zcrpc::Buffer> attachments;
        (void)stream.TryRead(&message, &attachments);
        break;
      }
      case 6: {
        message.set_value(std::string(in.Bytes(2), 'x'));
        (void)stream.Write(message, {}, /*may_wait=*/false);
        break;
      }
      case 7:
        (void)stream.CloseWrites();
        break;
      case 8:
        stream.End(zcrpc::Status(absl::CancelledError("fuzz")), (in.Byte() & 1) != 0);
        break;
    }
  }
  stream.End(zcrpc::Status());
  (void)aborted;
  return 0;
}
