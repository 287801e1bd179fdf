"""Shared fixtures of the unit tests: the charm against a fake cluster; a fake host for the scripts."""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
from pathlib import Path

import pytest
from ops import testing

import cluster as cluster_module
from charm import OnnxModelCharm
from support.charm_harness import APP
from support.fake_k8s import FakeCluster

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from edge_site import airgap  # noqa: E402
from edge_site.bootstrap import Bootstrap  # noqa: E402

FRESH = {"snaps": [], "addons": [], "controller": False, "model": False, "apps": [], "settled": False}


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A fresh Ubuntu host: the fakes on PATH, an empty state, a calls log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("snap", "microk8s", "juju", "docker", "charmcraft"):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests/support/fake_cli.py"}" "$0" "$@"\n')
        wrapper.chmod(0o755)
    state = tmp_path / "state.json"
    state.write_text(json.dumps(FRESH))
    calls = tmp_path / "calls.log"
    calls.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_STATE", str(state))
    monkeypatch.setenv("FAKE_CALLS", str(calls))

    class Host:
        charm = tmp_path / "build" / "onnx-model.charm"

        def calls(self) -> list[str]:
            return calls.read_text().splitlines()

        def mutating(self) -> list[str]:
            verbs = (
                "snap install",
                "microk8s enable",
                "juju bootstrap",
                "juju add-model",
                "juju deploy",
                "charmcraft pack",
                "juju wait-for",
            )
            return [c for c in self.calls() if c.startswith(verbs)]

        def state(self) -> dict:
            return json.loads(state.read_text())

        def set(self, **kw) -> None:
            s = self.state()
            s.update(kw)
            state.write_text(json.dumps(s))

        def bootstrap(self, overlays=(), airgap: Path | None = None) -> tuple[int, list[str]]:
            said: list[str] = []
            code = Bootstrap(list(overlays), airgap, say=said.append, charm=self.charm).run()
            return code, said

    return Host()


@pytest.fixture
def registry(host, monkeypatch):
    """MicroK8s' registry add-on as the scripts see it: /v2/ answers, manifests of pushed images exist."""

    class Registry(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.answer()

        def do_HEAD(self):  # noqa: N802
            self.answer()

        def answer(self):
            pushed = host.state().get("pushed", [])
            held = {f"/v2/{i.removeprefix('localhost:32000/').replace(':', '/manifests/')}" for i in pushed}
            self.send_response(200 if self.path == "/v2/" or self.path in held else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(airgap, "REGISTRY_API", f"http://127.0.0.1:{server.server_address[1]}/v2/")
    yield server
    server.shutdown()


@pytest.fixture
def k8s(monkeypatch) -> FakeCluster:
    """The Kubernetes API as the charm's client sees it (cluster.connect patched at the boundary)."""
    fake = FakeCluster()
    monkeypatch.setattr(cluster_module, "connect", fake.client)
    return fake


@pytest.fixture
def ctx() -> testing.Context:
    return testing.Context(OnnxModelCharm, app_name=APP)
