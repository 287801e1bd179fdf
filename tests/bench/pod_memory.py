#!/usr/bin/env python3
"""What one model pod's memory request must cover: the server's whole process group, measured.

Starts the real server (seldon-core-microservice, the model from bundle.yaml) as a pod runs it,
sends warm requests, then sums over every process of the group (gunicorn master and workers,
the gRPC and metrics servers): RSS (counts pages shared between forked processes once per
process: an upper bound) and PSS (shares them out: close to what the pod's cgroup is charged).

    .tox/e2e/bin/python tests/bench/pod_memory.py [--workers 1 2] [--requests 50]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.procs import processes_with_env  # noqa: E402
from support.server_process import ServerProcess  # noqa: E402

MODEL = ROOT / "models" / "scratch-detector" / "model-fp32.onnx"
SHA = "a9721007d2a7a73c90533f7c20c80f0b1cd68f60ec6010bbabca0601b4b4621d"  # the larger variant (overlays/fp32.yaml)
IMAGES = sorted((ROOT / "tests" / "data" / "metal-tags" / "images").glob("*.jpg"))


def _kib(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def group_memory(marker: str) -> dict[str, float]:
    """MiB summed over the server's processes (the launcher's guard left out)."""
    rss = pss = hwm = 0
    count = 0
    for pid, cmdline in processes_with_env(marker):
        if "guard.py" in cmdline:
            continue
        try:
            rss += _kib(Path(f"/proc/{pid}/status"), "VmRSS")
            hwm += _kib(Path(f"/proc/{pid}/status"), "VmHWM")
            pss += _kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss")
        except OSError:
            continue
        count += 1
    return {"processes": count, "rss_mib": rss / 1024, "peak_rss_mib": hwm / 1024, "pss_mib": pss / 1024}


def measure(workers: int, n_requests: int) -> dict[str, float]:
    marker = f"POD_MEMORY_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    params = {"model_uri": MODEL.as_uri(), "model_sha256": SHA, "model_name": "scratch"}
    with ServerProcess(params=params, workers=workers, env={name: value}) as server:
        server.wait_ready()
        for i in range(n_requests):
            body = {"binData": base64.b64encode(IMAGES[i % len(IMAGES)].read_bytes()).decode()}
            resp = requests.post(f"{server.url}/api/v0.1/predictions", json=body, timeout=60)
            resp.raise_for_status()
        return {"workers": workers, **group_memory(marker)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    for workers in args.workers:
        print(json.dumps({k: round(v, 1) for k, v in measure(workers, args.requests).items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
