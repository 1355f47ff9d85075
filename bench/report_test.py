#!/usr/bin/env python3
"""Unit tests of report.py: the ratios the table prints and the schema
check, on hand-made results."""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
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


class Schema(unittest.TestCase):
    def test_a_complete_document_validates(self):
        report.validate(document([row("grpc", "unary", 64, p50_us=1.0)]))

    def test_a_missing_figure_is_rejected(self):
        incomplete = row("grpc", "unary", 64, p50_us=1.0)
        del incomplete["p99_us"]
        with self.assertRaises(Exception):
            report.validate(document([incomplete]))

    def test_an_unknown_workload_is_rejected(self):
        with self.assertRaises(Exception):
            report.validate(document([row("grpc", "pingpong", 64)]))


if __name__ == "__main__":
    unittest.main()
