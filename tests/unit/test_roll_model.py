"""scripts/roll-model against a fake python-libjuju Model (the library boundary) and a real HTTP gateway."""

from __future__ import annotations

import asyncio
import http.server
import json
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from edge_site.roll import OK, ROLLBACK_FAILED, ROLLED_BACK, USAGE, roll  # noqa: E402

OLD, NEW = "a" * 64, "b" * 64
SAMPLE = ROOT / "tests/data/metal-tags/images/image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"


class Site:
    """What the controller and the cluster do after `juju config`: which sha becomes Ready."""

    def __init__(self, behaviour: dict[str, str]) -> None:
        self.behaviour = behaviour  # sha -> "serves" | "never-ready" | "blocked"
        self.serving = OLD
        self.wanted = OLD
        self.reads = 0

    def configured(self, sha: str) -> None:
        self.wanted, self.reads = sha, 0

    def status(self) -> tuple[str, str]:
        self.reads += 1
        how = self.behaviour.get(self.wanted, "serves")
        if how == "blocked":
            return "blocked", "Invalid config: model-sha256: must be 64 lowercase hex digits"
        if how == "serves" and self.reads > 2:
            self.serving = self.wanted
        if self.serving == self.wanted:
            return "active", f"serving /model/scratch/ sha {self.serving[:7]}"
        return "waiting", f"rolling out {self.wanted[:7]}, still serving {self.serving[:7]}"


class FakeUnit:
    def __init__(self, site: Site) -> None:
        self.site = site
        self._last = ("", "")

    @property
    def workload_status(self) -> str:
        self._last = self.site.status()
        return self._last[0]

    @property
    def workload_status_message(self) -> str:
        return self._last[1]


class FakeApplication:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.config = {"model-uri": "https://m/old.onnx", "model-sha256": OLD, "model-name": ""}
        self.units = [FakeUnit(site)]
        self.history: list[dict] = []

    async def get_config(self) -> dict:
        return {k: {"value": v, "source": "user"} for k, v in self.config.items()}

    async def set_config(self, config: dict) -> None:
        self.history.append(dict(config))
        self.config.update(config)
        self.site.configured(config["model-sha256"])


class FakeModel:
    name = "kubeflow"

    def __init__(self, site: Site) -> None:
        self.applications = {"scratch": FakeApplication(site)}


@pytest.fixture
def gateway():
    """A gateway that answers as the serving model would (or with a status of our choosing)."""
    state = {"site": None, "status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"jsonData": {"detections": [], "model": {"sha256": state["site"].serving}}}).encode()
            self.send_response(state["status"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()


def run_roll(site: Site, gateway: dict, app: str = "scratch"):
    gateway["site"] = site
    model = FakeModel(site)
    said: list[str] = []
    outcome = asyncio.run(
        roll(model, app, "https://m/new.onnx", NEW, gateway["url"], SAMPLE, timeout=0.5, poll=0.01, say=said.append)
    )
    return outcome, model.applications["scratch"], said


def test_a_good_model_rolls_and_is_smoke_tested(gateway):
    outcome, app, said = run_roll(Site({NEW: "serves"}), gateway)
    assert outcome.code == OK
    assert app.config["model-sha256"] == NEW
    assert any("smoke test: 0 detection(s) from bbbbbbb" in line for line in said)


def test_a_model_that_never_gets_ready_is_rolled_back(gateway):
    outcome, app, _ = run_roll(Site({NEW: "never-ready"}), gateway)
    assert outcome.code == ROLLED_BACK
    assert "not serving sha bbbbbbb" in outcome.message and "aaaaaaa serves again" in outcome.message
    assert app.config["model-sha256"] == OLD and app.config["model-uri"] == "https://m/old.onnx"


def test_a_blocked_unit_fails_fast_and_is_rolled_back(gateway):
    outcome, app, _ = run_roll(Site({NEW: "blocked"}), gateway)
    assert outcome.code == ROLLED_BACK
    assert "blocked: Invalid config" in outcome.message
    assert app.history[-1] == {"model-uri": "https://m/old.onnx", "model-sha256": OLD}


def test_a_failing_smoke_test_rolls_back(gateway):
    gateway["status"] = 503
    site = Site({NEW: "serves"})
    outcome, app, _ = run_roll(site, gateway)
    assert outcome.code == ROLLED_BACK
    assert "answered HTTP 503" in outcome.message
    assert app.config["model-sha256"] == OLD


def test_a_failed_rollback_is_its_own_exit_code(gateway):
    outcome, _, _ = run_roll(Site({NEW: "never-ready", OLD: "blocked"}), gateway)
    assert outcome.code == ROLLBACK_FAILED
    assert "rollback failed" in outcome.message


def test_an_unknown_application_is_a_usage_error(gateway):
    outcome, app, _ = run_roll(Site({}), gateway, app="nope")
    assert outcome.code == USAGE and "no application 'nope'" in outcome.message
    assert app.history == []
