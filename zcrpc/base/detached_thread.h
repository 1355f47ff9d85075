// StartDetachedThread: a detached thread that, when the system has no
// thread to give (pthread_create's EAGAIN: out of memory for a stack, or
// over a task limit), is a status for the one caller that needed it rather
// than a std::system_error that ends the process.
//
// Thread-safe; `work` runs on the new thread, which owns it.
#pragma once

#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "zcrpc/base/status.h"

namespace zcrpc {

// RESOURCE_EXHAUSTED naming `purpose` ("to resolve tcp://db:1"), with
// `work` not run and destroyed, if no thread could be started.
template <typename Work>
Status StartDetachedThread(std::string_view purpose, Work&& work) {
  try {
    std::thread(std::forward<Work>(work)).detach();
    return Status();
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(absl::StrCat("no thread ", ToAbsl(purpose), ": ", e.what()));
  }
}

}  // namespace zcrpc
