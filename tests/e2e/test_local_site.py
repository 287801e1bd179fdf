"""The local site end to end: the real Envoy in front of real model servers, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import photos
from support.server_process import ROOT
from support.site_process import SiteProcess, processes_of_site
from support.steady_client import SteadyClient
from support.synthetic_yolo import build

PHOTO = photos()[0]
BODY = json.dumps({"binData": PHOTO.b64})
HEADERS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Three tiny models that answer differently, so a response says which one served it."""
    d = tmp_path_factory.mktemp("site-models")
    out = {}
    for name, boxes in {"a": 1, "b": 2, "c": 3}.items():
        path = d / f"{name}.onnx"
        cands = [(60 + 100 * i, 100, 40, 20, 0, 0.9) for i in range(boxes)]
        out[name] = (path, build(path, (256, 384), ["scratch"], cands))
    return out


def sets(app: str, model: tuple[Path, str]) -> list[str]:
    return [f"{app}.model-uri={model[0].as_uri()}", f"{app}.model-sha256={model[1]}"]


def as_args(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def second_model_overlay(tmp_path: Path) -> Path:
    overlay = tmp_path / "second.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "applications": {"dents": {"charm": "./build/onnx-model.charm", "options": {"model-name": "dents"}}},
                # As on a real site: the route's gateway comes from istio-pilot (the site refuses without).
                "relations": [["dents:gateway-info", "istio-pilot:gateway-info"]],
            }
        )
    )
    return overlay


def call(site: SiteProcess, prefix: str = "/model/scratch/", path: str = "api/v0.1/predictions") -> requests.Response:
    return requests.post(site.url + prefix + path, data=BODY, headers=HEADERS, timeout=30)


@pytest.fixture(scope="module")
def site(models, tmp_path_factory):
    overlay = second_model_overlay(tmp_path_factory.mktemp("overlay"))
    s = SiteProcess(["--overlay", str(overlay), *as_args(sets("scratch", models["a"]) + sets("dents", models["c"]))])
    s.start(ready_lines=2)
    yield s
    s.stop()


def served_sha(resp: requests.Response) -> str:
    assert resp.status_code == 200, resp.text
    return resp.json()["jsonData"]["model"]["sha256"]


# --- routing -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["api/v0.1/predictions", "api/v1.0/predictions"])
def test_prediction_through_the_gateway(site, models, path):
    resp = call(site, path=path)
    assert served_sha(resp) == models["a"][1]
    assert len(resp.json()["jsonData"]["detections"]) == 1


def test_unknown_prefix_is_404(site):
    assert call(site, prefix="/model/nothing/").status_code == 404
    assert requests.get(site.url + "/model/scratch", timeout=5).status_code == 404  # prefix needs its slash
    assert requests.get(site.url + "/", timeout=5).status_code == 404


def test_two_models_answer_independently(site, models):
    assert served_sha(call(site, "/model/scratch/")) == models["a"][1]
    assert served_sha(call(site, "/model/dents/")) == models["c"][1]
    assert len(call(site, "/model/dents/").json()["jsonData"]["detections"]) == 3


def test_rewrite_reaches_the_server_at_its_root(site, models):
    # /health/status and /api/v1.0/metadata exist only at the server's root.
    health = requests.get(site.url + "/model/scratch/health/status", timeout=5)
    assert health.status_code == 200 and health.json()["jsonData"]["model"]["sha256"] == models["a"][1]
    meta = requests.get(site.url + "/model/dents/api/v1.0/metadata", timeout=5).json()
    assert meta["custom"]["sha256"] == models["c"][1]


# The answer must always come from the model that the *normalised* path names. Envoy normalises
# as Istio's gateway does (RFC 3986: %2e is ".", dot segments resolved; %2F is not a separator).
ROUTING = [
    ("/model/dents/../scratch/api/v0.1/predictions", "a"),
    ("/model/dents/%2e%2e/scratch/api/v0.1/predictions", "a"),
    ("/model/scratch/../dents/api/v0.1/predictions", "c"),
    ("/model/dents/..%2Fscratch/api/v0.1/predictions", None),  # stays under /model/dents/: 4xx from dents
    ("/model/dents/%2E%2E%2Fscratch/api/v0.1/predictions", None),
    ("/model/dents//../scratch/api/v0.1/predictions", None),  # /model/dents/scratch/...
    ("/model/dents/%2Fapi/v0.1/predictions", "c"),
    ("/model//scratch/api/v0.1/predictions", None),  # no route matches
    ("/model/scratch/api/v0.1/predictions/../../v1.0/predictions", "a"),
]


@pytest.mark.parametrize("path, model", ROUTING, ids=[r[0] for r in ROUTING])
def test_a_prefix_reaches_only_the_model_it_names(site, models, path, model):
    raw = requests.Request("POST", site.url + "/", data=BODY, headers=HEADERS).prepare()
    raw.url = site.url + path  # sent as written: no client-side normalisation
    resp = requests.Session().send(raw, timeout=30)
    if model is None:
        assert 400 <= resp.status_code < 500  # refused: no model answers it
    else:
        assert served_sha(resp) == models[model][1]


def test_the_printed_curl_works(site):
    line = next(line for line in site.out if line.strip().startswith("curl "))
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=ROOT, timeout=60)
    body = json.loads(out.stdout)
    assert "detections" in body["jsonData"]


def images_counted(metrics_url: str) -> float:
    text = requests.get(metrics_url, timeout=10).text
    return sum(float(v) for v in re.findall(r"^defect_images_total\{[^}]*\} (\S+)$", text, re.MULTILINE))


