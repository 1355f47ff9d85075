#include "zcrpc/transport/grpc/slices.h"

#include <vector>

#include "zcrpc/base/copy_stats.h"

namespace zcrpc::transport::grpc_bridge {
namespace {

// Keeps a gRPC slice alive for as long as the Buffer made from it.
class SliceOwner final : public BufferOwner {
 public:
  explicit SliceOwner(::grpc::Slice slice) : slice_(std::move(slice)) {}
  void Release(uint8_t*, size_t) noexcept override { delete this; }
  // Where the bytes are: only now, since a small slice keeps them inside
  // itself (gRPC inlines slices of up to 23 bytes), not behind a pointer.
  uint8_t* data() { return const_cast<uint8_t*>(slice_.begin()); }
  size_t size() const { return slice_.size(); }

 private:
  ~SliceOwner() = default;
  ::grpc::Slice slice_;
};

void FreeLentBuffer(void* lent) { delete static_cast<Buffer*>(lent); }

}  // namespace

void LendToGrpc(Buffer buffer, ::grpc::ByteBuffer* message) {
  if (buffer.empty()) {
    ::grpc::ByteBuffer empty(nullptr, 0);  // a valid empty message, not an absent one
    message->Swap(&empty);
    return;
  }
  auto* lent = new Buffer(std::move(buffer));
  ::grpc::Slice slice(lent->data(), lent->size(), &FreeLentBuffer, lent);
  ::grpc::ByteBuffer one(&slice, 1);
  message->Swap(&one);
}

Buffer TakeFromGrpc(const ::grpc::ByteBuffer& message) {
  if (message.Length() == 0) return Buffer();
  ::grpc::Slice single;
  if (message.TrySingleSlice(&single).ok()) {
    auto* owner = new SliceOwner(std::move(single));
    return Buffer::Take(owner->data(), owner->size(), owner->size(), owner);
  }
  std::vector<::grpc::Slice> slices;
  (void)message.Dump(&slices);
  Buffer gathered = BufferPool::Default().Allocate(message.Length());
  size_t at = 0;
  for (const ::grpc::Slice& s : slices) {
    CountedCopy(gathered.data() + at, s.begin(), s.size());
    at += s.size();
  }
  return gathered;
}

}  // namespace zcrpc::transport::grpc_bridge
