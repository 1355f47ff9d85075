#include "zcrpc/transport/shm/shm_connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/copy_stats.h"
#include "zcrpc/base/cpu_relax.h"
#include "zcrpc/transport/shm/region.h"

namespace zcrpc::transport::shm {
namespace {

using Clock = std::chrono::steady_clock;


// How often a spinning poller checks that the peer is still there.
constexpr auto kLivenessInterval = std::chrono::milliseconds(1);

// A descriptor as copied out of the ring, out of the peer's reach.
struct ReceivedDescriptor {
  uint32_t part_count;
  uint8_t header[kWireHeaderSize];
  DescriptorPart parts[kMaxParts];
};

class State : public std::enable_shared_from_this<State> {
 public:
  State(ShmEndpoint endpoint, Region* region, const ShmOptions& options, const ConnectionOptions& connection_options)
      : region_(region),
        options_(options),
        limits_(connection_options.limits),
        socket_(std::move(endpoint.socket)),
        send_doorbell_(std::move(endpoint.doorbell[endpoint.is_server ? kServerToClient : kClientToServer])),
        receive_doorbell_(std::move(endpoint.doorbell[endpoint.is_server ? kClientToServer : kServerToClient])),
        peer_(std::move(endpoint.peer)),
        depth_(region->layout().params.ring_depth) {}

  ~State() { region_->Unref(); }

  Buffer Allocate(size_t size) {
    Buffer buffer = region_->Allocate(size);
    // The slab is full right now: a heap buffer, which Send copies into the
    // slab once there is room (a counted copy).
    if (buffer.empty() && size > 0) buffer = BufferPool::Default().Allocate(size);
    return buffer;
  }

  Status Send(Frame frame);
  void Start(std::shared_ptr<ConnectionHandler> handler);
  void Close(const Status& reason);
  bool PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget);
  const std::string& peer() const { return peer_; }

 private:
  bool TryLockPolling() { return !polling_.exchange(true, std::memory_order_acquire); }
  // Sequentially consistent: a caller that unlocks and then looks at
  // poller_asleep_ must not have its unlock reordered after that look, or
  // it and a poller going to sleep could each miss the other (Sleep()).
  void UnlockPolling() { polling_.store(false, std::memory_order_seq_cst); }

  void PollerLoop();
  // Delivers every frame in the receive ring; the caller holds the polling
  // lock. Returns whether there was any.
  bool DrainLocked();
  Status DecodeDescriptor(const ReceivedDescriptor& descriptor, Frame* frame);
  // Whether the next descriptor is there (or the slot holds garbage, which
  // the next drain reports). Safe without the polling lock: `consumed` is
  // only ever written by this side.
  bool HasIncoming() {
    const uint64_t next = region_->receive_control().consumed.load(std::memory_order_relaxed);
    const uint64_t sequence = region_->receive_ring()[next & (depth_ - 1)].sequence.load(std::memory_order_seq_cst);
    return sequence != EmptySlotSequence(next);
  }
  // What slot `n % depth` holds before descriptor n arrives: the previous
  // lap's descriptor, or 0 on the first lap.
  uint64_t EmptySlotSequence(uint64_t n) const { return n >= depth_ ? n + 1 - depth_ : 0; }
  // Sleeps until the doorbell rings, the peer hangs up or Close() is called.
  void Sleep();
  bool PeerHungUp();
  // Takes back returned buffers; a bad return closes the connection.
  void CheckReturns() {
    Status returns = region_->returns_error();
    if (returns.ok()) returns = region_->ReclaimReturns();
    if (!returns.ok()) {
      Close(absl::DataLossError(absl::StrCat("shm peer ", peer_, " broke the protocol: ", returns.message())));
    }
  }
  void RingPeer();
  void Wake() {
    const uint64_t one = 1;
    (void)!write(receive_doorbell_.get(), &one, sizeof one);
  }
  // Waits for a block of the slab for a part that is not in it yet.
  StatusOr<Buffer> PlaceInSlab(Buffer part, Clock::time_point deadline);
  // Backs off while waiting for the peer: spins, yields, then naps.
  static void Backoff(int& round) {
    if (round < 64) CpuRelax();
    else if (round < 128) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(50));
    ++round;
  }
  bool closed() const { return closed_.load(std::memory_order_acquire); }

