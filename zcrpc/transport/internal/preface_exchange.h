// PrefaceExchange: one side's half of the connection preface (docs/wire.md,
// "Preface"): the 64 bytes this side sends, the peer's 64 bytes gathered as
// they arrive in however many pieces, and their verdict. What the
// connection can then carry is NegotiateCapabilities (capabilities.h). Written for tcp; any transport that
// opens over a byte stream (shm's Unix-socket setup, a future TLS or RDMA
// connection manager) can use it as is.
//
// Not thread-safe: owned by whichever thread sets the connection up.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/status.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::internal {

class PrefaceExchange {
 public:
  // `role` is this side's; the peer must have the other one.
  PrefaceExchange(PrefaceRole role, const ConnectionOptions& options) : role_(role) {
    mine_.role = role;
    mine_.features = kKnownFeatures;
    mine_.limits = options.limits;
    EncodePreface(mine_, std::span<uint8_t, kPrefaceSize>(own_));
  }

  // This side's preface, for NegotiateCapabilities (capabilities.h).
  const Preface& mine() const { return mine_; }

  // The bytes to send before any frame.
  std::span<const uint8_t> own() const { return own_; }

  // Where the peer's next bytes go (empty once all 64 arrived). Read into it
  // exactly, never more: what follows the preface is the first frame.
  std::span<uint8_t> missing() { return std::span<uint8_t>(peer_).subspan(have_); }
  void Advance(size_t n) { have_ = std::min(kPrefaceSize, have_ + n); }
  bool complete() const { return have_ == kPrefaceSize; }
  // Whether Decode() can give its verdict: all 64 bytes are here, or the
  // first four already are not the preface magic (an HTTP request line or
  // a version-1 frame: answered at once rather than after waiting for
  // bytes a short request never sends; the rest reads as zeros).
  bool decidable() const {
    if (complete()) return true;
    if (have_ < 4) return false;
    uint32_t magic;
    std::memcpy(&magic, peer_.data(), sizeof magic);
    return magic != kPrefaceMagic;
  }
  size_t received() const { return have_; }

  // Decodes the peer's preface once decidable(). Errors as DecodePreface
  // (INVALID_ARGUMENT: not a zcrpc peer, an HTTP client say;
  // FAILED_PRECONDITION: another wire version), naming `peer`.
  StatusOr<Preface> Decode(std::string_view peer) const {
    const PrefaceRole expected = role_ == PrefaceRole::kClient ? PrefaceRole::kServer : PrefaceRole::kClient;
    StatusOr<Preface> preface = DecodePreface(std::span<const uint8_t, kPrefaceSize>(peer_), expected);
    if (!preface.ok()) {
      return Status(preface.status().code(),
                    absl::StrCat("preface from ", ToAbsl(peer), ": ", preface.status().message()));
    }
    return preface;
  }

 private:
  const PrefaceRole role_;
  Preface mine_;
  std::array<uint8_t, kPrefaceSize> own_{};
  std::array<uint8_t, kPrefaceSize> peer_{};
  size_t have_ = 0;
};

}  // namespace zcrpc::transport::internal
