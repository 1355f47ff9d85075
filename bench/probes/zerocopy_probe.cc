// zerocopy_probe: measures, on this machine's loopback, the mechanisms the
// tcp transport could use to avoid copies, so docs/zero-copy.md and every
// benchmark run can say which of them pays here:
//   - memcpy of a page against mremap of a page (remap vs copy),
//   - plain send against MSG_ZEROCOPY (and how many completions say the
//     kernel copied anyway),
//   - recv against TCP_ZEROCOPY_RECEIVE from a plain and from a MSG_ZEROCOPY
//     sender (and how much the kernel actually mapped).
// Streams 1 MiB writes between two threads for --seconds per case; the
// receiver checksums every byte, so each path does the same work with the
// data. Prints one line: PROBE {json}.
#include <time.h>

#include <linux/errqueue.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPage = 4096;
constexpr size_t kChunk = 1 << 20;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

void Die(const char* what) {
  std::fprintf(stderr, "zerocopy_probe: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

// ns per page for memcpy, and for mremap of `pages` pages, from many tries.
struct RemapFigures {
  double memcpy_ns_per_page;
  double mremap_ns_one_page;
  double mremap_ns_per_page_64;
};

RemapFigures MeasureRemap() {
  constexpr int kTries = 2000;
  const size_t span = 64 * kPage;
  auto* a = static_cast<uint8_t*>(mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* b = static_cast<uint8_t*>(mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (a == MAP_FAILED || b == MAP_FAILED) Die("mmap");
  std::memset(a, 1, span);
  std::memset(b, 2, span);
  RemapFigures f{};
  auto start = Clock::now();
  for (int i = 0; i < kTries; ++i) {
    std::memcpy(b + (i % 64) * kPage, a + ((i + 7) % 64) * kPage, kPage);
    asm volatile("" ::: "memory");
  }
  f.memcpy_ns_per_page = Seconds(start) * 1e9 / kTries;
  for (size_t pages : {size_t{1}, size_t{64}}) {
    start = Clock::now();
    for (int i = 0; i < kTries / 4; ++i) {
      // Move the pages to b and back; each move touches a page so it is
      // really mapped, as a received buffer would be.
      if (mremap(a, pages * kPage, pages * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, b) == MAP_FAILED) Die("mremap");
      b[0] = 3;
      if (mremap(b, pages * kPage, pages * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, a) == MAP_FAILED) Die("mremap");
      a[0] = 4;
    }
    const double per_move = Seconds(start) * 1e9 / (kTries / 2);
    if (pages == 1) f.mremap_ns_one_page = per_move;
    else f.mremap_ns_per_page_64 = per_move / static_cast<double>(pages);
  }
  munmap(a, span);
  munmap(b, span);
  return f;
}

void Connected(int* client, int* server) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listener, 1) != 0) Die("listen");
  socklen_t len = sizeof addr;
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  *client = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(*client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) Die("connect");
  *server = accept(listener, nullptr, nullptr);
  close(listener);
}

struct StreamFigures {
  double gbytes_per_s = 0;
  uint64_t zerocopy_completions = 0;
  uint64_t copied_completions = 0;
  double mapped_fraction = 0;  // of the bytes received, how many TCP_ZEROCOPY_RECEIVE mapped
};

uint64_t Sum(const uint8_t* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    s += v;
  }
  return s;
}

// Reaps MSG_ZEROCOPY completions; returns how many sends they covered.
uint64_t Reap(int fd, StreamFigures* f) {
  uint64_t done = 0;
  for (;;) {
    alignas(cmsghdr) char control[128];
    msghdr msg{};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return done;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      sock_extended_err err;
      std::memcpy(&err, CMSG_DATA(c), sizeof err);
      if (err.ee_origin != SO_EE_ORIGIN_ZEROCOPY) continue;
      const uint64_t n = uint64_t{err.ee_data - err.ee_info} + 1;
      done += n;
      f->zerocopy_completions += n;
      if (err.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) f->copied_completions += n;
    }
  }
}

