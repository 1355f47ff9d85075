#include "zcrpc/rpc/service.h"

#include "absl/strings/str_cat.h"

namespace zcrpc {

void Service::AddUnsupportedMethod(const MethodDescriptor& descriptor) {
  methods_.push_back({descriptor, [path = descriptor.path](ServerContext*, std::span<const uint8_t>, Buffer*) {
                        return absl::UnimplementedError(
                            absl::StrCat(ToAbsl(path), " is a streaming method; zcrpc does not serve streaming yet"));
                      }});
}

Status UnimplementedMethod(std::string_view path) {
  return absl::UnimplementedError(absl::StrCat(ToAbsl(path), " is not implemented by this server"));
}

}  // namespace zcrpc
