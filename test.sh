#!/usr/bin/env bash
# Installs what is missing, builds (release), and runs every test. Exits
# non-zero if anything fails.
#   ZCRPC_PRESET=asan       runs one other preset instead of release
#   ZCRPC_SANITIZERS="asan tsan"
#                           then also builds and runs the whole suite under
#                           each of these presets (CI runs asan: .ci/run)
#   ZCRPC_TSAN_STREAMING=1  then also builds the streaming tests under TSan
#                           and runs label `streaming` (CI does: the whole
#                           tree under TSan does not fit its time budget)
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
for preset in "${ZCRPC_PRESET:-release}" ${ZCRPC_SANITIZERS:-}; do
  echo "=== ${preset}: build and test"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  ctest --preset "$preset" -j"$(nproc)"
done
if [[ -n "${ZCRPC_TSAN_STREAMING:-}" ]]; then
  echo "=== tsan: build and test label streaming"
  cmake --preset tsan >/dev/null
  cmake --build --preset tsan --target streaming_test reactor_test stream_protocol_test stream_process_test \
    stream_idle_test reactor_send_queue_test \
    stream_server streaming_example streaming_reactor_example
  ctest --preset tsan -L streaming -j"$(nproc)"
fi
