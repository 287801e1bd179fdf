"""A handful of requests through the benchmark harness, so `tox -e bench` never rots."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "tests/bench/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_row_is_measured_and_reported(tmp_path):
    bench = load_bench()
    assert bench.main(["--requests", "4", "--warmup", "1", "--variants", "int8", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "latest.json").read_text())
    rows = {(r["row"], r["concurrency"], r["workers"]) for r in report["results"]}
    for row in ("1 onnxruntime", "2 server-work"):
        assert {(row, 1, None), (row, 4, None)} <= rows
    for row, workers in (
        ("3 rest-binData", 1),
        ("3 rest-binData", 2),
        ("4 rest-ndarray", 1),
        ("5 grpc", 1),
        ("6 envoy-rest", 1),
    ):
        assert {(row, 1, workers), (row, 4, workers)} <= rows
    assert all(r["failures"] == 0 and r["p50_ms"] > 0 for r in report["results"])
    assert {t["target"] for t in report["targets"]} >= {"server RSS per worker < 300 MB"}
    assert (tmp_path / "latest.png").stat().st_size > 10_000
