"""Closed-loop load generation and the measurements every benchmark row shares.

Fixed request counts (never wall-clock loops), warm-up excluded, latency
percentiles, throughput, and the peak RSS of a server's whole process group.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    row: str
    variant: str
    concurrency: int
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput_rps: float
    peak_rss_mb: float | None = None
    workers: int | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def closed_loop(
    call: Callable[[int], bool], concurrency: int, requests: int, warmup: int
) -> tuple[list[float], int, float]:
    """Run ``requests`` calls over ``concurrency`` workers; returns (latencies ms, failures, seconds).

    ``call(worker_index)`` returns True on success. Each worker first makes its share of the
    warm-up calls, then all start the measured calls together.
    """
    per_worker = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    start_gate = threading.Barrier(concurrency + 1)
    end_gate = threading.Barrier(concurrency + 1)

    def worker(index: int) -> None:
        for _ in range(max(1, warmup // concurrency)):
            call(index)
        start_gate.wait()
        mine = []
        bad = 0
        for _ in range(per_worker[index]):
            t0 = time.perf_counter()
            ok = call(index)
            mine.append((time.perf_counter() - t0) * 1000)
            bad += not ok
        with lock:
            latencies.extend(mine)
            failures[0] += bad
        end_gate.wait()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    end_gate.wait()
    elapsed = time.perf_counter() - t0
    return latencies, failures[0], elapsed


def summarise(
    row: str, variant: str, concurrency: int, latencies: list[float], failures: int, seconds: float
) -> Result:
    return Result(
        row=row,
        variant=variant,
        concurrency=concurrency,
        requests=len(latencies),
        failures=failures,
        p50_ms=round(statistics.median(latencies), 3),
        p95_ms=round(percentile(latencies, 0.95), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
        throughput_rps=round(len(latencies) / seconds, 2),
    )


class HttpClients:
    """One keep-alive connection per worker: the client costs as little CPU as it can."""

    def __init__(self, port: int, path: str, body: bytes) -> None:
        self.port, self.path, self.body = port, path, body
        self.local = threading.local()

    def __call__(self, _index: int) -> bool:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("POST", self.path, body=self.body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                self.local.conn = None
            return resp.status == 200 and b'"detections"' in data
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            return False


def peak_rss_mb(marker: str) -> tuple[float, float]:
    """(sum, largest) VmHWM in MB over live processes whose environment holds ``marker``.

    Every process of one model server (gunicorn master and workers, gRPC and metrics
    servers) inherits the marker; the guard process that launched them is left out.
    """
    from support.procs import processes_with_env

    sizes = []
    for pid, cmdline in processes_with_env(marker):
        if "guard.py" in cmdline:
            continue
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except (OSError, ValueError):
            continue
    return (round(sum(sizes), 1), round(max(sizes), 1)) if sizes else (0.0, 0.0)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
