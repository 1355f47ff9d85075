// The layout of one shm connection's shared region (docs/transports.md has
// the picture). The server picks the parameters and sends them in the
// handshake; both sides compute the layout from them, never from anything
// the peer can change later.
//
//   page 0            RegionHeader: magic and parameters, for humans and tools
//   control           RingControl for each direction (indices, doorbell flag)
//   descriptors[d]    ring_depth Descriptors per direction
//   returns[d]        the return ring per direction: offsets the receiver
//                     gives back to the sender, one slot per slab page
//   slab[d]           the sending side's buffers for direction d
//
// Direction 0 is client -> server (the client's slab), 1 is server -> client.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstring>
#include <cstdint>

#include "zcrpc/base/status.h"
#include "zcrpc/base/wire.h"

namespace zcrpc::transport::shm {

inline constexpr int kClientToServer = 0;
inline constexpr int kServerToClient = 1;
// Version 2 added RingControl::sender_waiting; the handshake carries the
// version, so a version-1 peer is refused before either side maps anything.
inline constexpr uint32_t kRegionVersion = 2;
inline constexpr uint64_t kRegionMagic = 0x324d48535043525aull;  // "ZCRPSHM2"
inline constexpr size_t kPage = 4096;

struct RegionParams {
  uint64_t slab_bytes = 64ull << 20;  // per direction; a power of two
  uint32_t ring_depth = 256;          // descriptors per direction; a power of two
};

// INVALID_ARGUMENT unless both are powers of two within sane bounds
// (slab 64 KiB .. 16 GiB, ring 2 .. 65536).
Status ValidateParams(const RegionParams& params);

struct RegionHeader {
  uint64_t magic;
  uint64_t slab_bytes;
  uint32_t ring_depth;
};

// One direction's shared indices, each on its own cache line so the two
// sides never write the same line (the two flags are written by both: set
// by the side that waits, cleared by the side that rings). A descriptor's readiness is not here but
// in the descriptor itself (Descriptor::sequence), so a receiver learns of a
// frame and reads its first line in one cache-line transfer.
struct RingControl {
  alignas(64) std::atomic<uint64_t> consumed;          // descriptors taken by the receiver
  alignas(64) std::atomic<uint32_t> receiver_sleeping;  // 1: the sender must ring the doorbell
  alignas(64) std::atomic<uint64_t> returns_produced;  // offsets given back by the receiver
  alignas(64) std::atomic<uint64_t> returns_consumed;  // offsets taken back by the sender
  // 1: the sender has frames queued for want of a descriptor slot or a slab
  // block; the receiver rings the sender's doorbell after it consumes
  // descriptors or returns blocks (the mirror image of receiver_sleeping).
  alignas(64) std::atomic<uint32_t> sender_waiting;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "shared-memory indices must be lock-free to work across processes");

// One part of a frame: a block of the sender's slab, or (kInReceiverSlab)
// a block of the receiver's own slab that the sender was lent and now sends
// back as part of this frame (a handler echoing an attachment: no copy).
struct DescriptorPart {
  uint64_t offset;  // a multiple of 4096 from the start of the slab, | kInReceiverSlab
  uint64_t length;  // bytes of the part
};
inline constexpr uint64_t kInReceiverSlab = 1ull << 63;

inline constexpr uint32_t kMaxParts = 11;  // metadata, message, up to 9 attachments
inline constexpr uint32_t kFirstLineParts = 3;

// One frame: the wire header (as on tcp) and where its parts are. Laid out
// so that a frame of up to three parts (metadata, message, one attachment)
// is two cache lines: line 0 holds the sequence word the receiver polls
// together with the parts, line 1 the header.
struct alignas(64) Descriptor {
  // n + 1 once descriptor n (counting from 0 over the ring's life) is in
  // this slot; written last, with release order.
  std::atomic<uint64_t> sequence;
  uint32_t part_count;  // 2 + attachments: part 0 metadata, part 1 message
  uint32_t reserved;
  DescriptorPart parts[kFirstLineParts];
  uint8_t header[kWireHeaderSize];
  DescriptorPart more_parts[kMaxParts - kFirstLineParts];

  DescriptorPart& part(uint32_t i) { return i < kFirstLineParts ? parts[i] : more_parts[i - kFirstLineParts]; }
  const DescriptorPart& part(uint32_t i) const {
    return i < kFirstLineParts ? parts[i] : more_parts[i - kFirstLineParts];
  }
};
static_assert(sizeof(Descriptor) == 256 && offsetof(Descriptor, header) == 64);

struct RegionLayout {
  RegionParams params;
  uint64_t return_capacity = 0;  // slots per return ring
  uint64_t control = 0;          // offset of RingControl[2]
  uint64_t descriptors[2] = {};
  uint64_t returns[2] = {};
  uint64_t slab[2] = {};
  uint64_t total_bytes = 0;

  // For validated params.
  static RegionLayout For(const RegionParams& params);
};

}  // namespace zcrpc::transport::shm
