#include "transport/tcp/tcp_connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>

#include "absl/strings/str_cat.h"

namespace zcrpc::transport::tcp {
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {
constexpr size_t kDiscardChunk = 64 << 10;

std::string PeerUri(const tcp::socket& socket) {
  boost::system::error_code ec;
  tcp::endpoint ep = socket.remote_endpoint(ec);
  if (ec) return "tcp://?";
  return ep.address().is_v6() ? absl::StrCat("tcp://[", ep.address().to_string(), "]:", ep.port())
                              : absl::StrCat("tcp://", ep.address().to_string(), ":", ep.port());
}
}  // namespace

class TcpConnection::State : public std::enable_shared_from_this<State> {
 public:
  State(tcp::socket socket, const ConnectionOptions& options)
      : socket_(std::move(socket)), fd_(socket_.native_handle()), limits_(options.limits), peer_(PeerUri(socket_)) {
    boost::system::error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    socket_.non_blocking(true, ignored);
  }

  const std::string& peer() const { return peer_; }

  void Start(std::shared_ptr<ConnectionHandler> handler) {
    handler_ = std::move(handler);
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->ReadHeader(); });
  }

  void Close(const Status& reason) {
    {
      std::lock_guard lock(close_mu_);
      if (!close_reason_) close_reason_ = reason;
    }
    // shutdown() rather than close(): the fd stays ours until the State dies,
    // so no other thread can race on a reused descriptor number. The pending
    // read then completes on the poller thread, which reports OnClosed.
    if (!shut_down_.exchange(true)) ::shutdown(fd_, SHUT_RDWR);
  }

  Status Send(Frame& frame);

 private:
  void ReadHeader();
  void OnHeader(const boost::system::error_code& ec);
  void OnBody(const boost::system::error_code& ec);
  void Discard();
  void Deliver();
  void Fail(const Status& status);
  Status ReadError(const boost::system::error_code& ec) const {
    if (ec == asio::error::eof) return absl::UnavailableError(absl::StrCat("connection closed by ", peer_));
    return absl::UnavailableError(absl::StrCat("read from ", peer_, " failed: ", ec.message()));
  }
  Status WriteAll(std::span<iovec> iov);

  tcp::socket socket_;
  const int fd_;
  const FrameLimits limits_;
  const std::string peer_;

  std::mutex send_mu_;  // one sender at a time, so frames never interleave
  std::atomic<bool> shut_down_{false};
  std::mutex close_mu_;
  std::optional<Status> close_reason_;  // guarded by close_mu_

  // Receive state: touched only on the poller thread, one frame at a time.
  std::shared_ptr<ConnectionHandler> handler_;
  bool failed_ = false;
  std::array<uint8_t, kWireHeaderSize> header_bytes_;
  Frame frame_;
  std::vector<uint64_t> attachment_table_;
  std::vector<asio::mutable_buffer> read_parts_;
  uint64_t discard_left_ = 0;
  std::unique_ptr<uint8_t[]> scratch_;
};

Status TcpConnection::State::Send(Frame& frame) {
  frame.SetLengthsFromParts();
  std::array<uint8_t, kWireHeaderSize> header;
  EncodeWireHeader(frame.header, header);
  // Per-thread scratch, reused across sends: no allocation per frame.
  thread_local std::vector<uint64_t> table;
  thread_local std::vector<iovec> iov;
  table.clear();
  iov.clear();
  for (const Buffer& a : frame.attachments) table.push_back(a.size());

  auto add = [](const void* p, size_t n) {
    if (n > 0) iov.push_back({const_cast<void*>(p), n});
  };
  add(header.data(), header.size());
  add(frame.metadata.data(), frame.metadata.size());
  add(frame.message.data(), frame.message.size());
  add(table.data(), table.size() * kAttachmentLengthSize);
  for (const Buffer& a : frame.attachments) add(a.data(), a.size());

  std::lock_guard lock(send_mu_);
  return WriteAll(std::span(iov));
  // The frame's buffers are released by the caller's Frame going out of
  // scope: plain sendmsg() has copied them into the kernel.
}

Status TcpConnection::State::WriteAll(std::span<iovec> iov) {
  size_t first = 0;
  while (first < iov.size()) {
    if (shut_down_.load(std::memory_order_relaxed)) {
      return absl::UnavailableError(absl::StrCat("connection to ", peer_, " is closed"));
    }
    msghdr msg{};
    msg.msg_iov = &iov[first];
    msg.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
    ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // The peer is not reading: wait for room (backpressure), waking now
        // and then to notice a Close() from another thread.
        pollfd p{fd_, POLLOUT, 0};
        ::poll(&p, 1, 100);
        continue;
      }
      Status error = absl::UnavailableError(absl::StrCat("send to ", peer_, " failed: ", std::strerror(errno)));
      Close(error);
      return error;
    }
    size_t left = static_cast<size_t>(n);
    while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (left > 0) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return absl::OkStatus();
}

