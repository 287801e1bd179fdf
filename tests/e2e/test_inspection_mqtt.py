"""scripts/predict --watch end to end: photos dropped -> the local site -> a real Mosquitto -> the line.

Everything is real: the local site (Envoy + the shipped scratch detector), mosquitto from Debian,
paho-mqtt on both sides. Waits poll with deadlines; what makes a test pass is paho's reconnect
and the outbox, never a sleep.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from PIL import Image

from conftest import photos
from support.mosquitto import Mosquitto, Pki, Subscriber, require_mosquitto
from support.server_process import ROOT, free_port
from support.site_process import SiteProcess

PREDICT = ROOT / "scripts" / "predict"
TOPIC = "line/3/results"
THRESHOLD, BAND = 0.65, "0.25-0.65"


@pytest.fixture(scope="module")
def site():
    require_mosquitto()
    # The watcher's own venv (paho-mqtt) is built before any clock starts.
    sys.path.insert(0, str(ROOT / "scripts"))
    from inspection.venv import predict_python

    predict_python()
    s = SiteProcess([]).start()
    yield s
    s.stop()


def blank_jpeg() -> bytes:
    """An empty belt: the model finds nothing, so it is a photo for the relabel folder."""
    out = io.BytesIO()
    Image.new("RGB", (450, 300), (128, 128, 128)).save(out, "JPEG")
    return out.getvalue()


PHOTOS = [(p.path.name, p.path.read_bytes()) for p in photos()] + [("blank.jpg", blank_jpeg())]


def drop(folder: Path, name: str, data: bytes) -> None:
    """As a camera's FTP upload does: a temporary name, then a rename."""
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)


def wait_for(condition, timeout: float, what: str, *procs: Watcher) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    logs = "\n".join(p.log() for p in procs)
    raise AssertionError(f"not met in {timeout}s: {what}\n{logs}")


