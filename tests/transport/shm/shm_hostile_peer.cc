// A hostile shm client: does the real handshake, then breaks the protocol
// in one chosen way by writing straight into the shared region, rings the
// victim's doorbell and waits for the victim to hang up.
//   shm_hostile_peer NAME ATTACK
// Prints "CLOSED" and exits 0 if the victim closed the connection within
// 5 s; exits 1 otherwise, 2 on a setup failure.
//
// Handshake attacks (ATTACK starts with "preface-") send a preface the
// victim must refuse instead of the real one, then print the victim's
// answer: "REFUSED <status>" and exit 0, or "ACCEPTED" and exit 1.
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <string>

#include "zcrpc/base/wire.h"
#include "zcrpc/transport/shm/handshake.h"
#include "zcrpc/transport/shm/region_layout.h"

namespace shm = zcrpc::transport::shm;

namespace {

struct Peer {
  uint8_t* base = nullptr;
  shm::RegionLayout layout;
  shm::ShmEndpoint endpoint;

  shm::RingControl& control(int dir) { return reinterpret_cast<shm::RingControl*>(base + layout.control)[dir]; }
  shm::Descriptor* ring(int dir) { return reinterpret_cast<shm::Descriptor*>(base + layout.descriptors[dir]); }
  uint64_t* returns(int dir) { return reinterpret_cast<uint64_t*>(base + layout.returns[dir]); }
  uint8_t* slab(int dir) { return base + layout.slab[dir]; }

  // The fields of a descriptor, before they go into a slot.
  struct Fields {
    uint32_t part_count = 2;
    uint8_t header[zcrpc::kWireHeaderSize] = {};
    shm::DescriptorPart parts[shm::kMaxParts] = {};
  };
  uint64_t sent = 0;

  // A well-formed request header for a message of `message_len` bytes.
  static Fields Request(uint64_t call_id, uint32_t message_len) {
    Fields d;
    zcrpc::WireHeader h;
    h.type = zcrpc::FrameType::kRequest;
    h.call_id = call_id;
    h.method_id = 1;
    h.message_len = message_len;
    zcrpc::EncodeWireHeader(h, std::span<uint8_t, zcrpc::kWireHeaderSize>(d.header));
    return d;
  }

  // Writes descriptor `d` into the next slot and publishes it.
  void Publish(const Fields& d) {
    shm::Descriptor& slot = ring(shm::kClientToServer)[sent % layout.params.ring_depth];
    slot.part_count = d.part_count;
    for (uint32_t i = 0; i < std::min(d.part_count, shm::kMaxParts); ++i) slot.part(i) = d.parts[i];
    std::memcpy(slot.header, d.header, sizeof d.header);
    slot.sequence.store(++sent);
  }

  void RingVictim() {
    const uint64_t one = 1;
    (void)!write(endpoint.doorbell[shm::kClientToServer].get(), &one, sizeof one);
  }

  // Waits for the victim's reply descriptor; returns its message part.
  bool AwaitReply(shm::DescriptorPart* part) {
    shm::Descriptor& slot = ring(shm::kServerToClient)[0];
    for (int i = 0; i < 5000; ++i) {
      if (slot.sequence.load() == 1) {
        *part = slot.part(1);
        control(shm::kServerToClient).consumed.store(1);
        return true;
      }
      usleep(1000);
    }
    return false;
  }

