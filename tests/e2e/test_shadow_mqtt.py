"""The shadow model on the line, end to end: real model servers, a real Mosquitto, the real watcher.

The stable model is the bundle's int8 behind the local site (Envoy, /model/scratch/). The fp32
model shadows it the way a site runs a shadow: the local site configured with shadow-model-uri
and shadow-model-sha256 (the charm's own render), its Envoy routing /model/scratch/shadow/, and the
watcher given a bare --shadow. The other shadows are real servers on a URL of their own
(--shadow URL): a server killed mid-run, a deliberately worse model (the synthetic YOLO of
tests/support/synthetic_yolo.py, which reports the same boxes on every photo) and a gateway that
answers only after a long delay. What a user notices is asserted: the line's
messages and counters, the record, the <topic>/shadow messages, the metrics, the relabel folder.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import test_inspection_mqtt as line_tests
from prometheus_client.parser import text_string_to_metric_families
from test_inspection_mqtt import PHOTOS, Watcher, drop, wait_for

from conftest import PHOTOS as DATA
from conftest import shipped_threshold, shipped_variant, start
from support.mosquitto import Subscriber
from support.server_process import ROOT, free_port
from support.site_process import SiteProcess

TOPIC = "line/3/results"
site, broker = line_tests.site, line_tests.broker  # the local site (int8) and a Mosquitto, as the line's tests use
THRESHOLD = shipped_threshold()  # the served threshold, from the model card: the line's default


def records(folder: Path) -> list[dict]:
    path = folder / "comparisons.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def compared(folder: Path) -> dict[str, dict]:
    return {e["image"]: e for e in records(folder) if e["status"] == "compared"}


def shadow_watcher(tmp_path: Path, site_url: str, broker_url: str, shadow_url: str, *extra: str) -> Watcher:
    w = Watcher(tmp_path, site_url, broker_url, "--threshold", str(THRESHOLD), "--shadow", shadow_url,
                "--shadow-record", str(tmp_path / "record"), *extra)  # fmt: skip
    w.record = tmp_path / "record"
    return w


@pytest.fixture(scope="module")
def fp32_server(tmp_path_factory):
    path, sha = shipped_variant("fp32")
    server = start(tmp_path_factory.mktemp("fp32"), model_uri=path.as_uri(), model_sha256=sha)
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shadow_site():
    """The local site with the fp32 model as int8's shadow: /model/scratch/shadow/ is the charm's route."""
    from test_shadow_site import shadow_args

    s = SiteProcess(shadow_args()).start(ready_lines=2)
    yield s
    s.stop()


def test_fp32_shadowing_int8_agrees_as_evaluate_says(shadow_site, broker, tmp_path):
    """The record's per-photo verdicts are those evaluate's endpoint client gets from each model."""
    from models.training.dataset import load_coco
    from models.training.evaluate import endpoint_predictions

    site = shadow_site
    metrics_port = free_port()
    sub = Subscriber(broker.port, f"{TOPIC}/shadow", "dashboard-1")
    results = Subscriber(broker.port, TOPIC, "line-controller-1")
    # a bare --shadow: the watcher derives the charm's shadow route from --url and --model
    shadow_url = f"{site.url}/model/scratch/shadow/api/v0.1/predictions"
    w = Watcher(tmp_path, site.url, broker.url(TOPIC), "--threshold", str(THRESHOLD), "--shadow",
                "--shadow-record", str(tmp_path / "record"), "--metrics-port", str(metrics_port))  # fmt: skip
    w.record = tmp_path / "record"
    w.start()
    try:
        for name, data in PHOTOS:
            drop(w.drop, name, data)
        wait_for(lambda: len(results.unique()) == len(PHOTOS), 60, "every result on the line", w)
        wait_for(lambda: len(compared(w.record)) == len(PHOTOS), 60, "every photo compared", w)
        wait_for(lambda: len(sub.unique()) == len(PHOTOS), 30, "every summary on <topic>/shadow", w)
        scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    finally:
        code = w.stop()
        sub.stop()
        results.stop()
    assert code == 0, w.log()
    got = compared(w.record)
    stable_sha, shadow_sha = shipped_variant("int8")[1], shipped_variant("fp32")[1]
    # evaluate's endpoint client on the same photos, each model at its own URL
    samples, names = load_coco(DATA)
    stable, _ = endpoint_predictions(f"{site.url}/model/scratch/api/v0.1/predictions", samples, names[0], 30)
    shadow, _ = endpoint_predictions(shadow_url, samples, names[0], 30)
    agree = 0
    for sample, a, b in zip(samples, stable, shadow, strict=True):
        e = got[sample.path.name]
        assert (e["stable"]["sha256"], e["shadow"]["sha256"]) == (stable_sha, shadow_sha)
        assert e["stable"]["defect"] is any(c >= THRESHOLD for c, _ in a), sample.path.name
        assert e["shadow"]["defect"] is any(c >= THRESHOLD for c, _ in b), sample.path.name
        agree += e["stable"]["defect"] == e["shadow"]["defect"]
        assert e["agree"] is (e["stable"]["defect"] == e["shadow"]["defect"])
        assert e["photo_sha256"] and e["stable"]["latency_ms"] > 0 and e["shadow"]["latency_ms"] > 0
    # the blank belt: neither model finds anything, so both say ok
    assert got["blank.jpg"]["agree"] and not got["blank.jpg"]["stable"]["defect"]
    agree += 1
    report = subprocess.run(
        [sys.executable, str(ROOT / "scripts/shadow-report"), "scratch", "--record", str(w.record), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    figures = json.loads(report.stdout)
    assert (figures["photos_compared"], figures["agreements"]) == (len(PHOTOS), agree)
    print(f"\nfp32 shadowing int8 on {len(PHOTOS)} photos: agreement {figures['agreement']} "
          f"CI95 {figures['agreement_ci95']} flips {figures['flips']} latency {figures['latency_ms']}")  # fmt: skip
    # the summaries on <topic>/shadow carry the same running totals; the last one has them all
    last = max(sub.unique(), key=lambda m: m["totals"]["photos_compared"])["totals"]
    assert (last["photos_compared"], last["agreements"], last["shadow_sha256"]) == (len(PHOTOS), agree, shadow_sha)
    values = {s.name: s.value for f in text_string_to_metric_families(scraped) for s in f.samples if not s.labels}
    assert values["defect_shadow_photos_compared_total"] == len(PHOTOS)
    assert values["defect_shadow_agreements_total"] == agree
    assert values["defect_shadow_failures_total"] == 0
    assert values["defect_shadow_agreement_ci95_low"] == pytest.approx(figures["agreement_ci95"][0], abs=1e-4)


def test_a_worse_shadow_hands_its_disagreements_to_the_relabel_folder(site, broker, synthetic_model, tmp_path):
    """The synthetic model reports a scratch at 0.9 on every photo: each photo the stable int8 calls ok is a flip."""
    path, sha = synthetic_model
    worse = start(tmp_path, model_uri=path.as_uri(), model_sha256=sha)
    worse.wait_ready()
    w = shadow_watcher(tmp_path, site.url, broker.url(TOPIC), f"{worse.url}/api/v0.1/predictions")
    w.start()
    try:
        for name, data in PHOTOS:
            drop(w.drop, name, data)
        wait_for(lambda: len(compared(w.record)) == len(PHOTOS), 90, "every photo compared", w)
    finally:
        code = w.stop()
        worse.stop()
    assert code == 0, w.log()
    flips = {name for name, e in compared(w.record).items() if not e["agree"]}
    assert "blank.jpg" in flips  # int8 finds nothing on an empty belt; the worse model a "scratch"
    for name in flips:
        sidecar = json.loads((w.relabel / f"{name}.json").read_text())
        assert sidecar["answer"]["model"]["sha256"] == shipped_variant("int8")[1]
        assert sidecar["shadow_answer"]["model"]["sha256"] == sha
        assert "shadow disagrees: stable ok" in sidecar["why"]
        assert (w.relabel / name).read_bytes() == (w.done / name).read_bytes()
    agreed = set(compared(w.record)) - flips
    assert all("shadow_answer" not in json.loads(p.read_text()) for p in w.relabel.glob("*.json")
               if p.name[: -len(".json")] in agreed)  # fmt: skip


def test_the_shadow_killed_mid_run_changes_nothing_on_the_line(site, broker, tmp_path):
    path, sha = shipped_variant("fp32")
    victim = start(tmp_path, model_uri=path.as_uri(), model_sha256=sha)
    victim.wait_ready()
    results = Subscriber(broker.port, TOPIC, "line-controller-2")
    w = shadow_watcher(tmp_path, site.url, broker.url(TOPIC), f"{victim.url}/api/v0.1/predictions")
    w.start()
    try:
        first, rest = PHOTOS[:2], PHOTOS[2:]
        for name, data in first:
            drop(w.drop, name, data)
        wait_for(lambda: len(compared(w.record)) == len(first), 60, "the first photos compared", w)
        victim.stop()  # the shadow goes away mid-run
        for name, data in rest:
            drop(w.drop, name, data)
        wait_for(lambda: len(results.unique()) == len(PHOTOS), 60, "every result on the line", w)
        failed = lambda: [e for e in records(w.record) if e["status"] == "shadow_failed"]  # noqa: E731
        wait_for(lambda: len(failed()) == len(rest), 60, "the shadow's failures recorded", w)
    finally:
        code = w.stop()
        results.stop()
    assert code == 0, w.log()
    got = results.unique()
    assert [m["image"] for m in got] == [n for n, _ in PHOTOS]
    assert all(m["status"] == "inspected" for m in got)
    assert f"stopped: inspected {len(PHOTOS)} published {len(PHOTOS)} queued 0 failed 0" in w.err
    assert all(" FAILED" not in line for line in w.out)
    assert list(w.failed.iterdir()) == []


class SlowGateway:
    """A shadow that answers HTTP 503 only after ``delay`` seconds: slow and refusing at once."""

    def __init__(self, delay: float) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v0.1/predictions"

    def stop(self) -> None:
        self.server.shutdown()


def test_a_slow_shadow_does_not_slow_the_line_and_its_pending_work_survives_a_restart(
    site, broker, fp32_server, tmp_path
):
    slow = SlowGateway(delay=20)
    results = Subscriber(broker.port, TOPIC, "line-controller-3")
    w = shadow_watcher(tmp_path, site.url, broker.url(TOPIC), slow.url, "--timeout", "30")
    w.start()
    try:
        started = time.monotonic()
        for name, data in PHOTOS:
            drop(w.drop, name, data)
        # Were the line to wait for the shadow, 5 photos would take 100 s: they take what the model takes.
        wait_for(lambda: len(results.unique()) == len(PHOTOS), 15, "every result while the shadow is slow", w)
        took = time.monotonic() - started
    finally:
        code = w.stop()
        slow.stop()
    assert code == 0, w.log()
    assert took < 15 and all(m["status"] == "inspected" for m in results.unique())
    pending = list((w.record / "pending").glob("*.json"))
    assert len(pending) >= len(PHOTOS) - 1  # at most the one in flight was answered (503) before the stop
    # Restarted with a shadow that answers: the pending photos are compared, none inspected twice.
    w2 = shadow_watcher(tmp_path, site.url, broker.url(TOPIC), f"{fp32_server.url}/api/v0.1/predictions")
    w2.start()
    try:
        wait_for(lambda: len(compared(w2.record)) >= len(pending), 60, "the pending photos compared", w2)
        wait_for(lambda: not list((w2.record / "pending").glob("*.json")), 10, "nothing pending", w2)
    finally:
        code = w2.stop()
        results.stop()
    assert code == 0, w2.log()
    assert len(results.unique()) == len(PHOTOS)  # the restart inspected nothing again