  Region* const region_;
  const ShmOptions options_;
  const FrameLimits limits_;
  internal::UniqueFd socket_;
  internal::UniqueFd send_doorbell_;     // the peer's receive doorbell
  internal::UniqueFd receive_doorbell_;  // ours
  const std::string peer_;
  const uint32_t depth_;

  // Senders, one at a time.
  std::mutex send_mu_;
  uint64_t sent_ ABSL_GUARDED_BY(send_mu_) = 0;
  uint64_t consumed_seen_ ABSL_GUARDED_BY(send_mu_) = 0;

  // The receive side's single consumer: the poller or a leading caller.
  std::atomic<bool> polling_{false};
  uint64_t received_ = 0;  // under polling_
  std::atomic<bool> poller_asleep_{false};
  std::shared_ptr<ConnectionHandler> handler_;

  std::atomic<bool> closed_{false};
  std::mutex close_mu_;
  Status close_reason_ ABSL_GUARDED_BY(close_mu_);
};

Status State::Send(Frame frame) {
  if (closed()) return absl::UnavailableError(absl::StrCat("shm connection to ", peer_, " is closed"));
  if (frame.attachments.size() > kMaxParts - 2) {
    return absl::InvalidArgumentError(absl::StrCat("shm carries at most ", kMaxParts - 2, " attachments per message, not ",
                                                   frame.attachments.size()));
  }
  frame.SetLengthsFromParts();
  const Clock::time_point deadline = frame.header.timeout_us == 0
                                         ? Clock::time_point::max()
                                         : Clock::now() + std::chrono::microseconds(frame.header.timeout_us);
  uint8_t header[kWireHeaderSize];
  EncodeWireHeader(frame.header, std::span<uint8_t, kWireHeaderSize>(header));
  const auto part_count = static_cast<uint32_t>(2 + frame.attachments.size());
  Buffer* parts[kMaxParts] = {&frame.metadata, &frame.message};
  for (size_t i = 0; i < frame.attachments.size(); ++i) parts[2 + i] = &frame.attachments[i];
  DescriptorPart where[kMaxParts];
  for (uint32_t i = 0; i < part_count; ++i) {
    Buffer& part = *parts[i];
    where[i] = {0, part.size()};
    if (part.empty()) continue;
    if (std::optional<uint64_t> theirs = region_->PeerOffset(part)) {
      where[i].offset = *theirs | kInReceiverSlab;  // sent back, not copied
      continue;
    }
    if (!region_->LocalOffset(part)) {
      ZCRPC_ASSIGN_OR_RETURN(part, PlaceInSlab(std::move(part), deadline));
    }
    where[i].offset = *region_->LocalOffset(part);
  }
  {
    std::lock_guard lock(send_mu_);
    // The receiver's index is read only when the ring looks full, so in the
    // steady state its cache line stays on the receiver's core.
    for (int round = 0; sent_ - consumed_seen_ >= depth_; Backoff(round)) {
      const uint64_t consumed = region_->send_control().consumed.load(std::memory_order_acquire);
      if (consumed > sent_ || consumed < consumed_seen_) {
        Close(absl::DataLossError(absl::StrCat("shm peer's consumer index ", consumed, " is outside [",
                                               consumed_seen_, ", ", sent_, "]")));
      }
      consumed_seen_ = consumed;
      if (closed()) return absl::UnavailableError(absl::StrCat("shm connection to ", peer_, " is closed"));
      if (sent_ - consumed_seen_ < depth_) break;
      if (Clock::now() >= deadline) {
        return absl::ResourceExhaustedError(absl::StrCat("shm ring to ", peer_, " stayed full until the deadline"));
      }
    }
    Descriptor& slot = region_->send_ring()[sent_ & (depth_ - 1)];
    slot.part_count = part_count;
    slot.reserved = 0;
    for (uint32_t i = 0; i < part_count; ++i) slot.part(i) = where[i];
    std::memcpy(slot.header, header, sizeof header);
    for (uint32_t i = 0; i < part_count; ++i) {
      if (parts[i]->empty()) continue;
      if (where[i].offset & kInReceiverSlab) region_->GiveBack(std::move(*parts[i]));
      else region_->Lend(std::move(*parts[i]));
    }
    // Sequentially consistent, so that it is ordered before RingPeer's look
    // at the receiver's flag (the receiver does the mirror image in Sleep).
    slot.sequence.store(++sent_, std::memory_order_seq_cst);
  }
  RingPeer();
  return absl::OkStatus();
}

