// The work every BenchmarkService server and floor does per call, the same
// for all systems so that the benchmark compares frameworks, not handlers:
// the server reads every byte of the request payload (a checksum) and
// answers with `response_size` bytes whose first 8 carry that checksum, so
// the client can check the server really read what was sent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace zcrpc::bench {

// Sum of the payload's 8-byte words (and its tail bytes), rotated so a
// reordering is noticed. Reads every byte; vectorises well.
inline uint64_t Checksum(const void* data, size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  uint64_t sums[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 32 <= size; i += 32) {
    for (int lane = 0; lane < 4; ++lane) {
      uint64_t word;
      std::memcpy(&word, bytes + i + 8 * lane, 8);
      sums[lane] += word;
    }
  }
  uint64_t sum = sums[0] ^ (sums[1] << 1) ^ (sums[2] << 2) ^ (sums[3] << 3);
  for (; i < size; ++i) sum = (sum << 5 | sum >> 59) + bytes[i];
  return sum ^ size;
}

inline uint64_t Checksum(std::string_view s) { return Checksum(s.data(), s.size()); }

// A payload of `size` bytes that is not all zeros (so a checksum means
// something) and differs between sizes.
inline std::string MakePayload(size_t size) {
  std::string payload(size, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull ^ size;
  for (char& c : payload) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return payload;
}

// Writes the reply body: `size` bytes, the first 8 (when there is room)
// holding the request's checksum.
inline void FillReplyBody(std::string* body, size_t size, uint64_t request_checksum) {
  body->resize(size);
  if (size >= 8) std::memcpy(body->data(), &request_checksum, 8);
}

// True when a reply body of the expected size carries the expected checksum.
inline bool ReplyBodyMatches(std::string_view body, size_t expected_size, uint64_t request_checksum) {
  if (body.size() != expected_size) return false;
  if (expected_size < 8) return true;
  uint64_t got;
  std::memcpy(&got, body.data(), 8);
  return got == request_checksum;
}

// "" if a BenchmarkService reply carries the expected body, else what is wrong.
template <class SimpleResponse>
std::string CheckReplyBody(const SimpleResponse& response, size_t expected_size, uint64_t request_checksum) {
  return ReplyBodyMatches(response.payload().body(), expected_size, request_checksum)
             ? ""
             : "reply does not match the request (size or checksum)";
}

// BenchmarkService.UnaryCall as every server here implements it; templated
// because zcrpc's and gRPC's generated messages live in separate binaries.
template <class SimpleRequest, class SimpleResponse>
void ServeUnaryCall(const SimpleRequest& request, SimpleResponse* response) {
  const uint64_t sum = Checksum(request.payload().body());
  const size_t reply_size = request.response_size() > 0 ? static_cast<size_t>(request.response_size()) : 0;
  FillReplyBody(response->mutable_payload()->mutable_body(), reply_size, sum);
}

// BenchmarkService.StreamingCall (the stream workload) answers each request
// on the stream as UnaryCall does (ServeUnaryCall). StreamingFromServer
// (stream-throughput) makes the one reply UnaryCall would make to its
// request and writes it again and again until the client cancels.
//
// The stream-throughput client reads every byte it receives, as bulk's
// server does: it checksums each reply body whole and compares it with the
// checksum of the body it expects, which this gives.
inline uint64_t ExpectedReplyBodyChecksum(size_t size, uint64_t request_checksum) {
  std::string body;
  FillReplyBody(&body, size, request_checksum);
  return Checksum(body);
}

// True when a received stream message's body is the expected one, every
// byte read.
inline bool StreamBodyMatches(std::string_view body, size_t expected_size, uint64_t expected_body_checksum) {
  return body.size() == expected_size && Checksum(body) == expected_body_checksum;
}

}  // namespace zcrpc::bench
