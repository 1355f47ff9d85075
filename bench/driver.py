#!/usr/bin/env python3
"""Runs the benchmark matrix: every system x workload x payload size, each
row with a fresh server process and a fresh client process, and writes the
JSON, the Markdown table and the plot (report.py). bench/run.sh builds the
programs and calls this; docs/benchmarks.md explains the method."""

import argparse
import datetime
import json
import os
import platform
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import report

KIB, MIB = 1024, 1024 * 1024
UNARY_SIZES = [0, 64, 4 * KIB, 64 * KIB, MIB]

# Measurement effort per mode. Warm-up (the same rule for every system,
# bench/common/harness.h): at least warmup_s and at most warmup_max_s, in
# batches of warmup_batch_s, until the last 3 batch figures agree within
# warmup_tolerance. Then `reps` repetitions of rep_s seconds each.
MODES = {
    "full": dict(warmup_s=1.0, warmup_max_s=5.0, warmup_batch_s=0.05, warmup_tolerance=0.10, reps=7, rep_s=1.0),
    # Quick: at least 0.5 s of warm-up, as a new client/server pair often
    # starts on one CPU and is spread only after some 0.3-0.5 s (the
    # docs' "Three rows that wandered"); a steady plateau before that is
    # not the steady state.
    "quick": dict(warmup_s=0.5, warmup_max_s=1.5, warmup_batch_s=0.03, warmup_tolerance=0.10, reps=5, rep_s=0.08),
    # For the test suite: proves every program runs and the outputs are
    # well-formed; its figures mean nothing.
    "smoke": dict(warmup_s=0.01, warmup_max_s=0.05, warmup_batch_s=0.01, warmup_tolerance=0.10, reps=2, rep_s=0.02),
}
WARMUP_FLAGS = ("warmup_s", "warmup_max_s", "warmup_batch_s", "warmup_tolerance")

# How each system runs. "rpc" systems are a server and a client process;
# floors are one program that forks its own server.
SYSTEMS = {
    "grpc": dict(kind="rpc", server=["bench_grpc_server", "--listen", "127.0.0.1:0"],
                 client=["bench_grpc_client"], busy_poll=False),
    "zcrpc-tcp": dict(kind="rpc", server=["bench_zcrpc_server", "--listen", "tcp://127.0.0.1:0"],
                      client=["bench_zcrpc_client"], busy_poll=False),
    # Default shm options: pollers spin 50 µs after their last frame, then
    # sleep; a blocking caller polls the ring itself while it waits. Under a
    # back-to-back workload that means spinning; idle, it sleeps.
    # Busy-poll: server and client spin on their non-blocking sockets for
    # 2 ms after the last bytes before they block.
    "zcrpc-tcp-busypoll": dict(kind="rpc", server=["bench_zcrpc_server", "--listen",
                                                   "tcp://127.0.0.1:0?busy_poll_us=2000"],
                               client=["bench_zcrpc_client"], target_suffix="?busy_poll_us=2000", busy_poll=True,
                               variant="spin 2 ms, then block"),
    "zcrpc-shm": dict(kind="rpc", server=["bench_zcrpc_server", "--listen", "shm://zcrpc-bench-*"],
                      client=["bench_zcrpc_client"], busy_poll=False, variant="adaptive: spin 50 µs, then sleep"),
    # A stock gRPC client (bench_grpc_client) calling zcrpc's server through
    # its grpc:// listener: what gRPC users pay for the bridge. Measured with
    # each client API gRPC's own rows try and each zcrpc server API,
    # keeping the fastest.
    "zcrpc-grpc-bridge": dict(kind="rpc", server=["bench_zcrpc_server", "--listen", "grpc://127.0.0.1:0"],
                              client=["bench_grpc_client"], target_strip="grpc://", busy_poll=False),
    "floor-tcp": dict(kind="floor", program="bench_floor_tcp", busy_poll=False),
    "floor-tcp-stream": dict(kind="floor", program="bench_floor_tcp_stream", busy_poll=False),
    "floor-shm-ring": dict(kind="floor", program="bench_floor_shm_ring", busy_poll=True),
    "floor-memcpy": dict(kind="floor", program="bench_floor_memcpy", busy_poll=None),
}

# Systems the issues still have to add; named at the start of every run so
# their absence is never mistaken for a result.
NOT_YET_BUILT = ["zcrpc-rdma"]

