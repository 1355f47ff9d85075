#include "zcrpc/transport/loopback/loopback_address.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "zcrpc/transport/uri.h"

namespace zcrpc::transport::loopback {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

}  // namespace

StatusOr<LoopbackAddress> LoopbackAddress::Parse(std::string_view address) {
  LoopbackAddress out;
  AddressOptions split = SplitAddressOptions(address);
  out.name = std::move(split.base);
  if (out.name.empty()) return absl::InvalidArgumentError("loopback:// needs a name, e.g. loopback://orders");
  if (out.name.size() > 200) {
    return absl::InvalidArgumentError(absl::StrCat("loopback name '", out.name, "' is longer than 200 characters"));
  }
  for (size_t i = 0; i < out.name.size(); ++i) {
    const char c = out.name[i];
    if (IsNameChar(c) || (c == '*' && i + 1 == out.name.size())) continue;
    return absl::InvalidArgumentError(absl::StrCat("loopback name '", out.name,
                                                   "' may hold only [A-Za-z0-9._-] and a trailing '*'"));
  }
  for (const auto& option : split.options) {
    const auto& [key, value] = option;
    auto bad = [&option] { return InvalidOption("loopback", option); };
    uint64_t number = 0;
    const bool numeric = absl::SimpleAtoi(value, &number);
    // Bounds keep a typo from turning into a test that sleeps for a day.
    constexpr uint64_t kMaxDelayUs = 60'000'000;
    if (key == "delay_us") {
      if (!numeric || number > kMaxDelayUs) return bad();
      out.faults.delay_us = number;
    } else if (key == "drop_every") {
      if (!numeric) return bad();
      out.faults.drop_every = number;
    } else if (key == "fail_send_at") {
      if (!numeric) return bad();
      out.faults.fail_send_at = number;
    } else if (key == "close_at_frame") {
      if (!numeric) return bad();
      out.faults.close_at_frame = number;
    } else if (key == "stall") {
      if (value != "0" && value != "1") return bad();
      out.faults.stall = value == "1";
    } else if (key == "connect_delay_us") {
      if (!numeric || number > kMaxDelayUs) return bad();
      out.faults.connect_delay_us = number;
    } else if (key == "unchecked_send") {
      if (value != "0" && value != "1") return bad();
      out.faults.unchecked_send = value == "1";
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown loopback option '", key,
                       "' (delay_us, drop_every, fail_send_at, close_at_frame, stall, connect_delay_us, "
                       "unchecked_send)"));
    }
  }
  return out;
}

}  // namespace zcrpc::transport::loopback