StatusOr<Buffer> State::PlaceInSlab(Buffer part, Clock::time_point deadline) {
  const uint64_t slab = region_->layout().params.slab_bytes;
  if (part.size() > slab) {
    return absl::ResourceExhaustedError(absl::StrCat("a ", part.size(), "-byte part does not fit the ", slab,
                                                     "-byte shm slab (raise slab_mb in the server's URI)"));
  }
  for (int round = 0;; Backoff(round)) {
    Buffer placed = region_->Allocate(part.size());
    if (!placed.empty()) {
      CountedCopy(placed.data(), part.data(), part.size());
      return placed;
    }
    if (closed()) return absl::UnavailableError(absl::StrCat("shm connection to ", peer_, " is closed"));
    if (Clock::now() >= deadline) {
      return absl::ResourceExhaustedError(
          absl::StrCat("shm slab to ", peer_, " stayed full until the deadline (the peer holds its buffers)"));
    }
  }
}

// The other half of Sleep(): after publishing (a seq_cst store), the sender
// looks at the receiver's flag (a seq_cst load); the receiver sets its flag
// and then looks at the ring the same way, so one of them sees the other.
void State::RingPeer() {
  std::atomic<uint32_t>& sleeping = region_->send_control().receiver_sleeping;
  if (sleeping.load(std::memory_order_seq_cst) != 0 && sleeping.exchange(0) != 0) {
    const uint64_t one = 1;
    (void)!write(send_doorbell_.get(), &one, sizeof one);
  }
}

void State::Start(std::shared_ptr<ConnectionHandler> handler) {
  handler_ = std::move(handler);
  std::thread([self = shared_from_this()] { self->PollerLoop(); }).detach();
}

void State::Close(const Status& reason) {
  {
    std::lock_guard lock(close_mu_);
    if (closed_.load()) return;
    close_reason_ = reason;
    closed_.store(true, std::memory_order_release);
  }
  shutdown(socket_.get(), SHUT_RDWR);  // the peer sees the hang-up
  Wake();
}

bool State::PeerHungUp() {
  pollfd fd{socket_.get(), POLLIN | POLLRDHUP, 0};
  // Nothing is sent on the socket after the handshake: any event is the end.
  return poll(&fd, 1, 0) > 0;
}

void State::Sleep() {
  RingControl& ring = region_->receive_control();
  poller_asleep_.store(true, std::memory_order_seq_cst);
  const bool caller_polls = polling_.load(std::memory_order_seq_cst);
  // While a caller polls, it keeps the flag clear and re-arms it when done.
  if (!caller_polls) ring.receiver_sleeping.store(1, std::memory_order_seq_cst);
  if ((!caller_polls && HasIncoming()) || closed()) {
    ring.receiver_sleeping.store(0, std::memory_order_relaxed);
    poller_asleep_.store(false, std::memory_order_relaxed);
    return;
  }
  pollfd fds[2] = {{receive_doorbell_.get(), POLLIN, 0}, {socket_.get(), POLLIN | POLLRDHUP, 0}};
  int ready = poll(fds, 2, -1);
  poller_asleep_.store(false, std::memory_order_relaxed);
  ring.receiver_sleeping.store(0, std::memory_order_relaxed);
  if (ready < 0) return;  // EINTR: look again
  if (fds[0].revents & POLLIN) {
    uint64_t count;
    (void)!read(receive_doorbell_.get(), &count, sizeof count);
  }
  if (fds[1].revents != 0) Close(absl::UnavailableError(absl::StrCat("shm peer ", peer_, " hung up")));
}

