#include "zcrpc/transport/shm/shm_connection.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/clock.h"
#include "zcrpc/base/copy_stats.h"
#include "zcrpc/transport/internal/capabilities.h"
#include "zcrpc/transport/internal/close_once.h"
#include "zcrpc/transport/internal/delivery_scope.h"
#include "zcrpc/transport/internal/read_ownership.h"
#include "zcrpc/transport/internal/send_budget.h"
#include "zcrpc/transport/shm/region.h"
#include "zcrpc/transport/shm/shm_poller.h"

namespace zcrpc::transport::shm {
namespace {

int64_t Now() { return Clock::Real().NowNanos(); }

// While frames are pending the poller looks at the stall clock at least
// this often, even asleep.
constexpr int64_t kPendingTendNanos = 20'000'000;

// A descriptor as copied out of the ring, out of the peer's reach.
struct ReceivedDescriptor {
  uint32_t part_count;
  uint8_t header[kWireHeaderSize];
  DescriptorPart parts[kMaxParts];
};

// The slab block a part of `size` bytes takes (SlabAllocator: 4 KiB << k).
uint64_t BlockFor(uint64_t size) { return std::max<uint64_t>(kPage, std::bit_ceil(size)); }

// Half the slab: a frame's blocks (powers of two) then fit an empty slab,
// with room left for the next frame while the peer holds it. Both
// directions' slabs have the same size, so the peer's (what frames this
// side holds live in) is `slab_bytes` too.
Capabilities ShmCapabilities(const ShmEndpoint& endpoint, uint64_t slab_bytes) {
  Capabilities caps = internal::NegotiateCapabilities(
      endpoint.mine, endpoint.theirs,
      FrameLimits{slab_bytes / 2, static_cast<uint32_t>(std::min<uint64_t>(slab_bytes / 2, UINT32_MAX)),
                  kMaxParts - 2},
      /*caller_can_poll=*/true);
  caps.receive_memory_bytes = slab_bytes;
  return caps;
}

class State final : public Pollable, public std::enable_shared_from_this<State> {
 public:
  State(ShmEndpoint endpoint, Region* region, const ShmOptions& options, const ConnectionOptions& connection_options,
        std::shared_ptr<Poller> poller)
      : region_(region),
        poller_(std::move(poller)),
        options_(options),
        limits_(connection_options.limits),
        caps_(ShmCapabilities(endpoint, region->layout().params.slab_bytes)),
        socket_(std::move(endpoint.socket)),
        peer_(std::move(endpoint.peer)),
        depth_(region->layout().params.ring_depth),
        budget_(connection_options.send_budget_bytes, connection_options.send_stall_timeout) {}

  ~State() override { region_->Unref(); }

  Buffer Allocate(size_t size) {
    // While frames wait for room, the slab's free blocks are the queue
    // head's: a frame built now queues behind it and must not hold them
    // (see TryPublishLocked). A pool buffer instead, copied into the slab
    // when its turn comes (a counted copy, as for any pool part).
    if (pending_flag_.load(std::memory_order_acquire)) return BufferPool::Default().Allocate(size);
    Buffer buffer = region_->Allocate(size);
    // The slab is full right now: likewise a pool buffer.
    if (buffer.empty() && size > 0) buffer = BufferPool::Default().Allocate(size);
    return buffer;
  }

  Status Send(Frame frame);
  bool writable() { return budget_.writable(); }
  Status WaitWritable(int64_t deadline_nanos) { return budget_.WaitWritable(deadline_nanos, close_, peer_); }
  const Capabilities& capabilities() const { return caps_; }
  void Start(std::shared_ptr<ConnectionHandler> handler);
  void Close(const Status& reason);
  bool PollUntil(absl::FunctionRef<bool()> done, std::chrono::nanoseconds budget);
  const std::string& peer() const { return peer_; }

  // Pollable, on the poller thread.
  void Attach(Poller& poller) override;
  bool Poll() override;
  void OnEvent(int which, uint32_t events) override;
  bool Tend(int64_t now) override;
  bool PrepareSleep() override;
  void AfterSleep() override;
  int64_t deadline_nanos() const override {
    return pending_flag_.load(std::memory_order_acquire) ? Now() + std::min(budget_.stall_nanos(), kPendingTendNanos)
                                                         : 0;
  }
  int64_t spin_nanos() const override { return options_.spin.count(); }
  bool busy_poll() const override { return options_.busy_poll; }
  void Shutdown() override;

