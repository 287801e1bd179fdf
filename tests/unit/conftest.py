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
from edge_site import bootstrap as bootstrap_module  # noqa: E402
from edge_site.bootstrap import Bootstrap  # noqa: E402

USER = "edge"  # who runs `sudo scripts/bootstrap-edge-site`
FRESH = {
    "online": True,
    "snaps": {},
    "addons": [],
    "unix_groups": [],
    "groups": {USER: []},
    "clients": {},
    "apps": {},
    "settled": False,
    "images": [],
    "pushed": [],
    "built": [],
    "lxd_init": False,
    "packages": [],
    "owners": {},
}
FAKES = (
    *("snap", "microk8s", "juju", "charmcraft", "lxd", "lxc", "sudo", "id", "usermod", "apt-get", "skopeo"),
    *("chown", "stat"),
)
NOBLE = 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nVERSION_ID="24.04"\n'


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A fresh Ubuntu 24.04 amd64 host: the fakes on PATH, an empty state, a calls log, user `edge`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in (*FAKES, "buildah"):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests/support/fake_cli.py"}" "$0" "$@"\n')
        wrapper.chmod(0o755)
    state = tmp_path / "state.json"
    state.write_text(json.dumps(FRESH))
    calls = tmp_path / "calls.log"
    calls.touch()
    (tmp_path / "home" / USER).mkdir(parents=True)  # a user's home, without ~/.local/share
    os_release = tmp_path / "os-release"
    os_release.write_text(NOBLE)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_STATE", str(state))
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_HOMES", str(tmp_path / "home"))
    monkeypatch.setenv("FAKE_BIN", str(bin_dir))
    monkeypatch.setenv("FAKE_OS_RELEASE", str(os_release))
    (tmp_path / "home" / "root" / ".local/share").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home" / "root"))  # root's runs never touch the real /root

    class Host:
        charm = tmp_path / "build" / "onnx-model.charm"
        server_archive = tmp_path / "build" / "defect-server.tar"
        home = tmp_path / "home" / USER
        bin = bin_dir
        stage = tmp_path / "home" / USER / "edge-site-deploy"

        def calls(self) -> list[str]:
            return calls.read_text().splitlines()

        def mutating(self) -> list[str]:
            verbs = (
                "snap install",
                "snap refresh",
                "chown",
                "microk8s enable",
                "microk8s ctr image import",
                "microk8s ctr image push",
                "usermod",
                "apt-get install",
                "buildah build",
                "buildah bud",
                "juju add-k8s",
                "juju bootstrap",
                "juju add-model",
                "juju deploy",
                "lxd init",
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

        def release(self, text: str) -> None:
            os_release.write_text(text)

        def without_builder(self) -> None:
            (bin_dir / "buildah").unlink()

        def bootstrap(
            self,
            overlays=(),
            airgap: Path | None = None,
            user: str = USER,
            server_archive: Path | None = None,
            refresh_snaps: bool = False,
        ) -> tuple[int, list[str]]:
            said: list[str] = []
            code = Bootstrap(
                list(overlays),
                airgap,
                say=said.append,
                charm=self.charm,
                user=user,
                os_release=os_release,
                server_archive=server_archive,
                builder_path=str(bin_dir),
                refresh_snaps=refresh_snaps,
            ).run()
            return code, said

    monkeypatch.setattr(bootstrap_module, "SERVER_ARCHIVE", tmp_path / "build" / "defect-server.tar")
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
            state = host.state()
            if "registry" not in state["addons"]:  # nothing listens before the add-on is enabled
                self.send_response(503)
                self.end_headers()
                return
            held = {f"/v2/{i.removeprefix('localhost:32000/').replace(':', '/manifests/')}" for i in state["pushed"]}
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
