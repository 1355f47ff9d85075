#include "zcrpc/transport/grpc/grpc_address.h"

#include "absl/strings/str_cat.h"
#include "zcrpc/transport/uri.h"

namespace zcrpc::transport::grpc_bridge {

std::string GrpcAddress::target() const {
  const bool v6 = host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
}

StatusOr<GrpcAddress> GrpcAddress::Parse(std::string_view address) {
  const AddressOptions split = SplitAddressOptions(address);
  GrpcAddress parsed;
  for (const auto& [key, value] : split.options) {
    if (key == "unary_api" && (value == "sync" || value == "callback")) {
      parsed.unary_api = value == "sync" ? UnaryApi::kSync : UnaryApi::kCallback;
      continue;
    }
    if (key == "unary_api") {
      return absl::InvalidArgumentError(absl::StrCat("grpc address '", ToAbsl(address), "': unary_api must be sync or callback, not '", value, "'"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("grpc address '", ToAbsl(address), "': unknown option '", key, "'"));
  }
  if (Status s = SplitHostPort(split.base, &parsed.host, &parsed.port); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("grpc address '", ToAbsl(address), "': ", s.message()));
  }
  return parsed;
}

}  // namespace zcrpc::transport::grpc_bridge
