// The runtime's handle on a bridged connection: one gRPC call on the
// serving side (server_bridge.cc), one gRPC channel on the calling side
// (client_bridge.cc). `Bridge` does the work; the handle only forwards, and
// closes the bridge when the runtime lets go of it.
//
// Thread-safe as Connection requires (the bridges are).
#pragma once

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/wire.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::grpc_bridge {

// What a bridged connection carries: gRPC applies its own message size
// limits on its side; gRPC messages have no attachments; metadata within
// gRPC's default header list limit; streams and initial metadata, as gRPC
// has them.
inline Capabilities BridgedCapabilities() {
  Capabilities caps;
  caps.max_body_bytes = UINT32_MAX;
  caps.max_attachments = 0;
  caps.max_metadata_bytes = 16 << 10;
  caps.features = kFeatureStreams | kFeatureInitialMetadata;
  return caps;
}

// Credit for stream messages gRPC has taken goes back to the runtime's
// writer in batches of at least this much, or as soon as nothing is left
// queued (so a waiting writer always gets it): a credit frame per message
// would wake the writer once per message. Half the initial window, so a
// writer with the initial window keeps the other half queued meanwhile.
inline constexpr uint64_t kWriteCreditBatch = kInitialStreamWindow / 2;

// The credit to hand back after gRPC took a message that cost `cost`, given
// what is already owed and whether anything is still queued: 0 while the
// batch is short and more messages wait. `owed` keeps the rest.
inline uint64_t CreditToReturn(uint64_t* owed, uint64_t cost, bool queue_empty) {
  *owed += cost;
  if (!queue_empty && *owed < kWriteCreditBatch) return 0;
  return std::exchange(*owed, 0);
}

template <typename Bridge>
class BridgedConnection final : public Connection {
 public:
  explicit BridgedConnection(std::shared_ptr<Bridge> bridge) : bridge_(std::move(bridge)) {}
  ~BridgedConnection() override {
    // Made once: every bridged call ends here, and a Status with a message
    // costs an allocation each time it is made.
    static const Status* const kLetGo = new Status(absl::UnavailableError("the runtime let go of the connection"));
    bridge_->Close(*kLetGo);
  }

  Buffer Allocate(size_t size) override { return BufferPool::Default().Allocate(size); }
  Status Send(Frame frame) override { return bridge_->Send(std::move(frame)); }
  // The runtime's stream writes are bounded by the credit the bridge gives
  // back only as gRPC takes each message, and a unary call is one message.
  bool writable() override { return true; }
  Status WaitWritable(int64_t) override {
    if (bridge_->closed()) return absl::UnavailableError(absl::StrCat("gRPC connection ", bridge_->peer(), " is closed"));
    return absl::OkStatus();
  }
  Capabilities capabilities() const override { return bridge_->capabilities(); }
  void Start(std::shared_ptr<ConnectionHandler> handler) override { bridge_->StartDelivery(std::move(handler)); }
  void Close(const Status& reason) override { bridge_->Close(reason); }
  std::string peer() const override { return bridge_->peer(); }
  bool PollUntil(absl::FunctionRef<bool()>, std::chrono::nanoseconds) override { return false; }

 private:
  const std::shared_ptr<Bridge> bridge_;
};

}  // namespace zcrpc::transport::grpc_bridge
