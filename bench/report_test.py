#!/usr/bin/env python3
"""Unit tests of report.py: the ratios the table prints and the schema
check, on hand-made results."""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402
import driver  # noqa: E402
import report  # noqa: E402


def row(system, workload, payload, **figures):
    r = dict(system=system, workload=workload, payload_bytes=payload, error=None, busy_poll=False, variant=None)
    r.update({key: figures.get(key) for key in report.FIGURES})
    return r


def document(results):
    machine = dict(hostname="h", cpu_model="c", cpus=2, kernel="k", os="o", memory_gib=1, date="d", mode="quick",
                   repetitions=3, seconds_per_repetition=0.1, warmup_seconds=0.1, pinning=None, zcrpc_commit="x",
                   grpc_version="g", protobuf_version="p")
    return dict(machine=machine, results=results, grpc_variants=[])


class Ratios(unittest.TestCase):
    def test_latency_ratio_is_grpc_over_zcrpc(self):
        results = [row("grpc", "unary", 64, p50_us=100.0), row("zcrpc-tcp", "unary", 64, p50_us=25.0)]
        self.assertEqual(report.vs_grpc(results[1], results), "4.00×")

    def test_rate_and_bulk_ratios_are_zcrpc_over_grpc(self):
        results = [row("grpc", "rate", 64, calls_per_s=50_000.0), row("zcrpc-tcp", "rate", 64, calls_per_s=150_000.0),
                   row("grpc", "bulk", 1 << 20, p50_us=800.0, gbytes_per_s=1.0),
                   row("zcrpc-tcp", "bulk", 1 << 20, p50_us=400.0, gbytes_per_s=2.5)]
        self.assertEqual(report.vs_grpc(results[1], results), "3.00×")
        self.assertEqual(report.vs_grpc(results[3], results), "2.50×")

    def test_unary_attach_is_compared_with_grpc_unary(self):
        results = [row("grpc", "unary", 1 << 20, p50_us=2000.0), row("zcrpc-shm", "unary-attach", 1 << 20, p50_us=20.0)]
        self.assertEqual(report.vs_grpc(results[1], results), "100.00×")

    def test_bulk_attach_is_compared_with_grpc_and_floor_bulk(self):
        results = [row("grpc", "bulk", 1 << 20, gbytes_per_s=1.5), row("floor-tcp", "bulk", 1 << 20, gbytes_per_s=3.0),
                   row("zcrpc-tcp", "bulk-attach", 1 << 20, p50_us=300.0, gbytes_per_s=2.7)]
        self.assertEqual(report.vs_grpc(results[2], results), "1.80×")
        self.assertEqual(report.vs_floor(results[2], results), "0.90× GB/s of floor-tcp")

    def test_transport_notes_and_the_probe_are_printed_under_the_table(self):
        noted = row("zcrpc-tcp", "bulk", 1 << 20, p50_us=300.0, gbytes_per_s=2.7)
        noted["transport"] = "client: 1.00 frames per sendmsg"
        doc = document([noted])
        doc["zero_copy_probe"] = dict(send_gbytes_per_s=4.5, msg_zerocopy_gbytes_per_s=3.0, msg_zerocopy_completions=9,
                                      msg_zerocopy_copied_completions=9,
                                      zerocopy_receive_from_plain_sender_gbytes_per_s=5.0,
                                      zerocopy_receive_from_plain_sender_mapped_fraction=0.0,
                                      zerocopy_receive_from_zerocopy_sender_gbytes_per_s=1.6,
                                      zerocopy_receive_from_zerocopy_sender_mapped_fraction=0.4,
                                      memcpy_ns_per_page=90.0, mremap_ns_one_page=2700.0, mremap_ns_per_page_of_64=30.0)
        report.validate(doc)
        table = report.markdown(doc)
        self.assertIn("zcrpc-tcp bulk 1 MiB: client: 1.00 frames per sendmsg", table)
        self.assertIn("kernel copied 9 of 9 completions", table)

    def test_floor_ratio_matches_workload_and_size(self):
        results = [row("floor-tcp", "unary", 64, p50_us=50.0), row("floor-tcp", "unary", 4096, p50_us=80.0),
                   row("zcrpc-tcp", "unary", 64, p50_us=55.0), row("zcrpc-tcp", "unary", 0, p50_us=40.0)]
        self.assertEqual(report.vs_floor(results[2], results), "1.10× p50 of floor-tcp")
        self.assertEqual(report.vs_floor(results[3], results), "—")

    def test_a_failed_grpc_row_gives_no_ratio(self):
        failed = row("grpc", "unary", 64)
        failed["error"] = "boom"
        results = [failed, row("zcrpc-tcp", "unary", 64, p50_us=25.0)]
        self.assertEqual(report.vs_grpc(results[1], results), "—")

    def test_failures_are_named_in_the_table(self):
        failed = row("zcrpc-tcp", "rate", 64)
        failed["error"] = "call failed: UNAVAILABLE"
        table = report.markdown(document([failed]))
        self.assertIn("**FAILED: call failed: UNAVAILABLE**", table)


