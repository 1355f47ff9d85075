// Where a frame's parts sit in its body on a tcp byte stream.
//
// A receiver reads a frame's 64-byte header together with the next
// kInlineWindow bytes in one recv(), into a stage whose header slot ends on
// a page boundary (header at the end of one page, body from the start of the
// next: the two-page trick). Small parts that fit in that window are
// "inline": they arrive with the header and are handed over as slices of
// the stage, 64-byte aligned. Every other part "spills": the sender starts
// it page-aligned at or beyond the window's end, padding with zeros, so no
// byte of it can be in the stage; the receiver reads it with readv() straight
// into its own page-aligned buffer. No byte is ever moved after it is read.
//
// Frames are padded to a multiple of 64 bytes, so the next header, and with
// it the next frame's inline parts, stay 64-byte aligned in the stage.
//
// Both sides run the same rules; the header's padding_len lets a receiver
// skip a frame it will not read and check the sender's arithmetic.
#pragma once

#include <algorithm>
#include <cstdint>

#include "zcrpc/base/buffer.h"

namespace zcrpc::transport::tcp {

inline constexpr uint64_t kInlineWindow = 8192;
inline constexpr uint64_t kInlineAlign = 64;
inline constexpr uint64_t kSpillAlign = BufferPool::kPageSize;

enum class PartKind {
  kBuffer,  // metadata, message, attachment: delivered as a Buffer
  kTable,   // the attachment length table: parsed, never delivered
};

struct PartPlacement {
  uint64_t offset = 0;  // from the start of the body
  bool inline_part = true;
};

// Places a frame's parts in order (metadata, message, table, attachments).
class StreamLayout {
 public:
  PartPlacement Next(uint64_t len, PartKind kind = PartKind::kBuffer) {
    if (len == 0) return {end_, !spilled_};
    const uint64_t align = kind == PartKind::kTable ? 8 : kInlineAlign;
    uint64_t start = AlignUp(end_, align);
    const bool fits = !spilled_ && start + len <= kInlineWindow;
    if (fits) {
      inline_end_ = start + len;
    } else {
      spilled_ = true;
      start = std::max(end_, kInlineWindow);
      if (kind == PartKind::kBuffer) start = AlignUp(start, kSpillAlign);
    }
    padding_ += start - end_;
    end_ = start + len;
    return {start, fits};
  }

  // Pads the frame to a multiple of kInlineAlign. Call once, after the last part.
  void Finish() {
    uint64_t end = AlignUp(end_, kInlineAlign);
    padding_ += end - end_;
    end_ = end;
  }

  uint64_t end() const { return end_; }                // body bytes on the wire
  uint64_t padding() const { return padding_; }        // of which zero padding
  uint64_t inline_end() const { return inline_end_; }  // end of the last inline part
  bool spilled() const { return spilled_; }

 private:
  static uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

  uint64_t end_ = 0;
  uint64_t padding_ = 0;
  uint64_t inline_end_ = 0;
  bool spilled_ = false;
};

}  // namespace zcrpc::transport::tcp
