#include "zcrpc/transport/tcp/tcp_address.h"

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
  for (const auto& [key, value] : split.options) {
    auto bad = [&] {
      return absl::InvalidArgumentError(absl::StrCat("tcp option ", key, "=", value, " is not valid"));
    };
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

}  // namespace zcrpc::transport::tcp
