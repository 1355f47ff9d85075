#!/usr/bin/env bash
# Installs what is missing, builds (release), and runs every test. Exits
# non-zero if anything fails. ZCRPC_PRESET=asan runs the ASan+UBSan build.
set -euo pipefail
cd "$(dirname "$0")"
preset=${ZCRPC_PRESET:-release}
./scripts/install-deps.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset" -j"$(nproc)"
