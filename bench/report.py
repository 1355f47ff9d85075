"""Turns a benchmark run (driver.py) into what people read: a Markdown table
with each row's ratios to stock gRPC and to the matching floor, and a plot.
Also checks the JSON against bench/results.schema.json."""

import json
from pathlib import Path

FIGURES = ["p50_us", "p99_us", "calls_per_s", "gbytes_per_s", "cpu_us_per_call", "copied_bytes_per_call",
           "peak_rss_mb", "client_peak_rss_mb", "server_peak_rss_mb"]
# The table's figure columns: the RSS sum (peak_rss_mb) is in the JSON only.
TABLE_FIGURES = [key for key in FIGURES if key != "peak_rss_mb"]
# stream-throughput with messages this large is judged by GB/s; smaller
# ones by messages/s.
STREAM_GBYTES_FROM = 64 * 1024

# The floor each system is held to: the same work with no framework over the
# same kind of path. Floors are matched by workload and payload size.
FLOOR_FOR = {
    "grpc": "floor-tcp",
    "zcrpc-tcp": "floor-tcp",
    "zcrpc-tcp-busypoll": "floor-tcp",
    "zcrpc-grpc-bridge": "floor-tcp",
    "zcrpc-shm": "floor-shm-ring",
}

SCHEMA_PATH = Path(__file__).resolve().parent / "results.schema.json"

# A row whose repetitions' headline figures differ by more than this
# (max/min) is marked unstable: above the 10-30 % that runs on this kind of
# machine move by anyway (docs/benchmarks.md, "Repetitions and the
# instability flag").
UNSTABLE_SPREAD = 1.3
# Other processes' share of the CPUs during a row above which the table
# says so next to the row.
BUSY_MACHINE_SHARE = 0.25


def headline(workload, payload_bytes=None):
    """The figure a workload (at this payload size) is judged by, and its
    unit for the table."""
    if workload in ("bulk", "bulk-attach"):
        return "gbytes_per_s", "GB/s"
    if workload == "rate":
        return "calls_per_s", "calls/s"
    if workload == "stream-throughput":
        # calls_per_s counts messages here (docs/benchmarks.md).
        if payload_bytes is not None and payload_bytes >= STREAM_GBYTES_FROM:
            return "gbytes_per_s", "GB/s"
        return "calls_per_s", "msgs/s"
    return "p50_us", "µs"


def calls_unit(workload):
    """What calls_per_s counts for this workload."""
    return "msgs/s" if workload == "stream-throughput" else "calls/s"


def row_headline(row):
    return headline(row["workload"], row["payload_bytes"])


def dispersion(row):
    """How far the row's repetitions disagree on its headline figure:
    {figure, min, max, max_over_min}, or None without two repetitions that
    have it."""
    figure, _ = row_headline(row)
    values = [rep.get(figure) for rep in row.get("repetitions") or []]
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    lo, hi = min(values), max(values)
    ratio = hi / lo if lo > 0 else (1.0 if hi == 0 else None)
    return dict(figure=figure, min=lo, max=hi, max_over_min=ratio)


def unstable_note(row):
    """"p50s 12–40 µs" when the row's repetitions disagree by more than
    UNSTABLE_SPREAD, else None."""
    spread = row.get("dispersion") or dispersion(row)
    if spread is None:
        return None
    ratio = spread["max_over_min"]
    if ratio is not None and ratio <= UNSTABLE_SPREAD:
        return None
    figure, unit = row_headline(row)
    name = "p50s" if figure == "p50_us" else unit
    values = f"{number(spread['min'])}–{number(spread['max'])}"
    return f"{name} {values}" if unit == name else f"{name} {values} {unit}"


def busy_rows(results):
    return [row for row in results if (row.get("others_cpu_share") or 0) > BUSY_MACHINE_SHARE]


def busy_summary(results):
    """One sentence on a run made while other processes were busy, or None."""
    busy = busy_rows(results)
    if not busy:
        return None
    shares = sorted(row["others_cpu_share"] for row in busy)
    return (f"other processes used more than {100 * BUSY_MACHINE_SHARE:.0f} % of the CPUs during {len(busy)} of "
            f"{len(results)} rows (up to {100 * shares[-1]:.0f} %): those figures are not comparable with a quiet "
            f"run's")