def with_reps(r, figure, values, **extra):
    """`r` with one repetition per value of `figure`, its dispersion and
    instability filled in as driver.py does."""
    r["repetitions"] = [{figure: v} for v in values]
    r.update(extra)
    r["dispersion"] = report.dispersion(r)
    r["unstable"] = report.unstable_note(r)
    return r


class PeakRss(unittest.TestCase):
    def test_client_and_server_rss_are_columns_of_their_own(self):
        r = row("zcrpc-shm", "unary", 64, p50_us=2.0, peak_rss_mb=21.5, client_peak_rss_mb=9.5,
                server_peak_rss_mb=12.0)
        doc = document([r])
        report.validate(doc)
        table = report.markdown(doc)
        self.assertIn("| client RSS MiB | server RSS MiB |", table)
        self.assertIn("| 9.5 | 12.0 |", table)

    def test_rss_may_be_absent_from_older_results_but_not_negative(self):
        old = row("grpc", "unary", 64, p50_us=1.0)
        del old["client_peak_rss_mb"], old["server_peak_rss_mb"]
        report.validate(document([old]))
        self.assertIn("| — | — |", report.markdown(document([old])))
        with self.assertRaises(Exception):
            report.validate(document([row("grpc", "unary", 64, client_peak_rss_mb=-1.0)]))


