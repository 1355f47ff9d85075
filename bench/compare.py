#!/usr/bin/env python3
"""Compares runs of bench/run.sh row by row: each row's headline figure (p50
for unary and stream, GB/s for bulk, calls/s for rate, messages/s or GB/s
for stream-throughput) in every run, and the spread
(largest / smallest) across runs. For judging quick runs against quick runs
(docs/benchmarks.md, "Quick against quick"):

  bench/compare.py /tmp/quick_1.json /tmp/quick_2.json /tmp/quick_3.json
"""

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402


def spreads(documents):
    """[(system, workload, payload, [figure per run, None where missing or failed], spread or None)]"""
    keys = list(dict.fromkeys((r["system"], r["workload"], r["payload_bytes"])
                              for document in documents for r in document["results"]))
    out = []
    for key in keys:
        figure, _ = report.headline(key[1], key[2])
        values = []
        for document in documents:
            row = report.find(document["results"], *key)
            values.append(row[figure] if row else None)
        present = [v for v in values if v]
        spread = max(present) / min(present) if len(present) >= 2 else None
        out.append((*key, values, spread))
    return out


def main(paths):
    documents = [json.loads(Path(path).read_text()) for path in paths]
    rows = spreads(documents)
    for system, workload, payload, values, spread in rows:
        cells = " ".join(f"{report.number(v):>9}" if v else f"{'—':>9}" for v in values)
        mark = "" if spread is None else f"×{spread:.2f}" + (" ⚠" if spread > report.UNSTABLE_SPREAD else "")
        print(f"{system:<19} {workload:<12} {report.size_label(payload):>7}  {cells}  {mark}")
    known = [spread for *_, spread in rows if spread is not None]
    if known:
        print(f"median spread ×{statistics.median(known):.2f}; rows over ×{report.UNSTABLE_SPREAD}: "
              f"{sum(s > report.UNSTABLE_SPREAD for s in known)} of {len(known)}; over ×2: {sum(s > 2 for s in known)}")
    for document, path in zip(documents, paths):
        if report.busy_summary(document["results"]):
            print(f"{path}: {report.busy_summary(document['results'])}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1:])