def stability(row):
    """The table's last cell: the instability mark, a warm-up that never
    settled, and a busy machine, or "" for a row with nothing to say."""
    if row["error"]:
        return ""
    notes = []
    if row.get("unstable"):
        notes.append(f"⚠ unstable: {row['unstable']}")
    shared = [rep.get("same_cpu") for rep in row.get("repetitions") or [] if rep.get("same_cpu") is not None]
    if any(shared):
        notes.append(f"client and server on one CPU in {sum(shared)} of {len(shared)} repetitions")
    warmup = row.get("warmup")
    if warmup and not warmup.get("steady"):
        notes.append(f"warm-up unsettled after {warmup['seconds']:.1f} s")
    if warmup and warmup.get("first_batch") and warmup.get("last_batch"):
        # Warm-up makes a row faster; one that got slower met something
        # else (a busy machine, client and server pushed onto one CPU).
        # Its batch figure is a rate (higher is better) for rate and
        # stream-throughput, a time per call for the others.
        first, last = warmup["first_batch"], warmup["last_batch"]
        is_rate = row["workload"] in ("rate", "stream-throughput")
        slower = first / last if is_rate else last / first
        if slower > UNSTABLE_SPREAD:
            unit = calls_unit(row["workload"]) if is_rate else "µs per call"
            notes.append(f"warm-up got slower: {number(first)} → {number(last)} {unit}")
    others = row.get("others_cpu_share")
    if others is not None and others > BUSY_MACHINE_SHARE:
        notes.append(f"others used {100 * others:.0f} % CPU")
    return "; ".join(notes)


def validate(document):
    try:
        import jsonschema
    except ImportError:
        raise SystemExit("bench: python3-jsonschema is missing; scripts/install-deps.sh installs it")
    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))


def size_label(size):
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def number(value, digits=3):
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}g}"


def row_summary(row):
    if row["error"]:
        return f"FAILED: {row['error']}"
    parts = []
    if row["p50_us"] is not None:
        parts.append(f"p50 {number(row['p50_us'])} µs")
    if row["calls_per_s"] is not None:
        parts.append(f"{number(row['calls_per_s'])} {calls_unit(row['workload'])}")
    if row["gbytes_per_s"] is not None:
        parts.append(f"{number(row['gbytes_per_s'])} GB/s")
    if row.get("client_peak_rss_mb") is not None and row["workload"].startswith("stream"):
        server = row.get("server_peak_rss_mb")
        parts.append(f"RSS {number(row['client_peak_rss_mb'])} + {number(server)} MiB")
    return ", ".join(parts)


def find(results, system, workload, payload):
    for row in results:
        if (row["system"], row["workload"], row["payload_bytes"]) == (system, workload, payload) and not row["error"]:
            return row
    return None


def speedup(row, other):
    """How many times better `row` is than `other` on the workload's own
    figure (>1: row is better)."""
    if other is None or row["error"]:
        return None
    if row["workload"] in ("rate", "stream-throughput"):
        figure, _ = row_headline(row)
        a, b = row[figure], other[figure]
        return a / b if a and b else None
    if row["workload"] in ("bulk", "bulk-attach") and row["gbytes_per_s"] and other["gbytes_per_s"]:
        return row["gbytes_per_s"] / other["gbytes_per_s"]
    a, b = row["p50_us"], other["p50_us"]
    return b / a if a and b else None


# unary-attach and bulk-attach are held to the same rows as unary and bulk:
# gRPC has no attachments, so the comparison is with gRPC carrying the
# payload in its message.
def comparable_workload(workload):
    return {"unary-attach": "unary", "bulk-attach": "bulk"}.get(workload, workload)


def vs_grpc(row, results):
    if not row["system"].startswith("zcrpc-"):
        return "—"
    ratio = speedup(row, find(results, "grpc", comparable_workload(row["workload"]), row["payload_bytes"]))
    return "—" if ratio is None else f"{ratio:.2f}×"


def vs_floor(row, results):
    floor_name = FLOOR_FOR.get(row["system"])
    if floor_name is None or row["error"]:
        return "—"
    floor = find(results, floor_name, comparable_workload(row["workload"]), row["payload_bytes"])
    if floor is None:
        return "—"
    if row["workload"] in ("bulk", "bulk-attach") and row["gbytes_per_s"] and floor["gbytes_per_s"]:
        return f"{row['gbytes_per_s'] / floor['gbytes_per_s']:.2f}× GB/s of {floor_name}"
    if row["p50_us"] and floor["p50_us"]:
        return f"{row['p50_us'] / floor['p50_us']:.2f}× p50 of {floor_name}"
    return "—"