 private:
  enum class Publish { kDone, kBlocked, kClosed };
  struct Pending {
    Frame frame;
    uint64_t bytes;
  };

  Status ClosedError() const { return absl::UnavailableError(absl::StrCat("shm connection to ", peer_, " is closed")); }
  // RESOURCE_EXHAUSTED if the frame's blocks could never fit the slab at
  // once (the caps' body limit leaves room, but tiny parts take 4 KiB each).
  Status CheckFitsSlab(const Frame& frame) const;
  // Takes a descriptor slot and blocks for the frame's pool parts (all or
  // none), copies them in and publishes the frame; or leaves it for a later
  // try, holding no slab block unless it waits only for a slot.
  Publish TryPublishLocked(Frame& frame) ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_);
  // Moves the frame's parts that are blocks of our slab into pool buffers
  // (counted copies) and frees the blocks: a frame that waits for blocks
  // must not hold any, or it may hold what the queue's head needs.
  void GiveUpBlocks(Frame& frame);
  // Publishes pending frames while there is room; calls OnWritable when
  // the budget says one is owed. REQUIRES: holding the receive side.
  bool Flush();
  // Delivers every frame in the receive ring. REQUIRES: holding the
  // receive side. Returns whether there was any.
  bool DrainLocked();
  Status DecodeDescriptor(const ReceivedDescriptor& descriptor, Frame* frame);
  // Whether the next descriptor is there (or the slot holds garbage, which
  // the next drain reports). Only this side writes `consumed`.
  bool HasIncoming() {
    const uint64_t next = region_->receive_control().consumed.load(std::memory_order_relaxed);
    const uint64_t sequence = region_->receive_ring()[next & (depth_ - 1)].sequence.load(std::memory_order_seq_cst);
    return sequence != EmptySlotSequence(next);
  }
  // What slot `n % depth` holds before descriptor n arrives: the previous
  // lap's descriptor, or 0 on the first lap.
  uint64_t EmptySlotSequence(uint64_t n) const { return n >= depth_ ? n + 1 - depth_ : 0; }
  // Takes back returned buffers; a bad return closes the connection.
  void CheckReturns() {
    Status returns = region_->returns_error();
    if (returns.ok()) returns = region_->ReclaimReturns();
    if (!returns.ok()) {
      Close(absl::DataLossError(absl::StrCat("shm peer ", peer_, " broke the protocol: ", returns.message())));
    }
  }
  void RingPeer();
  // Wakes this connection's poller (our own doorbell).
  void Wake() {
    const uint64_t one = 1;
    (void)!write(region_->receive_doorbell(), &one, sizeof one);
  }
  // A caller that read while the poller slept (Release() == true) hands the
  // receive side back: re-arm the doorbell flag, then look (the Dekker
  // pair described above RingPeer), and wake the poller for anything it
  // must do. Another caller may hold the receive side by now; it re-arms
  // too when it lets go, so a flag set here while it reads is only a
  // possible spurious ring.
  void Rearm() {
    region_->receive_control().receiver_sleeping.store(1, std::memory_order_seq_cst);
    if (HasIncoming() || close_.closed() || pending_flag_.load(std::memory_order_acquire)) Wake();
  }
  // Delivers OnClosed. REQUIRES: holding the receive side, closed.
  void Finish();

  Region* const region_;
  const std::shared_ptr<Poller> poller_;
  const ShmOptions options_;
  const FrameLimits limits_;
  const Capabilities caps_;
  internal::UniqueFd socket_;
  const std::string peer_;
  const uint32_t depth_;

  internal::CloseOnce close_;
  internal::SendBudget budget_;

  // Senders, one at a time, and the frames waiting for room.
  std::mutex send_mu_;
  uint64_t sent_ ABSL_GUARDED_BY(send_mu_) = 0;
  uint64_t consumed_seen_ ABSL_GUARDED_BY(send_mu_) = 0;
  std::deque<Pending> pending_ ABSL_GUARDED_BY(send_mu_);
  std::atomic<bool> pending_flag_{false};  // !pending_.empty(), for lock-free looks

