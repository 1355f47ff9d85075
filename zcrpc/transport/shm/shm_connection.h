// ShmConnection: one connection of the shm transport once the handshake
// (handshake.h) is done: frames go out as descriptors on the send ring,
// their parts as blocks of this side's slab; frames come in from the
// receive ring, their parts handed to the runtime as Buffers into the
// peer's slab. No byte of a message is copied unless the runtime hands
// Send a buffer that is not in the region (then once, counted).
//
// Send never waits: a frame that finds no descriptor slot or no slab block
// joins a per-connection pending queue (internal::SendBudget accounts it),
// which whoever reads the connection flushes as the peer makes room: the
// transport's poller thread (shm_poller.h), or a caller inside PollUntil.
// The peer rings this side's doorbell when it made room and this side
// asked for it (RingControl::sender_waiting); a block freed in this process
// rings it too when the queue's head waits for one. Slab blocks go to
// frames in queue order: while frames wait, Allocate returns pool memory
// and a frame queued behind others holds no block.
//
// Threads: Allocate, Send, writable, WaitWritable, Close and capabilities
// from any thread; frames, OnWritable and OnClosed are delivered by the
// one thread that holds the receive side (internal::ReadOwnership).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "zcrpc/base/wire.h"
#include "zcrpc/transport/shm/region_layout.h"
#include "zcrpc/transport/internal/unique_fd.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport::shm {

class Poller;

struct ShmOptions {
  // How long a poller spins after this connection's last frame before it
  // sleeps (the poller spins while any of its connections wants to), and
  // the least a PollUntil caller polls. Past kSpinBeforeYieldNanos without
  // work a spinning thread yields its CPU between looks (shm_poller.h).
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  // The poller never sleeps while this connection is open: lowest latency,
  // one core per poller thread (idle, it yields between looks, so a thread
  // that shares its CPU still runs).
  bool busy_poll = false;
};

// What the handshake hands over.
struct ShmEndpoint {
  internal::UniqueFd socket;       // kept open: its hang-up is how a dead peer shows
  internal::UniqueFd memfd;
  internal::UniqueFd doorbell[2];  // eventfd per direction, written by that direction's sender
  RegionParams params;
  bool is_server = false;
  Preface mine;    // what this side announced
  Preface theirs;  // what the peer announced, checked
  std::string peer;  // for logs: "shm://name (pid 123, uid 1000)"
};

// Maps the region; the connection is served by `poller` once started.
StatusOr<std::unique_ptr<Connection>> MakeShmConnection(ShmEndpoint endpoint, const ShmOptions& options,
                                                        const ConnectionOptions& connection_options,
                                                        std::shared_ptr<Poller> poller);

}  // namespace zcrpc::transport::shm
