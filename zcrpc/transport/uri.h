// Uri: "scheme://address", the string users pass to Channel::Create and
// Server::AddListener. The scheme picks the transport; the address is the
// transport's to parse (host:port for tcp, a name for shm).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "zcrpc/base/status.h"

namespace zcrpc::transport {

struct Uri {
  std::string scheme;
  std::string address;

  // INVALID_ARGUMENT unless `text` is "scheme://address" with a non-empty
  // scheme of [a-z0-9+.-] and a non-empty address.
  static StatusOr<Uri> Parse(std::string_view text);
  std::string ToString() const { return scheme + "://" + address; }
};

// An address with options, "base?key=value&key2=value2", split into the
// base and the options in order (an option without '=' has an empty value).
// Each transport decides which keys and values it accepts.
struct AddressOptions {
  std::string base;
  std::vector<std::pair<std::string, std::string>> options;
};
AddressOptions SplitAddressOptions(std::string_view address);
// INVALID_ARGUMENT: "SCHEME option KEY=VALUE is not valid".
Status InvalidOption(std::string_view scheme, const std::pair<std::string, std::string>& option);

// Splits "host:port" or "[v6]:port". INVALID_ARGUMENT on anything else.
Status SplitHostPort(std::string_view address, std::string* host, uint16_t* port);

}  // namespace zcrpc::transport