class Streams(unittest.TestCase):
    def test_stream_is_judged_by_latency_like_unary(self):
        results = [row("grpc", "stream", 64, p50_us=140.0), row("zcrpc-shm", "stream", 64, p50_us=35.0)]
        self.assertEqual(report.headline("stream", 64), ("p50_us", "µs"))
        self.assertEqual(report.vs_grpc(results[1], results), "4.00×")
        self.assertEqual(report.vs_floor(results[1], results), "—")  # no floor streams

    def test_stream_throughput_is_judged_by_messages_or_gigabytes_by_size(self):
        self.assertEqual(report.headline("stream-throughput", 64), ("calls_per_s", "msgs/s"))
        self.assertEqual(report.headline("stream-throughput", 1 << 20), ("gbytes_per_s", "GB/s"))
        results = [row("grpc", "stream-throughput", 64, calls_per_s=50_000.0, gbytes_per_s=0.0032),
                   row("zcrpc-tcp", "stream-throughput", 64, calls_per_s=150_000.0, gbytes_per_s=0.0096),
                   row("grpc", "stream-throughput", 1 << 20, calls_per_s=1000.0, gbytes_per_s=1.0),
                   row("zcrpc-tcp", "stream-throughput", 1 << 20, calls_per_s=1000.0, gbytes_per_s=2.5)]
        self.assertEqual(report.vs_grpc(results[1], results), "3.00×")
        self.assertEqual(report.vs_grpc(results[3], results), "2.50×")
        self.assertEqual(report.row_summary(results[1]), "150,000 msgs/s, 0.0096 GB/s")

    def test_stream_throughput_dispersion_and_warm_up_use_its_own_figures(self):
        small = with_reps(row("zcrpc-tcp", "stream-throughput", 64, calls_per_s=1e5), "calls_per_s", [6e4, 1e5],
                          warmup=dict(seconds=0.6, batches=20, steady=True, first_batch=2e5, last_batch=7e4))
        self.assertEqual(small["dispersion"]["figure"], "calls_per_s")
        self.assertEqual(report.stability(small),
                         "⚠ unstable: msgs/s 60,000–100,000; warm-up got slower: 200,000 → 70,000 msgs/s")
        large = with_reps(row("zcrpc-tcp", "stream-throughput", 1 << 20, gbytes_per_s=2.0), "gbytes_per_s",
                          [1.9, 2.0], warmup=dict(seconds=0.6, batches=20, steady=True, first_batch=200.0,
                                                  last_batch=1900.0))
        self.assertEqual(large["dispersion"]["figure"], "gbytes_per_s")
        self.assertEqual(report.stability(large), "")  # a warm-up that sped up is normal
        report.validate(document([small, large]))

    def test_the_progress_line_gives_a_stream_rows_rss_per_side(self):
        r = row("zcrpc-shm", "stream-throughput", 64, calls_per_s=4e5, gbytes_per_s=0.0256, peak_rss_mb=143.0,
                client_peak_rss_mb=11.0, server_peak_rss_mb=132.0)
        report.validate(document([r]))
        self.assertEqual(report.row_summary(r), "400,000 msgs/s, 0.0256 GB/s, RSS 11.0 + 132 MiB")

    def test_every_rpc_system_gets_the_stream_rows(self):
        rows = driver.matrix()
        for system in ("grpc", "zcrpc-tcp", "zcrpc-tcp-busypoll", "zcrpc-shm"):
            for workload, payload in (("stream", 64), ("stream-throughput", 64), ("stream-throughput", 1 << 20)):
                self.assertIn((system, workload, payload), rows)
        self.assertFalse([r for r in rows if r[0].startswith("floor-") and r[1].startswith("stream")])

    def test_the_faster_grpc_variant_by_the_rows_own_figure(self):
        slow = dict(p50_us=None, calls_per_s=900.0, gbytes_per_s=0.94)
        fast = dict(p50_us=None, calls_per_s=1200.0, gbytes_per_s=1.26)
        self.assertTrue(driver.faster("stream-throughput", 1 << 20, fast, slow))
        self.assertFalse(driver.faster("stream-throughput", 64, slow, fast))
        self.assertTrue(driver.faster("stream", 64, dict(p50_us=100.0), dict(p50_us=150.0)))


