#!/usr/bin/env bash
# Installs what is missing, builds (release), and runs every test. Exits
# non-zero if anything fails.
#   ZCRPC_PRESET=asan       runs one other preset instead of release
#   ZCRPC_SANITIZERS="asan tsan"
#                           then also builds and runs the whole suite under
#                           each of these presets (CI runs asan: .ci/run)
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
for preset in "${ZCRPC_PRESET:-release}" ${ZCRPC_SANITIZERS:-}; do
  echo "=== ${preset}: build and test"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  ctest --preset "$preset" -j"$(nproc)"
done