void State::PollerLoop() {
  Clock::time_point idle_since = Clock::now();
  Clock::time_point next_liveness_check = idle_since + kLivenessInterval;
  while (!closed()) {
    if (TryLockPolling()) {
      const bool worked = DrainLocked();
      UnlockPolling();
      if (worked) {
        idle_since = Clock::now();
        continue;
      }
    } else {
      Sleep();  // a caller leads; it wakes us if it leaves frames behind
      continue;
    }
    const Clock::time_point now = Clock::now();
    const bool keep_spinning = options_.busy_poll || now - idle_since < options_.spin;
    // Housekeeping every millisecond and before sleeping, not on every spin:
    // reading the return ring's index pulls a cache line from the peer.
    if (now >= next_liveness_check || !keep_spinning) {
      if (PeerHungUp()) Close(absl::UnavailableError(absl::StrCat("shm peer ", peer_, " hung up")));
      CheckReturns();
      next_liveness_check = now + kLivenessInterval;
    }
    if (keep_spinning) {
      CpuRelax();
      continue;
    }
    Sleep();
    idle_since = Clock::now();
  }
  // Wait out a leading caller (it sees closed_ and leaves), then report.
  while (!TryLockPolling()) std::this_thread::yield();
  region_->MarkClosed();
  Status reason;
  {
    std::lock_guard lock(close_mu_);
    reason = close_reason_;
  }
  handler_->OnClosed(reason);
  handler_.reset();
  UnlockPolling();
}

bool State::DrainLocked() {
  Descriptor* ring = region_->receive_ring();
  bool worked = false;
  while (!closed()) {
    const Descriptor& slot = ring[received_ & (depth_ - 1)];
    const uint64_t sequence = slot.sequence.load(std::memory_order_acquire);
    if (sequence != received_ + 1) {
      if (sequence != EmptySlotSequence(received_)) {
        Close(absl::DataLossError(absl::StrCat("shm peer ", peer_, " broke the protocol: descriptor slot ",
                                               received_ & (depth_ - 1), " has sequence ", sequence, ", expected ",
                                               received_ + 1, " or ", EmptySlotSequence(received_))));
        return true;
      }
      return worked;
    }
    worked = true;
    // Copy the descriptor out first: the peer may rewrite the slot.
    ReceivedDescriptor descriptor;
    descriptor.part_count = slot.part_count;
    std::memcpy(descriptor.header, slot.header, sizeof descriptor.header);
    for (uint32_t i = 0; i < std::min(descriptor.part_count, kMaxParts); ++i) descriptor.parts[i] = slot.part(i);
    region_->receive_control().consumed.store(++received_, std::memory_order_release);
    Frame frame;
    if (Status decoded = DecodeDescriptor(descriptor, &frame); !decoded.ok()) {
      Close(absl::DataLossError(absl::StrCat("shm peer ", peer_, " broke the protocol: ", decoded.message())));
      return true;
    }
    handler_->OnFrame(std::move(frame));
  }
  return worked;
}

