// RawPeer: a zcrpc client on a plain loopback socket that does only what a
// test tells it: send the preface or not, send part of a frame, answer
// pings or not, never read. The misbehaving client of the fault tests.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "zcrpc/base/wire.h"

namespace zcrpc::testing {

class RawPeer {
 public:
  // Connects to a "tcp://127.0.0.1:PORT" URI; check connected().
  explicit RawPeer(const std::string& uri) {
    const std::string address = uri.substr(uri.find("://") + 3);
    sockaddr_in where{};
    where.sin_family = AF_INET;
    where.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
    ::inet_pton(AF_INET, "127.0.0.1", &where.sin_addr);
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<const sockaddr*>(&where), sizeof where) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawPeer() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  bool connected() const { return fd_ >= 0; }

  bool SendAll(std::span<const uint8_t> bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes = bytes.subspan(static_cast<size_t>(n));
    }
    return true;
  }

  // Sends the client preface and reads the server's. False if the server
  // did not answer with a valid one.
  bool Handshake() {
    std::array<uint8_t, kPrefaceSize> mine{};
    Preface preface;
    preface.role = PrefaceRole::kClient;
    EncodePreface(preface, std::span<uint8_t, kPrefaceSize>(mine));
    if (!SendAll(mine)) return false;
    std::array<uint8_t, kPrefaceSize> theirs{};
    if (!ReadExactly(theirs, std::chrono::seconds(10))) return false;
    return DecodePreface(std::span<const uint8_t, kPrefaceSize>(theirs), PrefaceRole::kServer).ok();
  }

  bool SendHeader(const WireHeader& header) {
    std::array<uint8_t, kWireHeaderSize> bytes{};
    EncodeWireHeader(header, std::span<uint8_t, kWireHeaderSize>(bytes));
    return SendAll(bytes);
  }

  // The next frame's header, skipping its body (or appending it, padding
  // and all, to `body`); nullopt if the connection ended or nothing came
  // within `limit`.
  std::optional<WireHeader> ReadFrame(std::chrono::milliseconds limit, std::string* body_bytes = nullptr) {
    std::array<uint8_t, kWireHeaderSize> bytes{};
    if (!ReadExactly(bytes, limit)) return std::nullopt;
    StatusOr<WireHeader> header = DecodeWireHeader(std::span<const uint8_t, kWireHeaderSize>(bytes));
    if (!header.ok()) return std::nullopt;
    uint64_t body = header->wire_body_len();
    std::array<uint8_t, 4096> sink{};
    while (body > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(body, sink.size()));
      if (!ReadExactly(std::span<uint8_t>(sink.data(), n), limit)) return std::nullopt;
      if (body_bytes != nullptr) body_bytes->append(reinterpret_cast<const char*>(sink.data()), n);
      body -= n;
    }
    return *header;
  }

  // Whether the server closed the connection within `limit` (reading and
  // dropping whatever it sent before).
  bool ClosedWithin(std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    std::array<uint8_t, 4096> sink{};
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t n = ::recv(fd_, sink.data(), sink.size(), 0);
      if (n <= 0) return true;  // end of stream or reset
    }
  }

 private:
  bool ReadExactly(std::span<uint8_t> out, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!out.empty()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t n = ::recv(fd_, out.data(), out.size(), 0);
      if (n <= 0) return false;
      out = out.subspan(static_cast<size_t>(n));
    }
    return true;
  }

  int fd_ = -1;
};

}  // namespace zcrpc::testing