class Watcher:
    """scripts/predict --watch as a user starts it, output collected line by line."""

    def __init__(self, tmp: Path, model_url: str, mqtt_url: str, *extra: str) -> None:
        self.drop, self.done, self.failed = tmp / "drop", tmp / "done", tmp / "failed"
        self.outbox, self.relabel = tmp / "outbox", tmp / "relabel"
        self.drop.mkdir(exist_ok=True)
        self.cmd = [
            sys.executable, str(PREDICT), "--watch", str(self.drop), "--url", model_url, "--model", "scratch",
            "--mqtt", mqtt_url, "--outbox", str(self.outbox), "--done", str(self.done), "--failed", str(self.failed),
            "--relabel", str(self.relabel), "--threshold", str(THRESHOLD), "--uncertain", BAND, "--poll", "0.2",
            *extra,
        ]  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.readers: list[threading.Thread] = []

    def start(self, fault: str | None = None) -> Watcher:
        """``fault``: a crash point (scripts/inspection/faults.py) where the watcher SIGKILLs itself."""
        self.out.clear()
        self.err.clear()
        env = {k: v for k, v in os.environ.items() if k != "PREDICT_FAULT"}
        if fault:
            env["PREDICT_FAULT"] = fault
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        self.readers = [
            threading.Thread(target=lambda s=stream, i=into: [i.append(line.rstrip("\n")) for line in s])
            for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()
        wait_for(lambda: any(line.startswith("watching ") for line in self.err) or self.proc.poll() is not None,
                 60, "the watcher starts", self)  # fmt: skip
        assert self.proc.poll() is None, self.log()
        return self

    def queued(self) -> int:
        return len(list(self.outbox.glob("*.json")))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop it and read its output to the end (the readers are joined before anyone reads)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait()

    def wait(self, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=10)
            assert not reader.is_alive(), "the watcher's output did not end"
        return self.proc.returncode

    def log(self) -> str:
        return "watcher stdout:\n" + "\n".join(self.out[-30:]) + "\nwatcher stderr:\n" + "\n".join(self.err[-30:])


def run_predict(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PREDICT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def model_answer(site: SiteProcess, data: bytes) -> dict:
    import base64

    body = {"binData": base64.b64encode(data).decode()}
    resp = requests.post(f"{site.url}/model/scratch/api/v0.1/predictions", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["jsonData"]


# --- the loop --------------------------------------------------------------------------


def test_each_photo_dropped_arrives_as_one_message_the_line_can_act_on(site, broker, tmp_path):
    sub = Subscriber(broker.port, TOPIC, "line-controller-1")
    w = Watcher(tmp_path, site.url, broker.url(TOPIC)).start()
    try:
        for n, (name, data) in enumerate(PHOTOS, 1):
            drop(w.drop, name, data)
            wait_for(lambda n=n: len(sub.unique()) >= n, 30, f"message {n} ({name})", w)
        wait_for(lambda: w.queued() == 0, 10, "outbox empty", w)
    finally:
        code = w.stop()
        sub.stop()
    assert code == 0, w.log()
    got = sub.unique()
    assert [m["image"] for m in got] == [name for name, _ in PHOTOS]
    assert len(sub.messages) == len(PHOTOS)  # no duplicate in the plain case either
    served_sha = requests.get(f"{site.url}/model/scratch/api/v1.0/metadata", timeout=10).json()["custom"]["sha256"]
    for (name, data), m in zip(PHOTOS, got, strict=True):
        answer = model_answer(site, data)
        assert m["status"] == "inspected"
        assert m["detections"] == answer["detections"]  # as the model answers
        assert m["model"] == {"name": "scratch", "version": served_sha[:12], "sha256": served_sha}
        assert m["defect"] is any(d["confidence"] >= THRESHOLD for d in answer["detections"])
        captured = datetime.fromisoformat(m["captured_at"].replace("Z", "+00:00"))
        mtime = datetime.fromtimestamp((w.done / name).stat().st_mtime, tz=timezone.utc)
        assert abs((captured - mtime).total_seconds()) < 0.002
        assert m["inspected_at"] >= m["captured_at"]
    assert len({m["result_id"] for m in got}) == len(PHOTOS)
    assert {m["defect"] for m in got} == {True, False}  # the thresholds split this set: both cases seen
    # Every photo filed under done, none left behind, nothing failed.
    assert sorted(p.name for p in w.done.iterdir()) == sorted(name for name, _ in PHOTOS)
    assert list(w.drop.iterdir()) == []
    assert list(w.failed.iterdir()) == []
    # Relabel: the empty ones and those whose best detection is in the band, with the model's answer.
    low, high = (float(x) for x in BAND.split("-"))
    expected = {
        m["image"] for m in got if not m["detections"] or low <= max(d["confidence"] for d in m["detections"]) < high
    }
    assert "blank.jpg" in expected and len(expected) < len(PHOTOS)
    assert {p.name for p in w.relabel.glob("*.jpg")} == expected
    for name in expected:
        sidecar = json.loads((w.relabel / f"{name}.json").read_text())
        assert (w.relabel / name).read_bytes() == dict(PHOTOS)[name]
        assert sidecar["answer"]["detections"] == next(m for m in got if m["image"] == name)["detections"]
    # One line per photo, with the counters.
    lines = [line for line in w.out if " | inspected " in line]
    assert len(lines) == len(PHOTOS)
    assert re.search(rf"\| inspected {len(PHOTOS)} published \d+ queued \d+ failed 0$", lines[-1]), lines[-1]
    assert w.err[-1] == f"stopped: inspected {len(PHOTOS)} published {len(PHOTOS)} queued 0 failed 0"


def test_a_photo_the_model_refuses_goes_to_failed_with_the_reason(site, broker, tmp_path):
    sub = Subscriber(broker.port, TOPIC, "line-controller-2")
    w = Watcher(tmp_path, site.url, broker.url(TOPIC)).start()
    try:
        drop(w.drop, "truncated.jpg", PHOTOS[0][1][:300])  # a camera that lost power mid-write
        drop(w.drop, "after.jpg", PHOTOS[1][1])
        wait_for(lambda: len(sub.unique()) >= 2, 30, "two messages", w)
    finally:
        w.stop()
        sub.stop()
    refused, after = sub.unique()
    assert refused["image"] == "truncated.jpg" and refused["status"] == "failed"
    assert refused["defect"] is None and refused["detections"] is None  # the line must not pass this part
    assert refused["error"].startswith("HTTP 400: binData: ")
    assert after["status"] == "inspected"  # the next photo is not held up
    assert (w.failed / "truncated.jpg").read_bytes() == PHOTOS[0][1][:300]
    reason = (w.failed / "truncated.jpg.reason.txt").read_text()
    assert reason.startswith(refused["error"]) and refused["result_id"] in reason
    assert [p.name for p in w.done.iterdir()] == ["after.jpg"]
    assert any("truncated.jpg: FAILED: HTTP 400" in line and "failed 1" in line for line in w.out)


def test_broker_stopped_mid_run_every_result_arrives_once_in_order(site, broker, tmp_path):
    names = [f"part-{i:02d}.jpg" for i in range(8)]
    data = {n: PHOTOS[i % 4][1] for i, n in enumerate(names)}
    sub = Subscriber(broker.port, TOPIC, "line-controller-3")
    w = Watcher(tmp_path, site.url, broker.url(TOPIC)).start()
    try:
        for n, name in enumerate(names[:3], 1):
            drop(w.drop, name, data[name])
            wait_for(lambda n=n: len(sub.unique()) >= n, 30, f"message {n}", w)
        broker.stop()
        for name in names[3:6]:
            drop(w.drop, name, data[name])
        wait_for(lambda: w.queued() == 3, 30, "three results queued while the broker is down", w)
        assert any(line.startswith("mqtt: lost the broker") for line in w.err)
        assert len(list(w.done.iterdir())) == 6  # inspection went on
        broker.start()
        for name in names[6:]:
            drop(w.drop, name, data[name])
        wait_for(lambda: len(sub.unique()) == len(names), 60, "every result after the restart", w)
        wait_for(lambda: w.queued() == 0, 10, "outbox empty", w)
    finally:
        w.stop()
        sub.stop()
    got = sub.unique()
    assert [m["image"] for m in got] == names  # in order, each exactly once after de-duplication
    assert len({m["result_id"] for m in got}) == len(names)  # eight photos, eight results
    assert_resends_are_identical(sub.messages)


def assert_resends_are_identical(messages: list[dict]) -> None:
    """At least once means a result may arrive twice: then as the same message, never as another
    inspection of the photo (other detections, another inspected_at) under the same result_id."""
    first: dict[str, dict] = {}
    for m in messages:
        assert first.setdefault(m["result_id"], m) == m, f"two different results for {m['image']}"


def test_watcher_killed_while_results_wait_sends_them_when_restarted(site, tmp_path):
    broker = Mosquitto(tmp_path / "broker")  # not started: the uplink is down
    w = Watcher(tmp_path, site.url, broker.url(TOPIC)).start()
    names = ["k1.jpg", "k2.jpg", "k3.jpg"]
    for i, name in enumerate(names):
        drop(w.drop, name, PHOTOS[i][1])
    wait_for(lambda: w.queued() == 3 and len(list(w.done.iterdir())) == 3, 30, "three results queued", w)
    queued = sorted(p.read_bytes() for p in w.outbox.glob("*.json"))
    assert w.stop(signal.SIGKILL) == -signal.SIGKILL
    broker.start()
    sub = Subscriber(broker.port, TOPIC, "line-controller-4")
    try:
        w.start()
        assert any("(3 waiting;" in line for line in w.err)
        wait_for(lambda: len(sub.unique()) == 3, 30, "the queued results", w)
        wait_for(lambda: w.queued() == 0, 10, "outbox empty", w)
    finally:
        w.stop()
        sub.stop()
        broker.stop()
    assert [m["image"] for m in sub.unique()] == names
    assert sorted(json.dumps(m).encode() for m in sub.unique()) == sorted(
        json.dumps(json.loads(q)).encode() for q in queued
    )  # exactly what was stored before the kill


def test_killed_between_storing_a_result_and_filing_its_photo_the_line_gets_one_result(site, broker, tmp_path):
    """The crash window: the result is in the outbox, the photo still in the drop folder. The
    watcher SIGKILLs itself exactly there (faults.AFTER_OUTBOX_BEFORE_MOVE); after a restart the
    photo is filed with the stored result, not inspected again, and the line never sees a second,
    different result for it."""
    sub = Subscriber(broker.port, TOPIC, "line-controller-9")
    w = Watcher(tmp_path, site.url, broker.url(TOPIC))
    try:
        w.start(fault="after-outbox-before-move")
        drop(w.drop, "k1.jpg", PHOTOS[0][1])
        assert w.wait(timeout=60) == -signal.SIGKILL, w.log()
        assert [p.name for p in w.drop.iterdir()] == ["k1.jpg"]  # not filed: the crash came first
        (held,) = list(w.outbox.glob("*.held"))
        stored = json.loads(held.read_bytes())
        w.start()
        wait_for(lambda: len(sub.unique()) == 1 and w.queued() == 0, 30, "the stored result, sent", w)
        wait_for(lambda: any(line.endswith("failed 0") for line in w.out), 10, "its line", w)
    finally:
        w.stop()
        sub.stop()
    assert [p.name for p in w.done.iterdir()] == ["k1.jpg"] and list(w.drop.iterdir()) == []
    assert_resends_are_identical(sub.messages)
    assert sub.unique() == [stored]  # the result stored before the crash: same inspected_at, no re-inspection


# --- clear errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, words",
    [
        ("tcp://127.0.0.1:1883/t", "--mqtt 'tcp://127.0.0.1:1883/t': expected mqtt://host:1883/topic"),
        ("mqtt://127.0.0.1:1883", "no topic"),
        ("mqtt://127.0.0.1:1883/line/#", "wildcard"),
        ("mqtt://127.0.0.1:70000/t", "port must be a number"),
    ],
)
def test_bad_broker_url_is_a_usage_error(tmp_path, url, words):
    res = run_predict("--watch", str(tmp_path), "--mqtt", url)
    assert res.returncode == 2, res.stderr
    assert words in res.stderr and "Traceback" not in res.stderr


def test_bad_credentials_are_a_clear_error_and_good_ones_work(site, tmp_path):
    broker = Mosquitto(tmp_path / "broker", users={"line3": "s3cret"}).start()
    wrong, right = tmp_path / "wrong", tmp_path / "right"
    wrong.write_text("guess\n")
    right.write_text("s3cret\n")
    drop_dir = tmp_path / "drop"
    drop_dir.mkdir()
    try:
        for creds in (["--mqtt-user", "line3", "--mqtt-password-file", str(wrong)], []):
            res = run_predict("--watch", str(drop_dir), "--url", site.url, "--mqtt", broker.url(TOPIC), *creds)
            assert res.returncode == 1, res.stderr
            assert f"predict: broker 127.0.0.1:{broker.port} refused the connection" in res.stderr
            assert "Not authorized" in res.stderr and "Traceback" not in res.stderr
        sub = Subscriber(broker.port, TOPIC, "line-controller-5", "line3", "s3cret")
        w = Watcher(tmp_path, site.url, broker.url(TOPIC), "--mqtt-user", "line3", "--mqtt-password-file", str(right))
        w.start()
        try:
            drop(w.drop, PHOTOS[0][0], PHOTOS[0][1])
            wait_for(lambda: len(sub.unique()) == 1, 30, "a message through the authenticated broker", w)
        finally:
            w.stop()
            sub.stop()
    finally:
        broker.stop()


@pytest.mark.parametrize(
    "url_of, model, code, words",
    [
        (lambda s: "http//127.0.0.1", "scratch", 2, "argument --url: 'http//127.0.0.1': expected http(s)://host:port"),
        (lambda s: f"http://127.0.0.1:{free_port()}", "scratch", 1, "model unreachable at http://127.0.0.1:"),
        (lambda s: s.url, "nosuch", 1, "no model 'nosuch' at"),
    ],
    ids=["bad-url", "unreachable", "unknown-model"],
)
def test_a_model_that_cannot_be_used_is_a_clear_error(site, tmp_path, url_of, model, code, words):
    res = run_predict("--watch", str(tmp_path), "--url", url_of(site), "--model", model, "--mqtt", "mqtt://b/t")
    assert res.returncode == code, res.stderr
    assert words in res.stderr and "Traceback" not in res.stderr


def test_tls_broker_with_a_client_certificate(site, tmp_path):
    pki, stranger = Pki(tmp_path / "pki"), Pki(tmp_path / "other-ca")
    broker = Mosquitto(tmp_path / "broker", tls=pki).start()
    client_cert = ["--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
    try:
        res = run_predict(
            "--watch", str(tmp_path), "--url", site.url, "--mqtt", broker.url(TOPIC), "--tls-ca", str(stranger.ca),
            *client_cert,
        )  # fmt: skip
        assert res.returncode == 1, res.stderr
        assert f"predict: mqtts://127.0.0.1:{broker.port}: certificate not trusted" in res.stderr
        sub = Subscriber(broker.port, TOPIC, "line-controller-6", tls=pki)
        w = Watcher(tmp_path, site.url, broker.url(TOPIC), "--tls-ca", str(pki.ca), *client_cert).start()
        try:
            drop(w.drop, PHOTOS[0][0], PHOTOS[0][1])
            wait_for(lambda: len(sub.unique()) == 1, 30, "a message over TLS", w)
        finally:
            w.stop()
            sub.stop()
    finally:
        broker.stop()


def test_model_down_mid_run_the_photo_waits_and_goes_through_when_it_is_back(site, broker, tmp_path):
    first = SiteProcess([]).start()
    second = SiteProcess([], port=first.port)  # the same gateway URL, back after a restart
    sub = Subscriber(broker.port, TOPIC, "line-controller-7")
    w = Watcher(tmp_path, first.url, broker.url(TOPIC)).start()
    try:
        first.stop()
        drop(w.drop, "while-down.jpg", PHOTOS[1][1])
        wait_for(lambda: any("while-down.jpg: model unavailable" in line for line in w.err), 30, "a retry", w)
        assert (w.drop / "while-down.jpg").exists()  # not failed, not lost: it waits
        second.start()
        wait_for(lambda: len(sub.unique()) == 1, 90, "the photo inspected once the model is back", w)
    finally:
        w.stop()
        sub.stop()
        second.stop()
    (result,) = sub.unique()
    assert result["image"] == "while-down.jpg" and result["status"] == "inspected"
    assert list(w.failed.iterdir()) == [] and [p.name for p in w.done.iterdir()] == ["while-down.jpg"]


class AlwaysFailsOnPhotos(http.server.BaseHTTPRequestHandler):
    """A model route whose metadata answers but whose every prediction is a 500 (a server bug on
    some photo): the one failure mode the real server cannot be made to produce on demand."""

    def do_GET(self):  # noqa: N802 - http.server's API
        self._reply(200, {"name": "scratch"})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(500, {"status": {"code": -1, "info": "model crashed on this photo", "status": "FAILURE"}})

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_a_photo_the_model_keeps_failing_on_goes_to_failed_after_the_attempts(site, broker, tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AlwaysFailsOnPhotos)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    sub = Subscriber(broker.port, TOPIC, "line-controller-8")
    w = Watcher(tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}", broker.url(TOPIC), "--attempts", "3").start()
    try:
        drop(w.drop, "crasher.jpg", PHOTOS[0][1])
        wait_for(lambda: len(sub.unique()) == 1, 30, "the failure message", w)
    finally:
        w.stop()
        sub.stop()
        httpd.shutdown()
    (result,) = sub.unique()
    assert result["status"] == "failed"
    assert result["error"] == "HTTP 500: model crashed on this photo (after 3 attempts)"
    assert sum("crasher.jpg: model failed (HTTP 500" in line for line in w.err) == 2  # two retries
    assert (w.failed / "crasher.jpg.reason.txt").read_text().startswith(result["error"])
