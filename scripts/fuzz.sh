#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/) far longer than ./test.sh does:
# RUNS executions each (default 10,000,000), the targets in parallel, one
# per core. Prints each target's executions, speed and new corpus size;
# exits non-zero if any target found a crash (the input is saved in
# build-fuzz/fuzz/, crash-*: add it to fuzz/corpus/<target>/ once fixed,
# so every later run replays it).
#   scripts/fuzz.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
status=0
ZCRPC_FUZZ_RUNS="${1:-10000000}" ctest --preset fuzz -j"$(nproc)" || status=$?
log=build-fuzz/Testing/Temporary/LastTest.log
python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
print(f"{'target':28} {'executions':>12} {'exec/s':>8} {'corpus':>7}  result")
for block in re.split(r"\n(?=\d+/\d+ Testing: )", text):
    name = re.search(r"Testing: fuzz\.(\S+)", block)
    if not name:
        continue
    stat = lambda key: (re.findall(rf"stat::{key}:\s+(\d+)", block) or ["?"])[-1]
    corpus = (re.findall(r"#\d+\s+DONE\s+cov: \d+ ft: \d+ corp: (\d+)", block) or ["?"])[-1]
    result = "passed" if "Test Passed" in block else "FAILED"
    print(f"{name.group(1):28} {stat('number_of_executed_units'):>12} {stat('average_exec_per_sec'):>8} "
          f"{corpus:>7}  {result}")
PY
exit $status