def warmup_text(machine):
    rule = machine.get("warmup")
    if not rule:
        return f"{machine['warmup_seconds']} s warm-up"
    return (f"a warm-up of {rule['min_s']}–{rule['max_s']} s until {rule['steady_batches']} batches of "
            f"{rule['batch_s']} s agree within {100 * rule['tolerance']:.0f} %")


def markdown(document):
    machine, results = document["machine"], document["results"]
    pinning = machine["pinning"]
    lines = [
        "# zcrpc against stock gRPC",
        "",
        f"{machine['date']} · {machine['mode']} run · {machine['repetitions']} repetitions of "
        f"{machine['seconds_per_repetition']} s after {warmup_text(machine)} · zcrpc "
        f"{machine['zcrpc_commit']} · gRPC {machine['grpc_version']} · protobuf {machine['protobuf_version']}",
        "",
        f"{machine['cpu_model']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB, Linux {machine['kernel']}, "
        f"{machine['os']} · pinning: "
        + (f"servers on CPUs {pinning['server_cpus']}, clients on {pinning['client_cpus']}" if pinning else "none")
        + (f" · each row waited up to {machine['quiet_wait_s']} s for a quiet machine"
           if machine.get("quiet_wait_s") else ""),
        "",
        "Medians over repetitions. *vs grpc*: how many times better than stock gRPC on the same workload and size "
        "(latency for unary and stream, calls/s for rate, GB/s for bulk and stream-throughput of 1 MiB, "
        "messages/s for stream-throughput of 64 B; >1 is better). *vs floor*: the system's cost "
        "relative to the same work with no framework (latency: 1.00 is the floor, higher is slower; GB/s: the "
        "fraction of the floor's throughput). For `stream` a call is one round trip on an open stream; for "
        "`stream-throughput` it is one message received, and the calls/s column counts messages. CPU is client + "
        "server per call; copied is framework bytes copied "
        "per call (zcrpc's counters; gRPC does not count). RSS: each process's peak resident set (VmHWM), the "
        "client's and the server's. *stability*: "
        f"⚠ unstable when the repetitions' headline figures (the figure *vs grpc* compares) differ by "
        f"more than {UNSTABLE_SPREAD}× (max/min); a warm-up that reached its cap without settling; and the "
        f"share of the CPUs other processes used during the row when above {100 * BUSY_MACHINE_SHARE:.0f} %; "
        "repetitions that ended with the client's calling thread and the server's busiest thread on one CPU.",
        "",
    ]
    unstable = [row for row in results if not row["error"] and row.get("unstable")]
    if unstable:
        lines += [f"**{len(unstable)} of {len(results)} rows are unstable**: their repetitions disagree by more "
                  f"than {UNSTABLE_SPREAD}×; read them as a range, not a figure.", ""]
    if busy_summary(results):
        lines += [f"**The machine was busy**: {busy_summary(results)}.", ""]
    lines += [
        "| system | workload | payload | p50 µs | p99 µs | calls/s | GB/s | CPU µs/call | copied B/call | "
        "client RSS MiB | server RSS MiB | busy-poll | vs grpc | vs floor | stability |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for row in results:
        system = row["system"] + (f" ({row['variant']})" if row.get("variant") else "")
        head = f"| {system} | {row['workload']} | {size_label(row['payload_bytes'])} |"
        if row["error"]:
            lines.append(head + f" **FAILED: {row['error']}** |" + " |" * (len(TABLE_FIGURES) + 3))
            continue
        busy = {True: "yes", False: "no", None: "—"}[row.get("busy_poll")]
        cells = [number(row.get(key)) for key in TABLE_FIGURES] + [busy, vs_grpc(row, results),
                                                                  vs_floor(row, results), stability(row)]
        lines.append(head + " " + " | ".join(cells) + " |")
    lines.append("")
    probe = document.get("zero_copy_probe")
    if probe and "error" not in probe:
        lines += [
            "Kernel zero-copy on this machine's loopback (bench_zerocopy_probe, 1 MiB writes, every byte "
            "checksummed by the receiver):",
            "",
            f"- send {probe['send_gbytes_per_s']:.2f} GB/s; MSG_ZEROCOPY {probe['msg_zerocopy_gbytes_per_s']:.2f} GB/s, "
            f"kernel copied {probe['msg_zerocopy_copied_completions']} of {probe['msg_zerocopy_completions']} completions",
            f"- TCP_ZEROCOPY_RECEIVE: from a plain sender {probe['zerocopy_receive_from_plain_sender_gbytes_per_s']:.2f} "
            f"GB/s with {100 * probe['zerocopy_receive_from_plain_sender_mapped_fraction']:.0f} % mapped; from a "
            f"MSG_ZEROCOPY sender {probe['zerocopy_receive_from_zerocopy_sender_gbytes_per_s']:.2f} GB/s with "
            f"{100 * probe['zerocopy_receive_from_zerocopy_sender_mapped_fraction']:.0f} % mapped",
            f"- a page: memcpy {probe['memcpy_ns_per_page']:.0f} ns, mremap {probe['mremap_ns_one_page']:.0f} ns "
            f"alone or {probe['mremap_ns_per_page_of_64']:.0f} ns each in a run of 64",
            "",
        ]
    elif probe:
        lines += [f"Zero-copy probe failed: {probe['error']}", ""]
    decided = [row for row in results if row.get("transport")]
    if decided:
        lines += ["What the transport decided on each path (measured per connection during the row):", ""]
        lines += [f"- {row['system']} {row['workload']} {size_label(row['payload_bytes'])}: {row['transport']}"
                  for row in decided]
        lines.append("")
    return "\n".join(lines)


def plot(document, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [row for row in document["results"] if not row["error"]]
    systems = list(dict.fromkeys(row["system"] for row in results))
    figure, (latency, rate, bulk) = plt.subplots(1, 3, figsize=(16, 5.5),
                                                 gridspec_kw={"width_ratios": [2.2, 1, 1]})

    for system in systems:
        points = sorted((row["payload_bytes"], row["p50_us"]) for row in results
                        if row["system"] == system and row["workload"] == "unary" and row["p50_us"])
        if not points:
            continue
        # Log axes cannot show 0 B; it is drawn at 1 B and labelled "0".
        xs = [max(size, 1) for size, _ in points]
        style = "--" if system.startswith("floor-") else "-"
        latency.plot(xs, [p50 for _, p50 in points], style, marker="o", label=system)
    latency.set_xscale("log")
    latency.set_yscale("log")
    sizes = [1, 64, 4096, 65536, 1048576]
    latency.set_xticks(sizes, ["0", "64 B", "4 KiB", "64 KiB", "1 MiB"])
    latency.set_xlabel("payload each way")
    latency.set_ylabel("p50 latency, µs (log)")
    latency.set_title("unary, one call in flight")
    latency.grid(True, which="both", alpha=0.3)
    if latency.lines:  # --only without unary rows draws none
        latency.legend()

    def bars(axis, workload, key, title, ylabel, log):
        rows = [row for row in results if row["workload"] in workload and row[key]]
        names = [row["system"] + (" (attach)" if row["workload"].endswith("-attach") else "") for row in rows]
        colours = ["#888" if n.startswith("floor-") else "#3a7" if n.startswith("zcrpc") else "#c64" for n in names]
        drawn = axis.bar(names, [row[key] for row in rows], color=colours)
        axis.bar_label(drawn, labels=[number(row[key]) for row in rows], fontsize=8)
        if log and rows:  # a log axis with no bars (--only without bulk rows) cannot be drawn
            axis.set_yscale("log")
        axis.set_title(title)
        axis.set_ylabel(ylabel)
        axis.tick_params(axis="x", rotation=30)
        axis.grid(True, axis="y", which="both", alpha=0.3)

    bars(rate, ("rate",), "calls_per_s", "rate: 32 calls of 64 B in flight", "calls/s", log=False)
    bars(bulk, ("bulk", "bulk-attach"), "gbytes_per_s", "bulk: 1 MiB request, checksummed", "GB/s (log)", log=True)
    machine = document["machine"]
    figure.suptitle(f"zcrpc vs gRPC {machine['grpc_version']} · {machine['cpu_model']} ×{machine['cpus']} · "
                    f"{machine['mode']} run {machine['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