# gRPC is measured in every configuration below and each row reports the
# fastest (docs/benchmarks.md): the callback server is what gRPC's
# performance guide recommends; the sync server is measured too because the
# guide's advice is about scalability, not one call's latency.
GRPC_ONE_IN_FLIGHT_VARIANTS = [("callback", "sync"), ("callback", "callback"), ("sync", "sync"), ("sync", "callback")]
GRPC_RATE_VARIANTS = [("callback", "callback"), ("sync", "callback")]
# The stream workloads: all four pairs in a full run and the smoke test. A
# quick run tries both server APIs with the sync client only, two variants
# instead of four, so that the stream rows add some 18 s to a quick run, not
# 25: the callback client (a reactor) lost all six stream comparisons of the
# full and quick-effort runs made when these rows were added
# (docs/benchmarks.md, "The gRPC side").
GRPC_STREAM_VARIANTS = {"full": GRPC_ONE_IN_FLIGHT_VARIANTS, "smoke": GRPC_ONE_IN_FLIGHT_VARIANTS,
                        "quick": [("callback", "sync"), ("sync", "sync")]}
STREAM_WORKLOADS = ("stream", "stream-throughput")
# zcrpc's server APIs, tried by the bridge rows: blocking handlers (a thread
# per stream) and reactors (bench/zcrpc/zcrpc_server.cc). The zcrpc-tcp and
# zcrpc-shm rows use the blocking handlers only, as they always have.
ZCRPC_SERVER_APIS = ("blocking", "reactor")


def matrix():
    rows = []
    for system in ("grpc", "zcrpc-tcp", "zcrpc-tcp-busypoll", "zcrpc-shm"):
        rows += [(system, "unary", size) for size in UNARY_SIZES]
        rows += [(system, "bulk", MIB), (system, "rate", 64)]
        if system != "grpc":
            rows += [(system, "unary-attach", size) for size in UNARY_SIZES] + [(system, "bulk-attach", MIB)]
        rows += [(system, "stream", 64), (system, "stream-throughput", 64), (system, "stream-throughput", MIB)]
    bridge = "zcrpc-grpc-bridge"
    rows += [(bridge, "unary", size) for size in UNARY_SIZES] + [(bridge, "rate", 64)]
    rows += [(bridge, "stream", 64), (bridge, "stream-throughput", 64), (bridge, "stream-throughput", MIB)]
    rows += [("floor-tcp", "unary", size) for size in UNARY_SIZES]
    rows += [("floor-tcp", "bulk", MIB), ("floor-tcp-stream", "bulk", MIB),
             ("floor-shm-ring", "unary", 64), ("floor-memcpy", "bulk", MIB)]
    return rows


class Failure(Exception):
    pass


def pinned(command, cpus):
    return ["taskset", "-c", cpus] + command if cpus else command


def start_server(command, timeout_s=15.0):
    """Starts a server and returns (process, address) once it prints
    "LISTENING <address>"."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            if line.startswith("LISTENING "):
                return process, line.split()[1]
            if line == "":
                break
        if process.poll() is not None:
            break
    stop_server(process)
    raise Failure(f"server did not start: {shlex.join(command)}: {process.stderr.read().strip()[-300:]}")


def stop_server(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_client(command, timeout_s):
    """Runs a client program and returns its RESULT object."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise Failure(f"timed out after {timeout_s:.0f} s")
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            if result.get("error"):
                raise Failure(result["error"])
            return result
    raise Failure(f"exit code {done.returncode}, no result: {done.stderr.strip()[-300:]}")


