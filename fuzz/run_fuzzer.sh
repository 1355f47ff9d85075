#!/usr/bin/env bash
# Runs one libFuzzer target: first its committed seeds and past findings
# in SEEDS, then new inputs, kept in WORK (never in the source tree), for
# SECONDS, or for $ZCRPC_FUZZ_RUNS executions when that is set
# (scripts/fuzz.sh). Exits non-zero if the target crashed, leaked, hung or
# hit a sanitizer error; the input that did it is saved beside WORK
# (crash-*, leak-*, timeout-*).
#   run_fuzzer.sh BINARY SEEDS WORK SECONDS [libFuzzer flags...]
set -euo pipefail
binary=$1 seeds=$2 work=$3 seconds=$4
shift 4
if [[ -n "${ZCRPC_FUZZ_RUNS:-}" ]]; then
  limit=(-runs="$ZCRPC_FUZZ_RUNS")
else
  limit=(-max_total_time="$seconds")
fi
mkdir -p "$work"
cd "$(dirname "$work")"
exec "$binary" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@" "$work" "$seeds"
