// The zcrpc wire format (docs/wire.md is the reference): a fixed 64-byte
// little-endian header, then a metadata block, the serialized message, and
// the attachment section. This file holds the header codec, the limits a
// receiver enforces, and the metadata block codec. It is shared by the
// runtime and every transport, and has no state. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "zcrpc/base/status.h"

namespace zcrpc {

inline constexpr uint32_t kWireMagic = 0x5052435A;  // bytes "ZCRP" on the wire
inline constexpr uint8_t kWireVersion = 2;
inline constexpr size_t kWireHeaderSize = 64;
// Each attachment's length is one u64 in a table at the start of the section.
inline constexpr size_t kAttachmentLengthSize = 8;

enum class FrameType : uint8_t {
  kRequest = 1,   // client -> server: opens a unary call, or a stream (kFlagStream)
  kResponse = 2,  // server -> client: status, trailing metadata, message; ends the call or stream
  kCancel = 3,    // client -> server: the caller gave up on call_id
  kGoAway = 4,    // server -> client: no new calls here; call_id 0, no body
  // Streams (docs/wire.md, "Streams"): sent only on a connection where both
  // prefaces announced kFeatureStreams.
  kStreamMessage = 5,  // either way: one message of stream call_id
  kHalfClose = 6,      // client -> server: the client sends no more messages; no body
  kCredit = 7,         // either way: the receiver may send credit_bytes() more; no body
  // Server -> client: the call's initial metadata (a metadata block, nothing
  // else), before its first message or its response. Sent only where both
  // prefaces announced kFeatureInitialMetadata.
  kInitialMetadata = 8,
  // Either way: keepalive (docs/wire.md, "Keepalive"). A ping asks the peer
  // to answer with a ping ack carrying the same call_id (any non-zero
  // value; it names the ping, not a call); no body. Sent only where both
  // prefaces announced kFeatureKeepalive.
  kPing = 9,
  kPingAck = 10,
  // 11..15 are reserved; a receiver treats them as unknown types and closes
  // the connection.
};

// Header flags. Unknown bits are a protocol error.
inline constexpr uint16_t kFlagNone = 0;
// Requests: the metadata block starts with the entry (":path",
// "/package.Service/Method"), and method_id is bound to that path for the
// rest of the connection (docs/wire.md, "Method identity").
inline constexpr uint16_t kFlagMethodPath = 0x0001;
// Requests: opens a stream rather than a unary call; the request carries no
// message (messages follow as kStreamMessage frames).
inline constexpr uint16_t kFlagStream = 0x0002;
inline constexpr uint16_t kKnownFlags = kFlagMethodPath | kFlagStream;

// Bytes of messages a stream's sender may send before the receiver grants
// more with credit frames (docs/wire.md, "Flow control"): the same on both
// sides, so the first messages need no round trip. HTTP/2's default.
inline constexpr uint64_t kInitialStreamWindow = 64 << 10;
// A window may never grow past this; more credit is a protocol error.
inline constexpr uint64_t kMaxStreamWindow = uint64_t{1} << 40;
// The least a stream message takes from the window, however small: what a
// receiver holds for it is at least a page (a pool or shm slab block), so
// a window of tiny messages is no larger in memory than its bytes say.
inline constexpr uint64_t kStreamMessageMinCredit = 4096;

struct WireHeader {
  FrameType type = FrameType::kRequest;
  uint16_t flags = 0;
  uint64_t call_id = 0;       // assigned by the caller's call table; never 0
  uint32_t method_id = 0;     // requests: a method binding of this connection, never 0
  uint32_t status_code = 0;   // responses: a gRPC status code
  uint64_t timeout_us = 0;    // requests: time the caller still waits; 0 = none; credit frames: the credit
  uint32_t metadata_len = 0;  // bytes of the metadata block
  uint32_t message_len = 0;   // bytes of the serialized message (or error text)
  uint32_t attachment_count = 0;
  uint64_t attachments_len = 0;  // bytes of the section: length table + segments
  // Zero bytes a stream transport (tcp) put between parts so that large
  // parts start on a page (docs/wire.md, "Padding"); 0 where parts travel
  // separately (shm). Set and checked by the transport, not the runtime.
  uint64_t padding_len = 0;

  // Credit frames keep the bytes granted in the timeout field.
  uint64_t credit_bytes() const { return timeout_us; }
  void set_credit_bytes(uint64_t bytes) { timeout_us = bytes; }