def test_the_printed_metrics_url_counts_what_the_model_served(site):
    ready = next(i for i, line in enumerate(site.out) if line.startswith("ready: scratch "))
    line = next(line for line in site.out[ready:] if "metrics (what Prometheus scrapes in a pod): " in line)
    url = line.split("pod): ", 1)[1].strip()
    assert url.endswith("/prometheus")
    before = images_counted(url)
    assert call(site).status_code == 200
    assert images_counted(url) == before + 1


def test_gateway_limits_the_body(site):
    resp = requests.post(
        site.url + "/model/scratch/api/v0.1/predictions", data=b"x" * (33 * 1024 * 1024), headers=HEADERS, timeout=60
    )
    assert resp.status_code == 413


# --- rolls ---------------------------------------------------------------------------


def test_roll_loses_no_request_and_switches_the_model(models):
    site = SiteProcess(as_args(sets("scratch", models["a"]))).start()
    try:
        with SteadyClient(lambda: call(site)) as client:
            site.reload(*sets("scratch", models["b"]))
            site.wait_for(lambda: client.shas and client.shas[-1] == models["b"][1], timeout=120)
            n = len(client.shas)
            site.wait_for(lambda: len(client.shas) >= n + 30, timeout=60)
        assert client.failures == []
        switch = client.shas.index(models["b"][1])
        assert set(client.shas[:switch]) == {models["a"][1]}
        assert set(client.shas[switch:]) == {models["b"][1]}  # never back to the old model
        site.wait_for(lambda: any(line.startswith(f"ready: scratch sha {models['b'][1][:7]}") for line in site.out), 10)
    finally:
        site.stop()


def test_tampered_model_in_a_roll_is_refused_and_the_old_one_keeps_serving(models, tmp_path):
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(models["b"][0].read_bytes()[:-1] + b"\x01")
    site = SiteProcess(as_args(sets("scratch", models["a"]))).start()
    try:
        with SteadyClient(lambda: call(site)) as client:
            site.reload(f"scratch.model-uri={tampered.as_uri()}", f"scratch.model-sha256={models['b'][1]}")
            site.wait_for(lambda: any("new model refused" in line for line in site.err), timeout=120)
            n = len(client.shas)
            site.wait_for(lambda: len(client.shas) >= n + 20, timeout=60)
        assert client.failures == []
        assert set(client.shas) == {models["a"][1]}
        refusal = next(line for line in site.err if "new model refused" in line)
        assert "sha256 mismatch" in refusal and "the previous version keeps serving" in refusal
    finally:
        site.stop()


def server_processes(site: SiteProcess) -> list[tuple[int, int, str]]:
    """(pid, parent pid, command) of the site's model-server processes, guards included."""
    found = []
    for line in processes_of_site(site.port):
        pid, _, cmd = line.partition(": ")
        if "seldon-core-microservice" in cmd:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it just exited
            found.append((int(pid), int(stat[1]), cmd))
    return found


def is_guard(cmd: str) -> bool:
    return "guard.py" in cmd


@pytest.mark.parametrize("victim", ["server", "guard"])
def test_a_dead_model_server_is_restarted_and_nothing_is_left_behind(models, victim):
    """The whole server killed at once (OOM), or only its guard: the site restarts it cleanly."""
    site = SiteProcess(as_args(sets("scratch", models["a"]))).start()
    try:
        before = server_processes(site)
        guard = next(pid for pid, _, cmd in before if is_guard(cmd))
        if victim == "server":
            os.killpg(guard, signal.SIGKILL)  # the guard leads the server's process group
        else:
            os.kill(guard, signal.SIGKILL)  # the server's processes lose their guard
        site.wait_for(lambda: any("model server restarted and ready" in line for line in site.err), timeout=120)
        assert served_sha(call(site)) == models["a"][1]
        assert any("exited" in line and "restarting" in line for line in site.err)
        after = server_processes(site)
        assert not {pid for pid, _, _ in before} & {pid for pid, _, _ in after}, "an old server still runs"
        assert [cmd for _, ppid, cmd in after if ppid == 1] == [], "orphaned server processes"
    finally:
        site.stop()


# --- lifecycle -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_site_leaves_no_process(models, sig):
    site = SiteProcess(as_args(sets("scratch", models["a"]))).start()
    assert len(processes_of_site(site.port)) >= 3  # envoy, gunicorn master and worker, ...
    assert site.stop(sig) == 0
    deadline = time.monotonic() + 20
    while processes_of_site(site.port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of_site(site.port) == []


def test_a_killed_site_takes_its_children_with_it(models):
    site = SiteProcess(as_args(sets("scratch", models["a"]))).start()
    site.stop(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while processes_of_site(site.port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of_site(site.port) == []


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "scratch.replicas=many"], "replicas: 'many' is not a valid int"),
        (
            ["--set", "scratch.model-uri=https://h/m.onnx", "--set", "scratch.model-sha256="],
            "model-sha256: is required when model-uri is set",
        ),
        (["--set", "nosuchapp.replicas=2"], "no onnx-model application 'nosuchapp'"),
        (["--set", "scratch.colour=red"], "colour is not an option of the onnx-model charm"),
    ],
)
def test_bad_config_is_a_clear_error(args, words):
    site = SiteProcess(args)
    with pytest.raises(RuntimeError) as err:
        site.start(timeout=60)
    assert words in str(err.value)
    assert "Traceback" not in str(err.value)
