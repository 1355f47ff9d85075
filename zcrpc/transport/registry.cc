#include "zcrpc/transport/registry.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace zcrpc::transport {

Status Registry::Register(std::string scheme, Factory factory) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = entries_.try_emplace(std::move(scheme), Entry{std::move(factory), nullptr});
  if (!inserted) return absl::AlreadyExistsError(absl::StrCat("scheme '", it->first, "' is already registered"));
  return absl::OkStatus();
}

StatusOr<Transport*> Registry::Find(std::string_view scheme) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(ToAbsl(scheme));
  if (it == entries_.end()) {
    std::vector<std::string> known;
    for (const auto& [name, entry] : entries_) known.push_back(name);
    std::sort(known.begin(), known.end());
    return absl::InvalidArgumentError(absl::StrCat("no transport for scheme '", ToAbsl(scheme),
                                                   "' (known: ", absl::StrJoin(known, ", "), ")"));
  }
  if (it->second.transport == nullptr) it->second.transport = it->second.factory();
  return it->second.transport.get();
}

Registry& Registry::Default() {
  static Registry* registry = [] {
    auto* r = new Registry();
    RegisterBuiltinTransports(*r);
    return r;
  }();
  return *registry;
}

}  // namespace zcrpc::transport
