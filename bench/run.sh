#!/usr/bin/env bash
# zcrpc against stock gRPC, same .proto, same machine, same run:
#   bench/run.sh [--quick] [--json FILE] [--only SYSTEM,...] [--pin-server CPUS --pin-client CPUS]
# Installs what is missing, builds the release programs, runs the matrix and
# writes FILE (default bench/results/results.json) with a Markdown table
# (.md) and a plot (.png) next to it. docs/benchmarks.md explains it all.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build build --target bench_programs | grep -v '^\[' || true
# Debian's interpreter: install-deps.sh put matplotlib and jsonschema there.
exec /usr/bin/python3 "$root/bench/driver.py" --bin-dir "$root/build/bench" "$@"
