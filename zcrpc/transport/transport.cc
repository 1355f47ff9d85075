#include "zcrpc/transport/transport.h"

#include <condition_variable>
#include <mutex>
#include <optional>

#include "zcrpc/transport/internal/delivery_scope.h"

namespace zcrpc::transport {

bool InDeliveryThread() { return internal::DeliveryScope::Active(); }

StatusOr<std::unique_ptr<Connection>> ConnectAndWait(Transport& transport, const Uri& uri,
                                                     const ConnectionOptions& options) {
  if (InDeliveryThread()) {
    return absl::FailedPreconditionError(
        "ConnectAndWait on a thread that delivers a connection's frames would stall that connection");
  }
  struct Result {
    std::mutex mu;
    std::condition_variable done;
    std::optional<StatusOr<std::unique_ptr<Connection>>> value;
  };
  auto result = std::make_shared<Result>();
  transport.Connect(uri, options, [result](StatusOr<std::unique_ptr<Connection>> connection) {
    std::lock_guard lock(result->mu);
    result->value.emplace(std::move(connection));
    result->done.notify_all();
  });
  std::unique_lock lock(result->mu);
  result->done.wait(lock, [&] { return result->value.has_value(); });
  return std::move(*result->value);
}

}  // namespace zcrpc::transport