  void Return(uint64_t offset) {
    shm::RingControl& c = control(shm::kServerToClient);
    const uint64_t at = c.returns_produced.load();
    returns(shm::kServerToClient)[at % layout.return_capacity] = offset;
    c.returns_produced.store(at + 1);
  }
};

bool Attack(Peer& p, const std::string& attack) {
  const uint64_t slab = p.layout.params.slab_bytes;
  std::memset(p.slab(shm::kClientToServer), 'x', 2 * shm::kPage);
  if (attack == "offset-outside-slab") {
    auto d = Peer::Request(1, 64);
    d.parts[1] = {slab + shm::kPage, 64};
    p.Publish(d);
  } else if (attack == "offset-unaligned") {
    auto d = Peer::Request(1, 64);
    d.parts[1] = {100, 64};
    p.Publish(d);
  } else if (attack == "length-past-slab") {
    auto d = Peer::Request(1, 8192);
    d.parts[1] = {slab - shm::kPage, 8192};
    p.Publish(d);
  } else if (attack == "lengths-disagree") {
    auto d = Peer::Request(1, 64);
    d.parts[1] = {0, 128};
    p.Publish(d);
  } else if (attack == "too-many-parts") {
    auto d = Peer::Request(1, 64);
    d.part_count = 40;
    p.Publish(d);
  } else if (attack == "bad-header") {
    auto d = Peer::Request(1, 64);
    std::memcpy(d.header, "GET / HTTP/1.1\r\n", 16);
    p.Publish(d);
  } else if (attack == "bad-sequence") {
    p.ring(shm::kClientToServer)[0].sequence.store(p.layout.params.ring_depth + 7);
  } else if (attack == "double-send") {
    // Two frames naming one block while the victim still holds the first.
    auto d = Peer::Request(1, 64);
    d.parts[1] = {0, 64};
    p.Publish(d);
    d = Peer::Request(2, 64);
    d.parts[1] = {0, 64};
    p.Publish(d);
  } else if (attack == "hang-up") {
    // Dies right after the handshake: the victim must see the hang-up.
    std::printf("CLOSED\n");
    std::fflush(stdout);
    _exit(0);
  } else if (attack == "bogus-return") {
    p.Return(0);  // the victim never lent us anything
  } else if (attack == "double-return") {
    auto d = Peer::Request(1, 64);
    d.parts[1] = {0, 64};
    p.Publish(d);
    p.RingVictim();
    shm::DescriptorPart reply{};
    if (!p.AwaitReply(&reply)) {
      std::fprintf(stderr, "no reply from the victim\n");
      return false;
    }
    p.Return(reply.offset);
    p.Return(reply.offset);
    // A return is noticed when the victim next allocates: ask again.
    d = Peer::Request(3, 64);
    d.parts[1] = {shm::kPage, 64};
    p.Publish(d);
  } else {
    std::fprintf(stderr, "unknown attack %s\n", attack.c_str());
    return false;
  }
  p.RingVictim();
  return true;
}

// Sends something other than a good preface; prints what the victim says.
int AttackHandshake(int socket, const shm::ShmAddress& address, const std::string& attack) {
  uint8_t bytes[zcrpc::kPrefaceSize] = {};
  if (attack == "preface-version") {
    // A well-formed preface of a wire version from the future.
    zcrpc::Preface future = shm::MakePreface(zcrpc::PrefaceRole::kClient, {});
    future.version = zcrpc::kWireVersion + 1;
    zcrpc::EncodePreface(future, std::span<uint8_t, zcrpc::kPrefaceSize>(bytes));
  } else if (attack == "preface-garbage") {
    const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    std::memcpy(bytes, http, sizeof http - 1);
  } else if (attack == "preface-v1-frame") {
    // A version-1 client starts with a frame header, not a preface.
    zcrpc::WireHeader h;
    h.call_id = 1;
    h.method_id = 1;
    zcrpc::EncodeWireHeader(h, std::span<uint8_t, zcrpc::kWireHeaderSize>(bytes));
  } else {
    std::fprintf(stderr, "unknown attack %s\n", attack.c_str());
    return 2;
  }
  if (send(socket, bytes, sizeof bytes, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof bytes)) return 2;
  shm::HelloReader reader;
  for (int waited = 0; !reader.done(); waited += 10) {
    pollfd ready{socket, POLLIN, 0};
    if (waited > 5000) {
      std::printf("NO ANSWER\n");
      return 1;
    }
    if (poll(&ready, 1, 10) == 0) continue;
    zcrpc::Status answer = reader.ReadSome(socket, address);
    if (!answer.ok()) {
      std::printf("REFUSED %s\n", answer.ToString().c_str());
      return 0;
    }
  }
  std::printf("ACCEPTED\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s NAME ATTACK\n", argv[0]);
    return 2;
  }
  auto address = shm::ShmAddress::Parse(argv[1]);
  if (!address.ok()) return 2;
  zcrpc::transport::internal::UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string abstract = std::string("zcrpc/") + argv[1];
  std::memcpy(addr.sun_path + 1, abstract.data(), abstract.size());
  if (connect(socket.get(), reinterpret_cast<sockaddr*>(&addr),
              static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + abstract.size())) != 0) {
    std::perror("connect");
    return 2;
  }
  const std::string attack = argv[2];
  if (attack.rfind("preface-", 0) == 0) return AttackHandshake(socket.get(), *address, attack);
  auto endpoint = shm::ConnectHandshakeBlocking(std::move(socket), *address,
                                                shm::MakePreface(zcrpc::PrefaceRole::kClient, {}),
                                                std::chrono::milliseconds(5000));
  if (!endpoint.ok()) {
    std::fprintf(stderr, "handshake: %s\n", endpoint.status().ToString().c_str());
    return 2;
  }
  Peer peer;
  peer.layout = shm::RegionLayout::For(endpoint->params);
  void* base = mmap(nullptr, peer.layout.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, endpoint->memfd.get(), 0);
  if (base == MAP_FAILED) return 2;
  peer.base = static_cast<uint8_t*>(base);
  peer.endpoint = *std::move(endpoint);
  if (!Attack(peer, argv[2])) return 2;

  pollfd hangup{peer.endpoint.socket.get(), POLLIN | POLLRDHUP, 0};
  if (poll(&hangup, 1, 5000) == 1) {
    std::printf("CLOSED\n");
    return 0;
  }
  std::printf("STILL OPEN\n");
  return 1;
}
