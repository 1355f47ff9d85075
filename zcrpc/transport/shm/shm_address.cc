#include "zcrpc/transport/shm/shm_address.h"

#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "zcrpc/transport/uri.h"

namespace zcrpc::transport::shm {

StatusOr<ShmAddress> ShmAddress::Parse(std::string_view address) {
  ShmAddress out;
  out.allow_uid = geteuid();
  AddressOptions split = SplitAddressOptions(address);
  out.name = std::move(split.base);
  if (out.name.empty()) return absl::InvalidArgumentError("shm:// needs a name, e.g. shm://orders");
  if (out.name.size() > 100) {
    return absl::InvalidArgumentError(absl::StrCat("shm name '", out.name, "' is longer than 100 characters"));
  }
  for (const auto& option : split.options) {
    const auto& [key, value] = option;
    auto bad = [&option] { return InvalidOption("shm", option); };
    uint64_t number = 0;
    const bool numeric = absl::SimpleAtoi(value, &number);
    if (key == "slab_mb") {
      if (!numeric || number == 0 || number > (16u << 10)) return bad();
      out.params.slab_bytes = number << 20;
    } else if (key == "ring_depth") {
      if (!numeric || number > UINT32_MAX) return bad();
      out.params.ring_depth = static_cast<uint32_t>(number);
    } else if (key == "allow_uid") {
      if (value == "any") out.allow_uid.reset();
      else if (numeric && number <= UINT32_MAX) out.allow_uid = static_cast<uid_t>(number);
      else return bad();
    } else if (key == "mode") {
      uint32_t mode = 0;
      if (!absl::numbers_internal::safe_strtou32_base(value, &mode, 8) || mode > 0777) return bad();
      out.mode = static_cast<mode_t>(mode);
    } else if (key == "spin_us") {
      if (!numeric || number > 10'000'000) return bad();
      out.options.spin = std::chrono::microseconds(number);
    } else if (key == "busy_poll") {
      if (value != "0" && value != "1") return bad();
      out.options.busy_poll = value == "1";
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown shm option '", key, "' (slab_mb, ring_depth, allow_uid, mode, spin_us, busy_poll)"));
    }
  }
  ZCRPC_RETURN_IF_ERROR(ValidateParams(out.params));
  return out;
}

}  // namespace zcrpc::transport::shm