class Stability(unittest.TestCase):
    def test_dispersion_uses_the_workloads_headline_figure(self):
        unary = with_reps(row("zcrpc-tcp", "unary", 64, p50_us=20.0), "p50_us", [20.0, 22.0, 25.0])
        self.assertEqual(unary["dispersion"]["figure"], "p50_us")
        self.assertAlmostEqual(unary["dispersion"]["max_over_min"], 1.25)
        bulk = with_reps(row("floor-tcp", "bulk", 1 << 20, gbytes_per_s=3.0), "gbytes_per_s", [1.52, 4.18, 3.0])
        self.assertEqual(bulk["dispersion"]["figure"], "gbytes_per_s")
        rate = with_reps(row("grpc", "rate", 64, calls_per_s=1.0), "calls_per_s", [100.0, 200.0])
        self.assertEqual(rate["dispersion"]["figure"], "calls_per_s")

    def test_repetitions_within_the_threshold_are_not_marked(self):
        r = with_reps(row("zcrpc-tcp", "unary", 64, p50_us=20.0), "p50_us", [20.0, 22.0, 25.0])
        self.assertIsNone(r["unstable"])
        self.assertEqual(report.stability(r), "")

    def test_repetitions_that_disagree_are_marked_with_their_range(self):
        r = with_reps(row("zcrpc-tcp-busypoll", "unary", 0, p50_us=20.0), "p50_us", [12.0, 20.0, 40.0])
        self.assertEqual(r["unstable"], "p50s 12.0–40.0 µs")
        b = with_reps(row("floor-tcp", "bulk", 1 << 20, gbytes_per_s=3.0), "gbytes_per_s", [1.52, 4.18, 3.0])
        self.assertEqual(b["unstable"], "GB/s 1.52–4.18")
        q = with_reps(row("grpc", "rate", 64, calls_per_s=150_000.0), "calls_per_s", [135_000.0, 264_500.0])
        self.assertEqual(q["unstable"], "calls/s 135,000–264,500")

    def test_a_single_repetition_or_none_is_never_unstable(self):
        self.assertIsNone(with_reps(row("grpc", "unary", 64, p50_us=1.0), "p50_us", [1.0])["unstable"])
        old = row("grpc", "unary", 64, p50_us=1.0)  # results from before repetitions were recorded
        self.assertIsNone(report.dispersion(old))
        self.assertEqual(report.stability(old), "")

    def test_a_zero_minimum_is_unstable_unless_all_are_zero(self):
        self.assertIsNotNone(with_reps(row("grpc", "rate", 64), "calls_per_s", [0.0, 10.0])["unstable"])
        self.assertIsNone(with_reps(row("grpc", "rate", 64), "calls_per_s", [0.0, 0.0])["unstable"])

    def test_the_table_marks_unstable_rows_and_keeps_every_row(self):
        steady = with_reps(row("zcrpc-shm", "unary", 64, p50_us=2.0), "p50_us", [2.0, 2.1, 2.0])
        wandering = with_reps(row("zcrpc-shm", "bulk-attach", 1 << 20, p50_us=60.0, gbytes_per_s=15.0),
                              "gbytes_per_s", [4.6, 15.0, 16.0])
        doc = document([steady, wandering])
        report.validate(doc)
        table = report.markdown(doc)
        lines = [line for line in table.splitlines() if line.startswith("| zcrpc-shm")]
        self.assertEqual(len(lines), 2)
        self.assertNotIn("⚠", lines[0])
        self.assertIn("⚠ unstable: GB/s 4.6–16.0", lines[1])
        self.assertIn("**1 of 2 rows are unstable**", table)
        # Every row has as many cells as the header.
        header = next(line for line in table.splitlines() if line.startswith("| system"))
        self.assertTrue(all(line.count("|") == header.count("|") for line in lines))

    def test_an_unsettled_warm_up_and_a_busy_machine_are_noted(self):
        r = with_reps(row("floor-tcp", "unary", 64, p50_us=30.0), "p50_us", [30.0, 31.0],
                      warmup=dict(seconds=1.0, batches=30, steady=False, first_batch=300.0, last_batch=31.0),
                      others_cpu_share=0.6)
        report.validate(document([r]))
        self.assertEqual(report.stability(r), "warm-up unsettled after 1.0 s; others used 60 % CPU")
        quiet = dict(r, others_cpu_share=0.05, warmup=dict(seconds=0.2, batches=5, steady=True))
        self.assertEqual(report.stability(quiet), "")

    def test_repetitions_with_client_and_server_on_one_cpu_are_counted(self):
        r = with_reps(row("zcrpc-tcp-busypoll", "unary", 0, p50_us=30.0), "p50_us", [30.0, 2100.0, 31.0])
        for rep, shared in zip(r["repetitions"], [False, True, None]):
            rep["same_cpu"] = shared
        report.validate(document([r]))
        self.assertEqual(report.stability(r), "⚠ unstable: p50s 30.0–2,100 µs; "
                                              "client and server on one CPU in 1 of 2 repetitions")

    def test_a_run_on_a_busy_machine_says_so_above_the_table(self):
        quiet = dict(row("floor-tcp", "unary", 64, p50_us=30.0), others_cpu_share=0.05)
        busy = dict(row("floor-tcp", "unary", 0, p50_us=30.0), others_cpu_share=0.67)
        self.assertNotIn("machine was busy", report.markdown(document([quiet])))
        table = report.markdown(document([quiet, busy]))
        self.assertIn("during 1 of 2 rows (up to 67 %)", table)

    def test_a_warm_up_that_got_slower_is_noted(self):
        r = with_reps(row("zcrpc-tcp-busypoll", "unary", 0, p50_us=4010.0), "p50_us", [4063.0, 4007.0],
                      warmup=dict(seconds=0.6, batches=20, steady=True, first_batch=22.6, last_batch=3998.0))
        self.assertEqual(report.stability(r), "warm-up got slower: 22.6 → 3,998 µs per call")
        faster = dict(r, warmup=dict(seconds=0.6, batches=20, steady=True, first_batch=3998.0, last_batch=22.6))
        self.assertEqual(report.stability(faster), "")
        rate = with_reps(row("zcrpc-shm", "rate", 64, calls_per_s=1e5), "calls_per_s", [1e5, 1e5],
                         warmup=dict(seconds=0.6, batches=20, steady=True, first_batch=7e5, last_batch=1e5))
        self.assertEqual(report.stability(rate), "warm-up got slower: 700,000 → 100,000 calls/s")

    def test_a_failed_row_keeps_its_cells(self):
        failed = row("zcrpc-tcp", "rate", 64)
        failed["error"] = "boom"
        table = report.markdown(document([failed, row("grpc", "unary", 64, p50_us=1.0)]))
        header = next(line for line in table.splitlines() if line.startswith("| system"))
        failed_line = next(line for line in table.splitlines() if "FAILED" in line)
        self.assertEqual(failed_line.count("|"), header.count("|"))