  // The receive side: one reader at a time (the poller or a PollUntil
  // caller); what follows is touched only by that reader.
  internal::ReadOwnership own_;
  std::atomic<bool> started_{false};
  uint64_t received_ = 0;
  std::shared_ptr<ConnectionHandler> handler_;
  bool finished_ = false;       // OnClosed delivered; the reader keeps the ownership for good
  bool socket_watched_ = false;  // poller thread only
};

Status State::CheckFitsSlab(const Frame& frame) const {
  uint64_t blocks = 0;
  auto add = [&](const Buffer& part) {
    if (part.empty() || region_->PeerOffset(part)) return;
    blocks += region_->LocalOffset(part) ? part.capacity() : BlockFor(part.size());
  };
  add(frame.metadata);
  add(frame.message);
  for (const Buffer& a : frame.attachments) add(a);
  const uint64_t slab = region_->layout().params.slab_bytes;
  if (blocks > slab) {
    return absl::ResourceExhaustedError(absl::StrCat("a frame whose parts take ", blocks, " bytes of slab blocks does not fit the ",
                                                     slab, "-byte shm slab to ", peer_, " (raise slab_mb in the server's URI)"));
  }
  return absl::OkStatus();
}

Status State::Send(Frame frame) {
  if (close_.closed()) return ClosedError();
  ZCRPC_RETURN_IF_ERROR(internal::CheckFrameFits(caps_, frame, peer_));
  ZCRPC_RETURN_IF_ERROR(CheckFitsSlab(frame));
  frame.SetLengthsFromParts();
  bool first_pending = false;
  {
    std::unique_lock lock(send_mu_);
    if (close_.closed()) return ClosedError();
    // Frames keep their order: once one waits, later ones queue behind it.
    if (pending_.empty()) {
      switch (TryPublishLocked(frame)) {
        case Publish::kDone:
          lock.unlock();
          RingPeer();
          return absl::OkStatus();
        case Publish::kClosed:
          return ClosedError();
        case Publish::kBlocked:
          break;
      }
    }
    const uint64_t bytes = internal::QueuedMemory(frame);
    first_pending = pending_.empty();
    // Blocks go to frames in queue order; one behind others holds none (it
    // was built before the queue began, or on another thread meanwhile).
    // Freeing them rings our doorbell if the head waits for a block.
    if (!first_pending) GiveUpBlocks(frame);
    pending_.push_back(Pending{std::move(frame), bytes});
    pending_flag_.store(true, std::memory_order_release);
    budget_.Queued(bytes);
  }
  // The poller takes over: it flushes as the peer makes room, and asks the
  // peer to ring when it does (sender_waiting) before it sleeps.
  if (first_pending) Wake();
  return absl::OkStatus();
}

State::Publish State::TryPublishLocked(Frame& frame) {
  const auto part_count = static_cast<uint32_t>(2 + frame.attachments.size());
  Buffer* parts[kMaxParts] = {&frame.metadata, &frame.message};
  for (size_t i = 0; i < frame.attachments.size(); ++i) parts[2 + i] = &frame.attachments[i];
  // A slot first: a frame that waits for one takes no blocks meanwhile. The
  // receiver's index is read only when the ring looks full, so in the
  // steady state its cache line stays on the receiver's core.
  if (sent_ - consumed_seen_ >= depth_) {
    const uint64_t consumed = region_->send_control().consumed.load(std::memory_order_acquire);
    if (consumed > sent_ || consumed < consumed_seen_) {
      Close(absl::DataLossError(absl::StrCat("shm peer ", peer_, " broke the protocol: its consumer index ", consumed,
                                             " is outside [", consumed_seen_, ", ", sent_, "]")));
      return Publish::kClosed;
    }
    consumed_seen_ = consumed;
    if (sent_ - consumed_seen_ >= depth_) return Publish::kBlocked;
  }
  // Parts outside the region (pool memory) need blocks, all at once.
  size_t sizes[kMaxParts];
  uint32_t needs[kMaxParts];
  uint32_t needed = 0;
  bool holds_blocks = false;
  auto collect = [&] {
    needed = 0;
    holds_blocks = false;
    for (uint32_t i = 0; i < part_count; ++i) {
      const Buffer& part = *parts[i];
      if (part.empty() || region_->PeerOffset(part)) continue;
      if (region_->LocalOffset(part)) {
        holds_blocks = true;
      } else {
        needs[needed] = i;
        sizes[needed++] = part.size();
      }
    }
  };
  collect();
  if (needed > 0) {
    Buffer blocks[kMaxParts];
    bool placed = region_->AllocateBlocks({sizes, needed}, {blocks, needed});
    if (!placed && holds_blocks) {
      // Its own blocks may be what keeps the rest from fitting (the buddy
      // slab fragments): it waits holding none, and takes all at once.
      GiveUpBlocks(frame);
      collect();
      placed = region_->AllocateBlocks({sizes, needed}, {blocks, needed});
    }
    if (!placed) return Publish::kBlocked;
    for (uint32_t k = 0; k < needed; ++k) {
      Buffer& part = *parts[needs[k]];
      CountedCopy(blocks[k].data(), part.data(), part.size());
      part = std::move(blocks[k]);
    }
  }
  DescriptorPart where[kMaxParts];
  for (uint32_t i = 0; i < part_count; ++i) {
    const Buffer& part = *parts[i];
    where[i] = {0, part.size()};
    if (part.empty()) continue;
    if (std::optional<uint64_t> theirs = region_->PeerOffset(part)) {
      where[i].offset = *theirs | kInReceiverSlab;  // sent back, not copied
    } else {
      where[i].offset = *region_->LocalOffset(part);
    }
  }
  uint8_t header[kWireHeaderSize];
  EncodeWireHeader(frame.header, std::span<uint8_t, kWireHeaderSize>(header));
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
  // at the receiver's flag (the receiver does the mirror image before it
  // sleeps).
  slot.sequence.store(++sent_, std::memory_order_seq_cst);
  return Publish::kDone;
}

void State::GiveUpBlocks(Frame& frame) {
  auto give_up = [this](Buffer& part) {
    if (part.empty() || !region_->LocalOffset(part)) return;
    Buffer copy = BufferPool::Default().Allocate(part.size());
    CountedCopy(copy.data(), part.data(), part.size());
    part = std::move(copy);  // the block is freed here
  };
  give_up(frame.metadata);
  give_up(frame.message);
  for (Buffer& a : frame.attachments) give_up(a);
}

// --- Sleeping and waking: the protocol ---
//
// Two flags in the shared RingControl of a direction, each a Dekker pair
// between the two processes, and one ReadOwnership between the threads of
// this process that read the receive ring.
//
// receiver_sleeping (our receive direction): "ring my doorbell".
//   Set to 1 by whoever guarantees the poller will be woken: the poller in
//   PrepareSleep() while it holds the receive side, or a caller in Rearm()
//   after it let go of a receive side whose poller sleeps. Each set is a
//   seq_cst store FOLLOWED by a seq_cst load of the next slot's sequence
//   (HasIncoming) (plus close and pending looks); something there: wake
//   now (the poller does not sleep, Rearm rings our own doorbell).
//   The peer's sender stores the sequence (seq_cst, TryPublishLocked) and
//   THEN loads the flag (seq_cst, RingPeer); if set it exchanges it to 0 and
//   rings. Both sides store-then-load in the single total order of seq_cst
//   operations, so either the receiver's load sees the frame or the
//   sender's load sees the flag: never neither.
//   Cleared (relaxed) by a thread that looks at the ring itself and so does
//   not need the ring: a PollUntil caller when it takes the receive side,
//   the poller on waking (AfterSleep) or when it found work. A clear is the
//   only way to lose a wake-up, so every clear by a caller while the poller
//   sleeps is followed, by that same caller, by Rearm() (its store is later
//   in the flag's modification order: program order). That duty is
//   ReadOwnership's asleep states: a caller that takes the receive side
//   while the poller sleeps (kIdle -> kHeldAsleep), or holds it when the
//   poller goes to sleep (AcquireOrParkToSleep: -> kHeldAsleep), gets true
//   from Release(), which leaves kIdle so that the NEXT caller re-arms too,
//   until the poller wakes (Resume). A poller's own clear (AfterSleep) is
//   made while it is awake; it sets the flag again in PrepareSleep, or finds
//   a caller holding (kHeldAsleep), whose Release synchronizes with the
//   poller's park and so re-arms after that clear.
//   Invariant: while the poller sleeps in epoll_wait, either the flag was
//   set after the last clear and the ring was looked at after that set, or
//   a caller holds the receive side and will re-arm when it lets go.
//
// sender_waiting (our send direction): "ring me when you make room".
//   Set to 1 by the poller in PrepareSleep() only while frames are pending
//   (seq_cst store, then a seq_cst fence, then Flush(), which reads the
//   peer's `consumed` and, for want of a block, `returns_produced`). The
//   peer stores `consumed` (DrainLocked) or `returns_produced`
//   (ReturnPeerBlock), then a seq_cst fence or store, then loads the flag
//   (WakeWaitingSender) and rings if it exchanged it from 1. The same
//   store-then-load on both sides. Only the peer clears it. While a caller
//   holds the receive side it flushes itself, and its Rearm() wakes the
//   poller if frames are still pending, which then sets the flag.
//
// Room made in this process: a block of our slab freed here (a buffer the
//   runtime let go, or one a frame queued behind the head gave up) is
//   nobody's business of the peer, so no sender_waiting rings for it.
//   Instead the head's all-or-nothing allocation (Region::AllocateBlocks)
//   sets a local flag and then looks for blocks; a local free frees and
//   then looks at the flag, clearing it and ringing our own doorbell if
//   set. A seq_cst fence on each side between the two: never neither.
//   (Before, nothing rang and the head waited for the poller's next look
//   at its stall clock, kPendingTendNanos.)
//
// Who gets the room: blocks go to frames in queue order. Allocate hands
// out pool memory while frames wait, a frame that queues behind another
// gives up its blocks (GiveUpBlocks), and the head takes all the blocks it
// needs at once or none. Otherwise a frame behind the head could hold what
// the head needs and nothing would move until send_stall_timeout: it did,
// when a caller's Allocate took the blocks the peer had just returned for
// the head and then queued behind it.
//
// Our own doorbell (the receive doorbell eventfd) is rung by the peer, by
// Wake() (Send's first pending frame, Close, Rearm) and by a local free the
// head waits for; the poller drains it in OnEvent and then always looks at
// the ring again before it sleeps.

// The sender's half of the receiver_sleeping pair (above): the sequence was
// stored seq_cst by TryPublishLocked, now the flag is loaded seq_cst.
void State::RingPeer() {
  std::atomic<uint32_t>& sleeping = region_->send_control().receiver_sleeping;
  if (sleeping.load(std::memory_order_seq_cst) != 0 && sleeping.exchange(0) != 0) {
    const uint64_t one = 1;
    (void)!write(region_->send_doorbell(), &one, sizeof one);
  }
}

bool State::Flush() {
  uint64_t drained = 0;
  {
    std::lock_guard lock(send_mu_);
    while (!pending_.empty() && TryPublishLocked(pending_.front().frame) == Publish::kDone) {
      drained += pending_.front().bytes;
      pending_.pop_front();
    }
    pending_flag_.store(!pending_.empty(), std::memory_order_release);
  }
  if (drained == 0) return false;
  RingPeer();
  if (budget_.Drained(drained) && !close_.closed()) {
    internal::DeliveryScope delivering;
    handler_->OnWritable();
  }
  return true;
}

// The connection joined its poller when it was made (MakeShmConnection), so
// frames it sends before Start() still go out as the peer makes room; only
// delivery waits for Start(), and until then received frames stay in the
// ring (the peer's sends queue: the contract's "not drained").
void State::Start(std::shared_ptr<ConnectionHandler> handler) {
  auto self = shared_from_this();
  const bool posted = poller_->Post([self, handler]() mutable {
    if (self->finished_) {  // closed before it started: OnClosed all the same
      internal::DeliveryScope delivering;
      handler->OnClosed(self->close_.reason());
      return;
    }
    self->handler_ = std::move(handler);
    self->started_.store(true, std::memory_order_release);
  });
  if (posted) return;
  // The transport is gone: nothing will ever read this connection.
  handler_ = std::move(handler);
  started_.store(true, std::memory_order_release);
  Close(absl::UnavailableError(absl::StrCat("the shm transport of the connection to ", peer_, " is gone")));
  if (own_.TryAcquire()) Finish();
}

void State::Attach(Poller& poller) {
  poller.Watch(region_->receive_doorbell(), EPOLLIN, this, 0);
  poller.Watch(socket_.get(), EPOLLIN | EPOLLRDHUP, this, 1);
  socket_watched_ = true;
}

void State::Close(const Status& reason) {
  if (!close_.Close(reason)) return;
  shutdown(socket_.get(), SHUT_RDWR);  // the peer sees the hang-up
  Wake();
  budget_.WakeAll();
}

void State::OnEvent(int which, uint32_t events) {
  if (finished_) return;
  if (which == 0) {
    uint64_t count;
    (void)!read(region_->receive_doorbell(), &count, sizeof count);
    return;
  }
  // Nothing is sent on the socket after the handshake: any event is the
  // end. Stop watching it, or the level-triggered epoll reports it forever.
  (void)events;
  if (socket_watched_) {
    poller_->Unwatch(socket_.get());
    socket_watched_ = false;
  }
  Close(absl::UnavailableError(absl::StrCat("shm peer ", peer_, " hung up")));
}

bool State::Poll() {
  if (finished_ || !own_.TryAcquire()) return false;  // a caller reads meanwhile
  bool worked = false;
  if (!close_.closed()) {
    if (started_.load(std::memory_order_acquire)) worked = DrainLocked();
    if (pending_flag_.load(std::memory_order_acquire)) worked |= Flush();
  }
  own_.Release();  // the poller is awake: nobody parked it
  return worked;
}

bool State::Tend(int64_t now) {
  if (finished_) return false;
  if (!close_.closed()) {
    if (budget_.Stalled(now)) {
      Close(absl::UnavailableError(absl::StrCat(
          "shm peer ", peer_, " stopped taking frames: the send queue (", budget_.queued(),
          " bytes) made no progress for ", budget_.stall_nanos() / 1'000'000, " ms (send_stall_timeout)")));
    } else {
      CheckReturns();
    }
  }
  if (!close_.closed()) return true;
  // A caller inside PollUntil sees the close and hands the receive side
  // back (it wakes us); then OnClosed follows its last OnFrame.
  if (!own_.AcquireOrPark()) return true;
  Finish();
  return false;
}

void State::Finish() {
  region_->MarkClosed();
  std::deque<Pending> dropped;
  {
    std::lock_guard lock(send_mu_);
    dropped.swap(pending_);
    pending_flag_.store(false, std::memory_order_release);
  }
  dropped.clear();
  budget_.WakeAll();
  if (poller_->OnThread()) {
    poller_->Unwatch(region_->receive_doorbell());
    if (socket_watched_) poller_->Unwatch(socket_.get());
    socket_watched_ = false;
  }
  finished_ = true;
  if (handler_ != nullptr) {
    internal::DeliveryScope delivering;
    handler_->OnClosed(close_.reason());
  }
  handler_.reset();
  // The receive side stays held: PollUntil now always answers false.
}

bool State::PrepareSleep() {
  if (finished_) return true;
  // A caller reads: it (and every caller after it until AfterSleep)
  // re-arms the doorbell when it lets go.
  if (!own_.AcquireOrParkToSleep()) return true;
  bool idle = !close_.closed();
  if (idle) {
    RingControl& ring = region_->receive_control();
    ring.receiver_sleeping.store(1, std::memory_order_seq_cst);
    // Before Start() received frames wait in the ring: they are no work.
    if (started_.load(std::memory_order_acquire) && HasIncoming()) idle = false;
    if (pending_flag_.load(std::memory_order_acquire)) {
      // Ask the peer to ring when it consumes or returns something, then
      // look once more (it stores its index, then looks at the flag).
      region_->send_control().sender_waiting.store(1, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (Flush()) idle = false;
    }
    if (!idle) ring.receiver_sleeping.store(0, std::memory_order_relaxed);
  }
  if (idle) own_.LetGoToSleep();
  else own_.Release();
  return idle;
}

void State::AfterSleep() {
  if (finished_) return;
  own_.Resume();
  // Awake again: the peer need not ring. (A caller that re-arms meanwhile
  // costs one spurious ring, which clears the flag.)
  region_->receive_control().receiver_sleeping.store(0, std::memory_order_relaxed);
}

void State::Shutdown() {
  Close(absl::CancelledError(absl::StrCat("the shm transport of the connection to ", peer_, " is shutting down")));
  if (finished_) return;
  // A PollUntil caller sees the close and leaves within its next look.
  while (!own_.AcquireOrPark()) std::this_thread::yield();
  Finish();
}

bool State::DrainLocked() {
  Descriptor* ring = region_->receive_ring();
  bool worked = false;
  while (!close_.closed()) {
    const Descriptor& slot = ring[received_ & (depth_ - 1)];
    const uint64_t sequence = slot.sequence.load(std::memory_order_acquire);
    if (sequence != received_ + 1) {
      if (sequence != EmptySlotSequence(received_)) {
        Close(absl::DataLossError(absl::StrCat("shm peer ", peer_, " broke the protocol: descriptor slot ",
                                               received_ & (depth_ - 1), " has sequence ", sequence, ", expected ",
                                               received_ + 1, " or ", EmptySlotSequence(received_))));
        return true;
      }
      break;
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
    internal::DeliveryScope delivering;
    handler_->OnFrame(std::move(frame));
  }
  if (worked) {
    // The peer may wait for the slots we just freed (sender_waiting): make
    // `consumed` visible before looking at its flag.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    region_->WakeWaitingSender();
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
  if (!started_.load(std::memory_order_acquire) || close_.closed() || !own_.TryAcquire()) return false;
  if (finished_ || close_.closed()) {
    if (!finished_ && own_.Release()) Rearm();
    return false;
  }
  region_->receive_control().receiver_sleeping.store(0, std::memory_order_relaxed);  // we look: no doorbell
  int64_t progress_at = Now();
  const int64_t end = progress_at + std::max<std::chrono::nanoseconds>(budget, options_.spin).count();
  while (!close_.closed()) {
    bool progress = DrainLocked();
    if (pending_flag_.load(std::memory_order_acquire)) progress |= Flush();
    if (done()) break;
    const int64_t now = Now();
    if (now >= end) break;
    if (progress) progress_at = now;
    // The peer, or our poller, may be waiting for this very vCPU.
    SpinPause(now - progress_at);
  }
  // If the poller slept meanwhile (or parked us), hand the ring back to it.
  if (own_.Release()) Rearm();
  return true;
}

class ShmConnection final : public Connection {
 public:
  explicit ShmConnection(std::shared_ptr<State> state) : state_(std::move(state)) {}
  ~ShmConnection() override { state_->Close(absl::CancelledError("shm connection destroyed")); }

  Buffer Allocate(size_t size) override { return state_->Allocate(size); }
  Status Send(Frame frame) override { return state_->Send(std::move(frame)); }
  bool writable() override { return state_->writable(); }
  Status WaitWritable(int64_t deadline_nanos) override { return state_->WaitWritable(deadline_nanos); }
  Capabilities capabilities() const override { return state_->capabilities(); }
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
                                                        const ConnectionOptions& connection_options,
                                                        std::shared_ptr<Poller> poller) {
  ZCRPC_ASSIGN_OR_RETURN(Region * region, Region::Map(endpoint.memfd.release(), endpoint.params, endpoint.is_server,
                                                      endpoint.doorbell));
  auto state = std::make_shared<State>(std::move(endpoint), region, options, connection_options, poller);
  // Served from now on (sends flush, the peer's hang-up is seen); frames
  // are delivered once Start() is called.
  if (!poller->Add(state)) {
    return absl::UnavailableError("the shm transport is shutting down");
  }
  return std::unique_ptr<Connection>(std::make_unique<ShmConnection>(std::move(state)));
}

}  // namespace zcrpc::transport::shm
