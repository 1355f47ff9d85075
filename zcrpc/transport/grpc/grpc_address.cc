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
  if (!split.options.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("grpc address '", ToAbsl(address), "': unknown option '", split.options.front().first, "'"));
  }
  GrpcAddress parsed;
  if (Status s = SplitHostPort(split.base, &parsed.host, &parsed.port); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("grpc address '", ToAbsl(address), "': ", s.message()));
  }
  return parsed;
}

}  // namespace zcrpc::transport::grpc_bridge
