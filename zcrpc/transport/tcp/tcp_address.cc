#include "zcrpc/transport/tcp/tcp_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "zcrpc/transport/uri.h"

namespace zcrpc::transport::tcp {

std::string FormatTcpUri(std::string_view host, uint16_t port) {
  return host.find(':') != std::string_view::npos ? absl::StrCat("tcp://[", ToAbsl(host), "]:", port)
                                                   : absl::StrCat("tcp://", ToAbsl(host), ":", port);
}

StatusOr<TcpAddress> TcpAddress::Parse(std::string_view address) {
  TcpAddress out;
  const AddressOptions split = SplitAddressOptions(address);
  ZCRPC_RETURN_IF_ERROR(SplitHostPort(split.base, &out.host, &out.port));
  for (const auto& option : split.options) {
    const auto& [key, value] = option;
    auto bad = [&option] { return InvalidOption("tcp", option); };
    uint64_t number = 0;
    const bool numeric = absl::SimpleAtoi(value, &number);
    if (key == "busy_poll_us") {
      if (!numeric || number > 10'000'000) return bad();
      out.options.busy_poll = std::chrono::microseconds(number);
    } else if (key == "zerocopy_send") {
      if (value == "auto") out.options.zerocopy_send = ZeroCopySend::kAuto;
      else if (value == "on") out.options.zerocopy_send = ZeroCopySend::kOn;
      else if (value == "off") out.options.zerocopy_send = ZeroCopySend::kOff;
      else return bad();
    } else if (key == "zerocopy_receive") {
      if (value != "probe" && value != "off") return bad();
      out.options.probe_zerocopy_receive = value == "probe";
    } else if (key == "zerocopy_min_bytes") {
      if (!numeric) return bad();
      out.options.zerocopy_min_bytes = number;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown tcp option '", key, "' (busy_poll_us, zerocopy_send, zerocopy_min_bytes, zerocopy_receive)"));
    }
  }
  return out;
}

std::string SocketUri(int fd, bool peer) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  if ((peer ? ::getpeername(fd, sa, &len) : ::getsockname(fd, sa, &len)) != 0) return "tcp://?";
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    return FormatTcpUri(text, ntohs(in6->sin6_port));
  }
  auto* in = reinterpret_cast<sockaddr_in*>(&addr);
  ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
  return FormatTcpUri(text, ntohs(in->sin_port));
}

}  // namespace zcrpc::transport::tcp
