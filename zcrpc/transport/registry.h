// Registry: maps a URI scheme to a transport. A transport is created from
// its factory on first use and lives as long as the registry. Users add
// their own schemes with Register(); nothing registers itself statically.
//
// Default() holds the built-in transports (tcp, shm, loopback). Thread-safe.
#pragma once

#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/base/thread_annotations.h"
#include "zcrpc/transport/transport.h"

namespace zcrpc::transport {

class Registry {
 public:
  using Factory = std::function<std::unique_ptr<Transport>()>;

  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // ALREADY_EXISTS if `scheme` is taken.
  Status Register(std::string scheme, Factory factory);
  // The transport for `scheme`, created on first use. INVALID_ARGUMENT
  // naming the known schemes if none is registered.
  StatusOr<Transport*> Find(std::string_view scheme);

  // The process-wide registry with the built-in transports. Never destroyed
  // (its poller threads may serve connections until exit).
  static Registry& Default();

 private:
  struct Entry {
    Factory factory;
    std::unique_ptr<Transport> transport;
  };
  std::mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

// Adds tcp (and the other built-in transports as they land) to `registry`.
void RegisterBuiltinTransports(Registry& registry);

}  // namespace zcrpc::transport