StreamFigures Stream(bool zerocopy_send, bool zerocopy_receive, double seconds) {
  int client, server;
  Connected(&client, &server);
  int one = 1;
  if (zerocopy_send && setsockopt(client, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one) != 0) Die("SO_ZEROCOPY");
  StreamFigures f;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> received{0}, mapped{0};
  std::thread receiver([&] {
    std::vector<uint8_t> buffer(kChunk);
    void* window = nullptr;
    if (zerocopy_receive) {
      window = mmap(nullptr, kChunk, PROT_READ, MAP_SHARED, server, 0);
      if (window == MAP_FAILED) Die("mmap of the socket");
    }
    uint64_t sink = 0;
    for (;;) {
      if (zerocopy_receive) {
        tcp_zerocopy_receive zc{};
        zc.address = reinterpret_cast<uint64_t>(window);
        zc.length = kChunk;
        socklen_t zc_len = sizeof zc;
        if (getsockopt(server, IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE, &zc, &zc_len) != 0) {
          if (received.load() == 0) Die("TCP_ZEROCOPY_RECEIVE");
          break;  // the kernel reports the end of the stream this way (EIO after the FIN)
        }
        if (zc.length > 0) {
          sink += Sum(static_cast<uint8_t*>(window), zc.length);
          mapped += zc.length;
          received += zc.length;
        }
        if (zc.recv_skip_hint > 0 || zc.length == 0) {
          size_t want = zc.recv_skip_hint > 0 ? zc.recv_skip_hint : buffer.size();
          ssize_t n = recv(server, buffer.data(), want, 0);
          if (n <= 0) break;
          sink += Sum(buffer.data(), static_cast<size_t>(n));
          received += static_cast<uint64_t>(n);
        }
      } else {
        ssize_t n = recv(server, buffer.data(), buffer.size(), 0);
        if (n <= 0) break;
        sink += Sum(buffer.data(), static_cast<size_t>(n));
        received += static_cast<uint64_t>(n);
      }
    }
    if (window != nullptr) munmap(window, kChunk);
    asm volatile("" ::"r"(sink));
  });

  // Page-aligned source buffers, as the transport's pool hands out; with
  // MSG_ZEROCOPY a buffer is reused only after its completion.
  constexpr int kBuffers = 16;
  std::vector<uint8_t*> buffers;
  for (int i = 0; i < kBuffers; ++i) {
    auto* b = static_cast<uint8_t*>(std::aligned_alloc(kPage, kChunk));
    std::memset(b, i + 1, kChunk);
    buffers.push_back(b);
  }
  uint64_t sent_calls = 0, completed = 0;
  const auto start = Clock::now();
  while (Seconds(start) < seconds) {
    if (zerocopy_send) {
      while (sent_calls - completed >= kBuffers) {
        completed += Reap(client, &f);
        pollfd p{client, 0, 0};
        if (sent_calls - completed >= kBuffers) poll(&p, 1, 1);
      }
    }
    uint8_t* b = buffers[sent_calls % kBuffers];
    size_t off = 0;
    while (off < kChunk) {
      ssize_t n = send(client, b + off, kChunk - off, zerocopy_send ? MSG_ZEROCOPY : 0);
      if (n < 0) Die("send");
      off += static_cast<size_t>(n);
      if (zerocopy_send) ++sent_calls;
    }
    if (!zerocopy_send) ++sent_calls;
  }
  shutdown(client, SHUT_WR);
  receiver.join();
  f.gbytes_per_s = static_cast<double>(received.load()) / Seconds(start) / 1e9;
  if (zerocopy_send) {
    for (int i = 0; i < 100 && completed < sent_calls; ++i) {
      completed += Reap(client, &f);
      usleep(1000);
    }
  }
  f.mapped_fraction = received.load() ? static_cast<double>(mapped.load()) / static_cast<double>(received.load()) : 0;
  close(client);
  close(server);
  for (uint8_t* b : buffers) std::free(b);
  (void)stop;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 0.5;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--seconds=", 10) == 0) seconds = std::atof(argv[i] + 10);
  }
  const RemapFigures remap = MeasureRemap();
  const StreamFigures plain = Stream(false, false, seconds);
  const StreamFigures zc_send = Stream(true, false, seconds);
  const StreamFigures zc_receive_plain = Stream(false, true, seconds);
  const StreamFigures zc_both = Stream(true, true, seconds);
  std::printf(
      "PROBE {\"memcpy_ns_per_page\": %.1f, \"mremap_ns_one_page\": %.1f, \"mremap_ns_per_page_of_64\": %.1f, "
      "\"send_gbytes_per_s\": %.2f, \"msg_zerocopy_gbytes_per_s\": %.2f, \"msg_zerocopy_completions\": %llu, "
      "\"msg_zerocopy_copied_completions\": %llu, \"zerocopy_receive_from_plain_sender_gbytes_per_s\": %.2f, "
      "\"zerocopy_receive_from_plain_sender_mapped_fraction\": %.3f, "
      "\"zerocopy_receive_from_zerocopy_sender_gbytes_per_s\": %.2f, "
      "\"zerocopy_receive_from_zerocopy_sender_mapped_fraction\": %.3f}\n",
      remap.memcpy_ns_per_page, remap.mremap_ns_one_page, remap.mremap_ns_per_page_64, plain.gbytes_per_s,
      zc_send.gbytes_per_s, static_cast<unsigned long long>(zc_send.zerocopy_completions),
      static_cast<unsigned long long>(zc_send.copied_completions), zc_receive_plain.gbytes_per_s,
      zc_receive_plain.mapped_fraction, zc_both.gbytes_per_s, zc_both.mapped_fraction);
  return 0;
}
