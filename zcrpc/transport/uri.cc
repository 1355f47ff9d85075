#include "zcrpc/transport/uri.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace zcrpc::transport {

StatusOr<Uri> Uri::Parse(std::string_view text) {
  size_t sep = text.find("://");
  if (sep == std::string_view::npos || sep == 0 || sep + 3 == text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", ToAbsl(text), "' is not a URI of the form scheme://address (e.g. tcp://127.0.0.1:50051)"));
  }
  std::string_view scheme = text.substr(0, sep);
  for (char c : scheme) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '.' || c == '-';
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("invalid URI scheme '", ToAbsl(scheme), "'"));
  }
  return Uri{std::string(scheme), std::string(text.substr(sep + 3))};
}

AddressOptions SplitAddressOptions(std::string_view address) {
  AddressOptions out;
  const size_t question = address.find('?');
  out.base = std::string(address.substr(0, question));
  if (question == std::string_view::npos) return out;
  for (absl::string_view option : absl::StrSplit(ToAbsl(address.substr(question + 1)), '&', absl::SkipEmpty())) {
    out.options.push_back(absl::StrSplit(option, absl::MaxSplits('=', 1)));
  }
  return out;
}

Status InvalidOption(std::string_view scheme, const std::pair<std::string, std::string>& option) {
  return absl::InvalidArgumentError(
      absl::StrCat(ToAbsl(scheme), " option ", option.first, "=", option.second, " is not valid"));
}

Status SplitHostPort(std::string_view address, std::string* host, uint16_t* port) {
  std::string_view h, p;
  if (!address.empty() && address.front() == '[') {
    size_t close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("'", ToAbsl(address), "' is not [ipv6]:port"));
    }
    h = address.substr(1, close - 1);
    p = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("'", ToAbsl(address), "' has no :port"));
    }
    h = address.substr(0, colon);
    p = address.substr(colon + 1);
  }
  uint32_t value = 0;
  if (h.empty() || !absl::SimpleAtoi(ToAbsl(p), &value) || value > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", ToAbsl(address), "' is not host:port"));
  }
  *host = std::string(h);
  *port = static_cast<uint16_t>(value);
  return absl::OkStatus();
}

}  // namespace zcrpc::transport
