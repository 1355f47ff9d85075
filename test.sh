#!/usr/bin/env bash
# Installs what is missing, builds (release), and runs every test. Exits
# non-zero if anything fails.
#   ZCRPC_PRESET=asan       runs one other preset instead of release
#   ZCRPC_SANITIZERS="asan tsan"
#                           then also builds and runs the whole suite under
#                           each of these presets (CI runs asan: .ci/run)
#   ZCRPC_FUZZ_SECONDS=N    how long each libFuzzer target runs (default 20;
#                           0 skips them; scripts/fuzz.sh runs them longer)
#   ZCRPC_TSAN_STREAMING=1  then also builds the concurrency tests under
#                           TSan and runs labels `streaming` and `fault` (CI
#                           does: the whole tree under TSan does not fit its
#                           time budget)
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
for preset in "${ZCRPC_PRESET:-release}" ${ZCRPC_SANITIZERS:-}; do
  echo "=== ${preset}: build and test"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  ctest --preset "$preset" -j"$(nproc)"
done
fuzz_seconds="${ZCRPC_FUZZ_SECONDS:-20}"
if [[ "$fuzz_seconds" != 0 ]]; then
  echo "=== fuzz: build the libFuzzer targets and run each for ${fuzz_seconds} s"
  cmake --preset fuzz -DZCRPC_FUZZ_SECONDS="$fuzz_seconds" >/dev/null
  cmake --build --preset fuzz
  ctest --preset fuzz -j"$(nproc)"
fi
if [[ -n "${ZCRPC_TSAN_STREAMING:-}" ]]; then
  echo "=== tsan: build and test labels streaming and fault"
  cmake --preset tsan >/dev/null
  cmake --build --preset tsan --target streaming_test reactor_test stream_protocol_test stream_process_test \
    stream_idle_test reactor_send_queue_test \
    stream_server streaming_example streaming_reactor_example \
    connection_limits_test test_server
  ctest --preset tsan -L 'streaming|fault' -j"$(nproc)"
fi
