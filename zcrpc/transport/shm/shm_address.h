// The address part of an shm URI: "shm://NAME[?option=value&...]".
//   NAME     an abstract Unix socket name ("orders"), or an absolute path
//            ("/run/orders.sock", created with `mode`). A trailing '*' is
//            replaced by a unique token when listening, as port 0 is for tcp.
//   slab_mb=64        server: each direction's buffer slab, MiB, a power of two
//   ring_depth=256    server: descriptors per direction, a power of two
//   allow_uid=UID|any server: who may connect (default: the server's own uid)
//   mode=0600         server: permissions of a path socket
//   spin_us=50        either side: how long the poller spins before it sleeps
//   busy_poll=0|1     either side: the poller never sleeps
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "zcrpc/base/status.h"
#include "zcrpc/transport/shm/region_layout.h"
#include "zcrpc/transport/shm/shm_connection.h"

namespace zcrpc::transport::shm {

struct ShmAddress {
  std::string name;  // as given (after '*' expansion when listening)
  RegionParams params;
  ShmOptions options;
  std::optional<uid_t> allow_uid;  // nullopt: anyone who can reach the socket
  mode_t mode = 0600;

  bool is_path() const { return !name.empty() && name.front() == '/'; }
  // The URI a client dials: scheme, name, no server-side options.
  std::string uri() const { return "shm://" + name; }

  // INVALID_ARGUMENT for an empty name, an unknown option or a bad value.
  static StatusOr<ShmAddress> Parse(std::string_view address);
};

}  // namespace zcrpc::transport::shm