void TcpConnection::State::ReadHeader() {
  asio::async_read(socket_, asio::buffer(header_bytes_),
                   [self = shared_from_this()](const boost::system::error_code& ec, size_t) { self->OnHeader(ec); });
}

void TcpConnection::State::OnHeader(const boost::system::error_code& ec) {
  if (ec) return Fail(ReadError(ec));
  StatusOr<WireHeader> header = DecodeWireHeader(header_bytes_);
  if (!header.ok()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("malformed frame from ", peer_, ": ", header.status().message())));
  }
  frame_ = Frame{};
  frame_.header = *header;
  if (Status limit = CheckLimits(*header, limits_); !limit.ok()) {
    if (header->body_len() > kMaxDiscardBytes) {
      return Fail(absl::ResourceExhaustedError(absl::StrCat("frame from ", peer_, ": ", limit.message())));
    }
    // Drain the body and let the runtime fail just this call.
    frame_.body_discarded = true;
    discard_left_ = header->body_len();
    return Discard();
  }
  if (header->body_len() == 0) return Deliver();

  BufferPool& pool = BufferPool::Default();
  frame_.metadata = pool.Allocate(header->metadata_len);
  frame_.message = pool.Allocate(header->message_len);
  attachment_table_.assign(header->attachment_count, 0);
  read_parts_.clear();
  if (!frame_.metadata.empty()) read_parts_.emplace_back(frame_.metadata.data(), frame_.metadata.size());
  if (!frame_.message.empty()) read_parts_.emplace_back(frame_.message.data(), frame_.message.size());
  if (!attachment_table_.empty()) {
    read_parts_.emplace_back(attachment_table_.data(), attachment_table_.size() * kAttachmentLengthSize);
  }
  asio::async_read(socket_, read_parts_,
                   [self = shared_from_this()](const boost::system::error_code& ec, size_t) { self->OnBody(ec); });
}

void TcpConnection::State::OnBody(const boost::system::error_code& ec) {
  if (ec) return Fail(ReadError(ec));
  if (attachment_table_.empty() || !frame_.attachments.empty()) return Deliver();

  // The table is peer-given: the lengths must add up to exactly the section.
  uint64_t remaining = frame_.header.attachments_len - attachment_table_.size() * kAttachmentLengthSize;
  for (uint64_t len : attachment_table_) {
    if (len > remaining) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("malformed frame from ", peer_, ": attachment lengths exceed the attachment section")));
    }
    remaining -= len;
  }
  if (remaining != 0) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("malformed frame from ", peer_, ": attachment lengths do not fill the attachment section")));
  }
  read_parts_.clear();
  for (uint64_t len : attachment_table_) {
    frame_.attachments.push_back(BufferPool::Default().Allocate(len));
    if (len > 0) read_parts_.emplace_back(frame_.attachments.back().data(), len);
  }
  if (read_parts_.empty()) return Deliver();
  // Second pass through OnBody: attachments are now filled, so it delivers.
  asio::async_read(socket_, read_parts_,
                   [self = shared_from_this()](const boost::system::error_code& ec, size_t) { self->OnBody(ec); });
}

void TcpConnection::State::Discard() {
  if (discard_left_ == 0) return Deliver();
  if (!scratch_) scratch_ = std::make_unique<uint8_t[]>(kDiscardChunk);
  size_t n = static_cast<size_t>(std::min<uint64_t>(discard_left_, kDiscardChunk));
  asio::async_read(socket_, asio::buffer(scratch_.get(), n),
                   [self = shared_from_this()](const boost::system::error_code& ec, size_t got) {
                     if (ec) return self->Fail(self->ReadError(ec));
                     self->discard_left_ -= got;
                     self->Discard();
                   });
}

void TcpConnection::State::Deliver() {
  if (handler_) handler_->OnFrame(std::move(frame_));
  frame_ = Frame{};
  ReadHeader();
}

void TcpConnection::State::Fail(const Status& status) {
  if (failed_) return;
  failed_ = true;
  if (!shut_down_.exchange(true)) ::shutdown(fd_, SHUT_RDWR);
  Status reason = status;
  {
    std::lock_guard lock(close_mu_);
    if (close_reason_) reason = *close_reason_;
  }
  frame_ = Frame{};
  if (auto handler = std::move(handler_)) handler->OnClosed(reason);
}

TcpConnection::TcpConnection(tcp::socket socket, const ConnectionOptions& options)
    : state_(std::make_shared<State>(std::move(socket), options)) {}

TcpConnection::~TcpConnection() { state_->Close(absl::CancelledError("connection closed by its owner")); }

Buffer TcpConnection::Allocate(size_t size) { return BufferPool::Default().Allocate(size); }
Status TcpConnection::Send(Frame frame) { return state_->Send(frame); }
void TcpConnection::Start(std::shared_ptr<ConnectionHandler> handler) { state_->Start(std::move(handler)); }
void TcpConnection::Close(const Status& reason) { state_->Close(reason); }
std::string TcpConnection::peer() const { return state_->peer(); }

}  // namespace zcrpc::transport::tcp