Status State::DecodeDescriptor(const ReceivedDescriptor& descriptor, Frame* frame) {
  ZCRPC_ASSIGN_OR_RETURN(frame->header,
                         DecodeWireHeader(std::span<const uint8_t, kWireHeaderSize>(descriptor.header)));
  const WireHeader& h = frame->header;
  if (descriptor.part_count != 2 + uint64_t{h.attachment_count} || descriptor.part_count > kMaxParts) {
    return absl::DataLossError(absl::StrCat("descriptor has ", descriptor.part_count, " parts for ",
                                            h.attachment_count, " attachments (at most ", kMaxParts - 2, ")"));
  }
  uint64_t attachments_len = 0;
  for (uint32_t i = 2; i < descriptor.part_count; ++i) {
    attachments_len += kAttachmentLengthSize + descriptor.parts[i].length;
  }
  if (descriptor.parts[0].length != h.metadata_len || descriptor.parts[1].length != h.message_len ||
      attachments_len != h.attachments_len) {
    return absl::DataLossError("descriptor part lengths disagree with its header");
  }
  const bool over_limits = !CheckLimits(h, limits_).ok();
  for (uint32_t i = 0; i < descriptor.part_count; ++i) {
    const DescriptorPart& part = descriptor.parts[i];
    if (part.length == 0) continue;
    Buffer buffer;
    if (part.offset & kInReceiverSlab) {
      ZCRPC_ASSIGN_OR_RETURN(buffer, region_->TakeBackLocalBlock(part.offset & ~kInReceiverSlab, part.length));
    } else {
      ZCRPC_ASSIGN_OR_RETURN(buffer, region_->TakePeerBlock(part.offset, part.length));
    }
    if (over_limits) continue;  // handed straight back: the body is discarded
    if (i == 0) frame->metadata = std::move(buffer);
    else if (i == 1) frame->message = std::move(buffer);
    else frame->attachments.push_back(std::move(buffer));
  }
  frame->body_discarded = over_limits;
  return absl::OkStatus();
}

bool State::PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) {
  if (closed() || !TryLockPolling()) return false;
  RingControl& ring = region_->receive_control();
  ring.receiver_sleeping.store(0, std::memory_order_relaxed);  // we are looking: no doorbell needed
  const Clock::time_point end = Clock::now() + std::max<std::chrono::nanoseconds>(budget, options_.spin);
  while (!closed()) {
    DrainLocked();
    if (done()) break;
    if (Clock::now() >= end) break;
    CpuRelax();
  }
  UnlockPolling();
  // If the poller sleeps, hand the ring back to it: re-arm the doorbell,
  // and wake it for anything that came in meanwhile.
  if (poller_asleep_.load(std::memory_order_seq_cst)) {
    ring.receiver_sleeping.store(1, std::memory_order_seq_cst);
    if (HasIncoming() || closed()) Wake();
  }
  return true;
}

class ShmConnection final : public Connection {
 public:
  explicit ShmConnection(std::shared_ptr<State> state) : state_(std::move(state)) {}
  ~ShmConnection() override { state_->Close(absl::CancelledError("shm connection destroyed")); }

  Buffer Allocate(size_t size) override { return state_->Allocate(size); }
  Status Send(Frame frame) override { return state_->Send(std::move(frame)); }
  void Start(std::shared_ptr<ConnectionHandler> handler) override { state_->Start(std::move(handler)); }
  void Close(const Status& reason) override { state_->Close(reason); }
  std::string peer() const override { return state_->peer(); }
  bool PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget) override {
    return state_->PollUntil(done, budget);
  }

 private:
  std::shared_ptr<State> state_;
};

}  // namespace

StatusOr<std::unique_ptr<Connection>> MakeShmConnection(ShmEndpoint endpoint, const ShmOptions& options,
                                                        const ConnectionOptions& connection_options) {
  ZCRPC_ASSIGN_OR_RETURN(Region * region, Region::Map(endpoint.memfd.release(), endpoint.params, endpoint.is_server));
  auto state = std::make_shared<State>(std::move(endpoint), region, options, connection_options);
  return std::unique_ptr<Connection>(std::make_unique<ShmConnection>(std::move(state)));
}

}  // namespace zcrpc::transport::shm
