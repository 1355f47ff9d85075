// Method identity on one connection (docs/wire.md, "Method identity").
//
// A request names its method by a binding id that the client chose for
// this connection. The first request that uses an id carries the method's
// full path (kFlagMethodPath, a ":path" metadata entry) and binds the id to
// it on both sides; later ones carry only the id. So an unknown path can
// never reach a registered method (there is no hash to collide), and an
// error can always name the path.
//
// ClientMethodBindings: the client's side, one per connection. Lock-free:
// any number of calling threads look up and claim ids at once.
// ServerMethodBindings: the server's side, touched only by the thread that
// delivers the connection's frames, so it takes no lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/status.h"
#include "zcrpc/rpc/method.h"

namespace zcrpc::internal {

class ClientMethodBindings {
 public:
  // Ids the client may bind on one connection; past this, requests carry
  // their path every time (binding id 0). A service rarely has 100 methods.
  static constexpr uint32_t kCapacity = 1024;

  ClientMethodBindings() = default;
  ~ClientMethodBindings() {
    for (auto& slot : slots_) delete slot.path.load(std::memory_order_relaxed);
  }
  ClientMethodBindings(const ClientMethodBindings&) = delete;
  ClientMethodBindings& operator=(const ClientMethodBindings&) = delete;

  struct Binding {
    uint32_t id;          // 0: unbound, send the path every time
    bool send_path;       // this request must carry the path
  };

  // The binding for `method`'s path, claiming an id on first use.
  Binding Find(const MethodDescriptor& method) {
    uint32_t index = method.path_hash % kCapacity;
    for (uint32_t probe = 0; probe < kCapacity; ++probe, index = (index + 1) % kCapacity) {
      Slot& slot = slots_[index];
      const std::string* path = slot.path.load(std::memory_order_acquire);
      if (path == nullptr) {
        auto* mine = new std::string(method.path);
        if (slot.path.compare_exchange_strong(path, mine, std::memory_order_acq_rel)) {
          return {index + 1, true};
        }
        delete mine;  // another thread claimed the slot: `path` is theirs now
      }
      if (*path == method.path) return {index + 1, !slot.announced.load(std::memory_order_acquire)};
    }
    return {0, true};
  }

  // Call once the server answered a request that carried the path (with
  // anything but RESOURCE_EXHAUSTED, which may mean it discarded the body,
  // path and all): from then on requests may leave the path out. Until
  // then every request carries it, so no request ever names an id the
  // server has not bound.
  void MarkAnnounced(uint32_t id) {
    if (id != 0) slots_[id - 1].announced.store(true, std::memory_order_release);
  }

 private:
  struct Slot {
    std::atomic<const std::string*> path{nullptr};
    std::atomic<bool> announced{false};
  };
  Slot slots_[kCapacity];
};

// T: whatever the server resolves a path to (its method table entry).
template <typename T>
class ServerMethodBindings {
 public:
  // A client may bind this many ids on one connection.
  static constexpr uint32_t kMaxBindings = 1u << 16;

  struct Resolved {
    const T* method;        // nullptr: the path names no method here
    std::string_view path;  // valid until the next Bind(); a found method has its own
                            // (method->descriptor.path, static)
  };

  // Binds `id` (1-based; 0 means "no binding, this request only") to
  // `path`, resolved to `method` (nullptr if unknown). INVALID_ARGUMENT for
  // an id out of range or re-bound to another path: the peer broke the
  // protocol.
  StatusOr<Resolved> Bind(uint32_t id, std::string_view path, const T* method) {
    if (id == 0) {
      scratch_path_.assign(path.data(), path.size());
      return Resolved{method, scratch_path_};
    }
    if (id > kMaxBindings) return absl::InvalidArgumentError(absl::StrCat("method binding ", id, " is out of range"));
    if (bindings_.size() < id) bindings_.resize(id);
    Entry& e = bindings_[id - 1];
    if (e.bound && e.path != path) {
      return absl::InvalidArgumentError(absl::StrCat("method binding ", id, " re-bound from ", e.path, " to ",
                                                     absl::string_view(path.data(), path.size())));
    }
    if (!e.bound) {
      e.bound = true;
      e.path.assign(path.data(), path.size());
      e.method = method;
    }
    return Resolved{e.method, e.path};
  }

  // The binding a request without a path names. INVALID_ARGUMENT if it was
  // never bound on this connection.
  StatusOr<Resolved> Lookup(uint32_t id) const {
    if (id == 0 || id > bindings_.size() || !bindings_[id - 1].bound) {
      return absl::InvalidArgumentError(
          absl::StrCat("request names method binding ", id, ", which was never bound on this connection"));
    }
    const Entry& e = bindings_[id - 1];
    return Resolved{e.method, e.path};
  }

 private:
  struct Entry {
    bool bound = false;
    const T* method = nullptr;
    std::string path;
  };
  std::vector<Entry> bindings_;
  std::string scratch_path_;
};

}  // namespace zcrpc::internal