  // Bytes of the parts after the header, padding not included. Only
  // meaningful once DecodeWireHeader() accepted the header.
  uint64_t body_len() const { return uint64_t{metadata_len} + message_len + attachments_len; }
  // Bytes after the header on a byte stream: parts plus padding.
  uint64_t wire_body_len() const { return body_len() + padding_len; }
};

// What a receiver accepts. Defaults suit most services; both ends may differ.
struct FrameLimits {
  uint64_t max_body_bytes = 64u << 20;     // metadata + message + attachments
  uint32_t max_metadata_bytes = 64u << 10;  // the metadata block alone
  uint32_t max_attachments = 64;
};

void EncodeWireHeader(const WireHeader& header, std::span<uint8_t, kWireHeaderSize> out);

// Decodes a header and checks what can be checked without the body: magic,
// version, type, flags, reserved fields, length consistency. Errors:
//  - INVALID_ARGUMENT: malformed (bad magic, version, type, flags, reserved
//    bytes, attachment table larger than the section, zero call id): the
//    receiver closes the connection.
// Limits are checked separately by CheckLimits().
StatusOr<WireHeader> DecodeWireHeader(std::span<const uint8_t, kWireHeaderSize> in);

// "request", "stream message", ...: for error messages.
const char* FrameTypeName(FrameType type);

// RESOURCE_EXHAUSTED if a well-formed header asks for more than `limits`.
Status CheckLimits(const WireHeader& header, const FrameLimits& limits);

// Padding before one part never exceeds this; a header that announces more
// than (attachment_count + 3) times it is malformed.
inline constexpr uint64_t kMaxPaddingPerPart = 16 << 10;

// A frame that exceeds the limits but no more than this is read and thrown
// away, so the call fails with RESOURCE_EXHAUSTED and the connection lives on;
// a larger one closes the connection (reading it would take too long).
inline constexpr uint64_t kMaxDiscardBytes = uint64_t{1} << 30;

// Method identity (docs/wire.md): the metadata entry a request with
// kFlagMethodPath starts with.
inline constexpr std::string_view kMethodPathKey = ":path";
inline constexpr size_t kMaxMethodPathBytes = 1024;
// Bytes EncodeMethodPath() writes.
inline size_t EncodedMethodPathSize(std::string_view path) { return 8 + kMethodPathKey.size() + path.size(); }
// Writes the (":path", path) entry at the start of `out`; returns its size.
size_t EncodeMethodPath(std::string_view path, std::span<uint8_t> out);
// Reads the (":path", path) entry at the start of `block` and advances
// `block` past it. The view points into the block. INVALID_ARGUMENT if the
// first entry is not a well-formed path ("/service/method", printable
// ASCII, at most kMaxMethodPathBytes).
StatusOr<std::string_view> TakeMethodPath(std::span<const uint8_t>& block);

// The preface (docs/wire.md, "Preface"): the first thing each side of a
// connection sends, before any frame. It says which wire version the side
// speaks, which optional features it has, and what it accepts.
inline constexpr size_t kPrefaceSize = 64;
inline constexpr uint32_t kPrefaceMagic = 0x4650435A;  // bytes "ZCPF" on the wire
enum class PrefaceRole : uint8_t { kClient = 1, kServer = 2 };
// Feature bits: a receiver ignores bits it does not know, and a feature is
// in use only when both sides announce it.
// The side sends and accepts stream frames (types 5-7, kFlagStream), each
// message costing at least kStreamMessageMinCredit. Bit 0 was streams
// without that floor, before any release; it is retired, not reused.
inline constexpr uint64_t kFeatureStreams = 2;
// The side sends and accepts kInitialMetadata frames.
inline constexpr uint64_t kFeatureInitialMetadata = 4;
// The side answers kPing frames with kPingAck (and may send pings).
inline constexpr uint64_t kFeatureKeepalive = 8;
inline constexpr uint64_t kKnownFeatures = kFeatureStreams | kFeatureInitialMetadata | kFeatureKeepalive;

struct Preface {
  uint8_t version = kWireVersion;
  PrefaceRole role = PrefaceRole::kClient;
  uint64_t features = kKnownFeatures;
  FrameLimits limits;  // what the sender of the preface accepts
};
void EncodePreface(const Preface& preface, std::span<uint8_t, kPrefaceSize> out);
// INVALID_ARGUMENT for bytes that are not a zcrpc preface (an HTTP client,
// say) or that break its rules; FAILED_PRECONDITION for another wire
// version, naming both. `expected_role` is the role the peer must have.
StatusOr<Preface> DecodePreface(std::span<const uint8_t, kPrefaceSize> in, PrefaceRole expected_role);

// The four kinds of RPC a .proto method can be (MethodDescriptor, and
// transports whose peers do not say whether a call streams: grpc://).
enum class MethodKind : uint8_t { kUnary, kClientStreaming, kServerStreaming, kBidiStreaming };

// FNV-1a of the method path, e.g. "/zcrpc.examples.Echo/Say". Not on the
// wire since version 2: only a hash for tables keyed by path.
constexpr uint32_t MethodId(std::string_view path) {
  uint32_t h = 2166136261u;
  for (char c : path) {
    h ^= static_cast<uint8_t>(c);
    h *= 16777619u;
  }
  return h;
}

// Metadata: ordered key/value pairs; a key may repeat. Keys are lower-case
// [0-9a-z_.-]; a key ending in "-bin" carries any bytes, other values are
// printable ASCII (gRPC's rules, so the bridge maps them unchanged).
using Metadata = std::vector<std::pair<std::string, std::string>>;

Status ValidateMetadataEntry(std::string_view key, std::string_view value);
// Bytes EncodeMetadata() writes for `md`.
size_t EncodedMetadataSize(const Metadata& md);
// One entry's share of that, and writing it at `out` (which must hold
// EncodedMetadataEntrySize bytes); returns the byte after it. For callers
// whose metadata is not a Metadata vector (the gRPC bridge): no copy into
// one first.
inline size_t EncodedMetadataEntrySize(std::string_view key, std::string_view value) {
  return 8 + key.size() + value.size();
}
uint8_t* EncodeMetadataEntry(std::string_view key, std::string_view value, uint8_t* out);
// Writes `md` into `out` (exactly EncodedMetadataSize bytes).
void EncodeMetadata(const Metadata& md, std::span<uint8_t> out);
// Parses a metadata block. INVALID_ARGUMENT if truncated or invalid.
Status DecodeMetadata(std::span<const uint8_t> block, Metadata* out);

}  // namespace zcrpc