class Runner:
    def __init__(self, args, mode):
        self.bin_dir = Path(args.bin_dir)
        self.mode = mode
        self.effort = MODES[mode]
        self.pin_server = args.pin_server
        self.stream_window = args.stream_window
        self.pin_client = args.pin_client
        self.grpc_variants = []

    def binary(self, name):
        return str(self.bin_dir / name)

    def plan_flags(self, workload, payload):
        e = self.effort
        flags = ["--workload", workload, "--payload_bytes", str(payload)]
        for name in WARMUP_FLAGS + ("reps", "rep_s"):
            flags += [f"--{name}", str(e[name])]
        return flags

    def timeout_s(self):
        e = self.effort
        return 60 + 3 * (e["warmup_max_s"] + e["reps"] * e["rep_s"])

    def run_rpc(self, spec, workload, payload, server_args=(), client_args=()):
        if self.stream_window:
            window = [f"--stream_window_bytes={self.stream_window}"]
            if spec["server"][0] == "bench_zcrpc_server":
                server_args = list(server_args) + window
            if spec["client"][0] == "bench_zcrpc_client":
                client_args = list(client_args) + window
        server_cmd = pinned([self.binary(spec["server"][0])] + spec["server"][1:] + list(server_args), self.pin_server)
        server, address = start_server(server_cmd)
        try:
            target = address.removeprefix(spec.get("target_strip", "")) + spec.get("target_suffix", "")
            client_cmd = pinned([self.binary(spec["client"][0]), "--target", target, "--server_pid", str(server.pid)]
                                + list(client_args) + self.plan_flags(workload, payload), self.pin_client)
            return run_client(client_cmd, self.timeout_s())
        finally:
            stop_server(server)

    def run_floor(self, spec, workload, payload):
        command = [self.binary(spec["program"])] + self.plan_flags(workload, payload)
        if self.pin_server:
            command += ["--server_cpus", self.pin_server]
        return run_client(pinned(command, self.pin_client), self.timeout_s())

    def grpc_api_pairs(self, workload):
        """The (server API, client API) pairs gRPC is measured with."""
        if workload == "rate":
            return GRPC_RATE_VARIANTS
        if workload in STREAM_WORKLOADS:
            return GRPC_STREAM_VARIANTS[self.mode]
        return GRPC_ONE_IN_FLIGHT_VARIANTS

    def run_grpc(self, spec, workload, payload):
        """Measures every gRPC variant and keeps the fastest."""
        return self.run_fastest(spec, workload, payload, [
            (f"server={server_api} client={client_api}", ["--api", server_api], ["--api", client_api])
            for server_api, client_api in self.grpc_api_pairs(workload)])

    def run_bridge(self, spec, workload, payload):
        """The stock client with each API gRPC's own rows use, against zcrpc's
        server with each of its handler APIs (as gRPC's server is measured
        with both of its own); the fastest."""
        client_apis = list(dict.fromkeys(client for _, client in self.grpc_api_pairs(workload)))
        return self.run_fastest(spec, workload, payload, [
            (f"bridge server={server_api} client={client_api}", ["--api", server_api], ["--api", client_api])
            for server_api in ZCRPC_SERVER_APIS for client_api in client_apis])

    def run_fastest(self, spec, workload, payload, variants):
        """Runs each (name, server args, client args), records all in
        grpc_variants, and returns the fastest result."""
        best, best_name, errors = None, None, []
        for name, server_args, client_args in variants:
            try:
                result = self.run_rpc(spec, workload, payload, server_args, client_args)
            except Failure as failure:
                errors.append(f"{name}: {failure}")
                self.grpc_variants.append(dict(variant=name, workload=workload, payload_bytes=payload,
                                               error=str(failure)))
                continue
            self.grpc_variants.append(dict(variant=name, workload=workload, payload_bytes=payload,
                                           p50_us=result["p50_us"], calls_per_s=result["calls_per_s"],
                                           gbytes_per_s=result["gbytes_per_s"]))
            if best is None or faster(workload, payload, result, best):
                best, best_name = result, name
        if best is None:
            raise Failure("; ".join(errors))
        best["variant"] = best_name
        return best

    def run(self, system, workload, payload):
        spec = SYSTEMS[system]
        if system == "grpc":
            return self.run_grpc(spec, workload, payload)
        if system == "zcrpc-grpc-bridge":
            return self.run_bridge(spec, workload, payload)
        if spec["kind"] == "rpc":
            return self.run_rpc(spec, workload, payload)
        return self.run_floor(spec, workload, payload)


def faster(workload, payload, a, b):
    if workload == "rate":
        return a["calls_per_s"] > b["calls_per_s"]
    if workload == "stream-throughput":
        figure, _ = report.headline(workload, payload)
        return a[figure] > b[figure]
    return a["p50_us"] < b["p50_us"]


# --quiet-wait: a row starts only once other processes use at most this
# share of all CPUs (sampled over QUIET_SAMPLE_S, between rows, when none of
# the benchmark's processes run).
QUIET_SHARE = 0.15
QUIET_SAMPLE_S = 0.3