class Compare(unittest.TestCase):
    def test_spread_across_runs_uses_each_workloads_headline_figure(self):
        runs = [document([row("floor-tcp", "bulk", 1 << 20, p50_us=300.0, gbytes_per_s=g),
                          row("zcrpc-shm", "unary", 64, p50_us=p)]) for g, p in [(1.52, 2.0), (4.18, 2.2)]]
        failed = row("zcrpc-shm", "unary", 64)
        failed["error"] = "boom"
        runs.append(document([row("floor-tcp", "bulk", 1 << 20, gbytes_per_s=3.0), failed]))
        (bulk, unary) = compare.spreads(runs)
        self.assertEqual(bulk[3], [1.52, 4.18, 3.0])
        self.assertAlmostEqual(bulk[4], 4.18 / 1.52)
        self.assertEqual(unary[3], [2.0, 2.2, None])
        self.assertAlmostEqual(unary[4], 1.1)


class Schema(unittest.TestCase):
    def test_a_complete_document_validates(self):
        report.validate(document([row("grpc", "unary", 64, p50_us=1.0)]))

    def test_a_missing_figure_is_rejected(self):
        incomplete = row("grpc", "unary", 64, p50_us=1.0)
        del incomplete["p99_us"]
        with self.assertRaises(Exception):
            report.validate(document([incomplete]))

    def test_repetitions_and_dispersion_validate_and_are_optional(self):
        r = with_reps(row("grpc", "unary", 64, p50_us=1.0), "p50_us", [1.0, 1.1],
                      warmup=dict(seconds=0.3, batches=6, steady=True, first_batch=2.0, last_batch=1.0),
                      others_cpu_share=0.1)
        report.validate(document([r]))
        report.validate(document([row("grpc", "unary", 64, p50_us=1.0)]))

    def test_a_bad_dispersion_figure_is_rejected(self):
        r = with_reps(row("grpc", "unary", 64, p50_us=1.0), "p50_us", [1.0, 1.1])
        r["dispersion"]["figure"] = "p99_us"
        with self.assertRaises(Exception):
            report.validate(document([r]))

    def test_an_unknown_workload_is_rejected(self):
        with self.assertRaises(Exception):
            report.validate(document([row("grpc", "pingpong", 64)]))


if __name__ == "__main__":
    unittest.main()