def cpu_times():
    """(busy, total) jiffies over all CPUs from /proc/stat; busy excludes
    idle and iowait and includes steal."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def busy_share(sample_s):
    busy0, total0 = cpu_times()
    time.sleep(sample_s)
    busy1, total1 = cpu_times()
    return (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0


def wait_until_quiet(max_wait_s):
    """Waits up to max_wait_s for the machine to be quiet; returns (seconds
    waited, others' CPU share in the last sample)."""
    started = time.monotonic()
    share = busy_share(QUIET_SAMPLE_S)
    while share > QUIET_SHARE and time.monotonic() - started < max_wait_s:
        share = busy_share(QUIET_SAMPLE_S)
    return time.monotonic() - started, share


def command_output(command):
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def zero_copy_probe(runner, effort):
    """What MSG_ZEROCOPY, TCP_ZEROCOPY_RECEIVE and mremap do on this
    machine, measured now: the figures the tcp transport's choices rest on."""
    command = [runner.binary("bench_zerocopy_probe"), f"--seconds={max(effort['rep_s'], 0.02)}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    for line in done.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[len("PROBE "):])
    return {"error": f"exit code {done.returncode}: {done.stderr.strip()[-300:]}"}


def machine_info(mode, effort, args):
    cpu_model = None
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    os_name = None
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as release:
            for line in release:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    root = Path(__file__).resolve().parent.parent
    commit = command_output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    if commit and command_output(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"]):
        commit += "-dirty"
    def package_version(name):
        return command_output(["dpkg-query", "-W", "-f=${Version}", name]) or None
    compiler = command_output(["c++", "--version"])
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "os": os_name,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "clocksource": Path("/sys/devices/system/clocksource/clocksource0/current_clocksource").read_text().strip(),
        "compiler": compiler.splitlines()[0] if compiler else None,
        "grpc_version": package_version("libgrpc++-dev"),
        "protobuf_version": package_version("libprotobuf-dev"),
        "zcrpc_commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "repetitions": effort["reps"],
        "seconds_per_repetition": effort["rep_s"],
        "warmup_seconds": effort["warmup_s"],
        "warmup": {"min_s": effort["warmup_s"], "max_s": effort["warmup_max_s"], "batch_s": effort["warmup_batch_s"],
                   "tolerance": effort["warmup_tolerance"], "steady_batches": 3},
        "unstable_spread": report.UNSTABLE_SPREAD,
        "quiet_wait_s": args.quiet_wait or None,
        "stream_window_bytes": args.stream_window,
        "pinning": ({"server_cpus": args.pin_server, "client_cpus": args.pin_client}
                    if args.pin_server or args.pin_client else None),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter warm-up and repetitions (about 2 minutes)")
    parser.add_argument("--smoke", action="store_true", help="two tiny repetitions per row, for the test suite")
    parser.add_argument("--json", help="where to write the JSON (default: bench/results/results.json); "
                                       "the table and plot go next to it")
    parser.add_argument("--only", help="comma-separated systems to run (default: all); SYSTEM:WORKLOAD or "
                                       "SYSTEM:WORKLOAD:BYTES picks single rows, e.g. zcrpc-shm:bulk-attach")
    parser.add_argument("--quiet-wait", metavar="SECONDS", type=float, default=0.0,
                        help="before each row, wait up to SECONDS until other processes use at most "
                             f"{100 * QUIET_SHARE:.0f} %% of the CPUs (for a machine shared with builds)")
    parser.add_argument("--pin-server", metavar="CPUS", help="run servers on these CPUs (taskset -c syntax)")
    parser.add_argument("--pin-client", metavar="CPUS", help="run clients on these CPUs")
    parser.add_argument("--stream-window", metavar="BYTES", type=int,
                        help="zcrpc's stream receive window on both sides (default: zcrpc's own), to measure "
                             "the default against others (docs/streaming.md, \"Flow control\")")
    parser.add_argument("--bin-dir", required=True, help="where the bench_* programs are")
    args = parser.parse_args()

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    effort = MODES[mode]
    rows = matrix()
    if args.only:
        wanted = [name.strip().split(":") for name in args.only.split(",") if name.strip()]
        unknown = [parts[0] for parts in wanted if parts[0] not in SYSTEMS]
        if unknown:
            known = ", ".join(list(SYSTEMS) + NOT_YET_BUILT)
            parser.error(f"unknown or not yet built system(s) {', '.join(unknown)}; known: {known}")
        bad = [":".join(parts) for parts in wanted if len(parts) > 3 or (len(parts) == 3 and not parts[2].isdigit())]
        if bad:
            parser.error(f"bad --only entry {', '.join(bad)}: SYSTEM[:WORKLOAD[:BYTES]]")

        def picked(row):
            return any(row[0] == parts[0] and (len(parts) < 2 or row[1] == parts[1])
                       and (len(parts) < 3 or row[2] == int(parts[2])) for parts in wanted)
        rows = [row for row in rows if picked(row)]

    json_path = Path(args.json) if args.json else Path(__file__).resolve().parent / "results" / "results.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)

    print(f"bench: {mode} run, {len(rows)} rows, {effort['reps']} repetitions of {effort['rep_s']} s after a "
          f"warm-up of {effort['warmup_s']}–{effort['warmup_max_s']} s (until steady)")
    print(f"bench: not measured yet (their issues have not landed): {', '.join(NOT_YET_BUILT)}")
    runner = Runner(args, mode)
    # Run interleaved: every system's row for one workload and size one
    # after the other, so a ratio against grpc compares figures measured
    # seconds apart, not at the two ends of the run (this machine's
    # neighbours come and go). The table keeps the matrix's order.
    run_order = sorted(range(len(rows)), key=lambda i: (rows[i][1], rows[i][2], i))
    results_by_index = {}
    started = time.monotonic()
    for index, row_index in enumerate(run_order, 1):
        system, workload, payload = rows[row_index]
        label = f"[{index:2}/{len(rows)}] {system:<18} {workload:<17} {report.size_label(payload):>7}"
        print(label, end="", flush=True)
        row = dict(system=system, workload=workload, payload_bytes=payload)
        if args.quiet_wait > 0:
            waited, share = wait_until_quiet(args.quiet_wait)
            row["quiet_wait"] = dict(seconds=round(waited, 2), others_cpu_share=round(share, 3))
            if share > QUIET_SHARE:
                print(f" (not quiet after {waited:.0f} s: others use {100 * share:.0f} %)", end="", flush=True)
        row_started = time.monotonic()
        try:
            result = runner.run(system, workload, payload)
            row.update({key: result.get(key) for key in report.FIGURES})
            row["error"] = None
            row["variant"] = result.get("variant") or SYSTEMS[system].get("variant")
            row["transport"] = result.get("transport")
            row["repetitions"] = result.get("repetitions") or []
            row["warmup"] = result.get("warmup")
            row["others_cpu_share"] = result.get("others_cpu_share")
            row["dispersion"] = report.dispersion(row)
            row["unstable"] = report.unstable_note(row)
        except Failure as failure:
            row.update({key: None for key in report.FIGURES})
            row["error"] = str(failure)
            row["variant"] = None
            row["transport"] = None
        row["busy_poll"] = SYSTEMS[system]["busy_poll"]
        results_by_index[row_index] = row
        print(f"  {report.row_summary(row)}  ({time.monotonic() - row_started:.1f} s)", flush=True)
        if not row["error"] and report.stability(row):
            print(f"bench: WARNING {system} {workload} {report.size_label(payload)}: {report.stability(row)}",
                  flush=True)

    results = [results_by_index[i] for i in range(len(rows))]
    print("bench: probing the kernel's zero-copy mechanisms (docs/zero-copy.md)", flush=True)
    document = {"machine": machine_info(mode, effort, args), "results": results,
                "grpc_variants": runner.grpc_variants, "zero_copy_probe": zero_copy_probe(runner, effort)}
    report.validate(document)
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    table_path = json_path.with_suffix(".md")
    table_path.write_text(report.markdown(document))
    plot_path = json_path.with_suffix(".png")
    report.plot(document, plot_path)
    failed = [row for row in results if row["error"]]
    unstable = [row for row in results if not row["error"] and row.get("unstable")]
    print(f"bench: {len(results)} rows in {time.monotonic() - started:.0f} s, {len(failed)} failed, "
          f"{len(unstable)} unstable (repetitions disagree by more than {report.UNSTABLE_SPREAD}×)")
    for row in unstable:
        print(f"bench: WARNING unstable: {row['system']} {row['workload']} {report.size_label(row['payload_bytes'])}: "
              f"{row['unstable']}")
    busy = report.busy_rows(results)
    if busy:
        print(f"bench: WARNING {report.busy_summary(results)}")
    print(f"bench: wrote {json_path}, {table_path}, {plot_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
