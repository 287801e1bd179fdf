"""scripts/roll-model against a fake python-libjuju Model (the library boundary) and a real HTTP gateway."""

from __future__ import annotations

import asyncio
import http.server
import json
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from edge_site.roll import OK, ROLLBACK_FAILED, ROLLED_BACK, USAGE, abort, canary, promote, roll  # noqa: E402
from serving_status import assess, with_canary  # noqa: E402

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

    def apply(self, config: dict) -> None:
        self.configured(config["model-sha256"])

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


class JujuApplicationConfigError(Exception):
    """What python-libjuju raises for a config value that is not a string."""


OPTIONS = yaml.safe_load((ROOT / "charms/onnx-model/charmcraft.yaml").read_text())["config"]["options"]


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
        # python-libjuju (juju/application.py, set_config) sends strings only and raises otherwise;
        # Juju refuses an option the charm does not have.
        for key, value in config.items():
            if not isinstance(value, str):
                raise JujuApplicationConfigError(f"{key}: {value!r} is not a string")
            if key not in OPTIONS:
                raise ValueError(f'unknown option "{key}"')
        self.history.append(dict(config))
        self.config.update(config)
        self.site.apply(self.config)

    async def reset_config(self, to_default: list[str]) -> None:
        """Juju's UnsetApplicationsConfig: the options go back to their defaults (or to unset)."""
        for key in to_default:
            if key not in OPTIONS:
                raise ValueError(f'unknown option "{key}"')
        self.history.append({"reset": list(to_default)})
        for key in to_default:
            if "default" in OPTIONS[key]:
                self.config[key] = OPTIONS[key]["default"]
            else:
                self.config.pop(key, None)
        self.site.apply(self.config)


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


# --- canary ----------------------------------------------------------------------------

CANARY = "c" * 64


class CanarySite:
    """The charm and the cluster after `juju config`, for a canary; the status in the charm's own words.

    Pods become Ready two status reads after a change (if the model ``serves``); the charm
    routes the canary's weight only once its pods are Ready (render(canary_ready=...)).
    The log records every route the gateway had, and every config change, in order.
    """

    def __init__(self, behaviour: dict[str, str]) -> None:
        self.behaviour = behaviour  # sha -> "serves" | "never-ready" | "refused" (Seldon gave up)
        self.config: dict = {}
        self.stable = OLD
        self.canary_ready = False
        self.reads = 0
        self.log: list[tuple] = []

    def apply(self, config: dict) -> None:
        before = dict(self.config)
        self.config = dict(config)
        self.reads = 0
        if config.get("canary-model-sha256") != before.get("canary-model-sha256"):
            self.canary_ready = False
        self.log.append(("config", {k: v for k, v in config.items() if k.startswith("canary") or k == "model-sha256"}))

    def routed(self) -> int:
        weight = self.config.get("canary-weight")
        return int(weight) if self.config.get("canary-model-uri") and weight is not None and self.canary_ready else 0

    def status(self) -> tuple[str, str]:
        self.reads += 1
        wanted = self.config.get("model-sha256", OLD)
        if self.reads > 2 and self.behaviour.get(wanted, "serves") == "serves":
            self.stable = wanted
        ready_pod = {
            "metadata": {
                "name": "scratch-default-0-model-1",
                "labels": {"onnx-model.juju.is/model-sha256": self.stable[:16]},
            },
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
        serving = assess("scratch", wanted, {"status": {"state": "Available"}}, [ready_pod])
        sha = self.config.get("canary-model-sha256", "")
        if self.config.get("canary-model-uri"):
            how = self.behaviour.get(sha, "serves")
            if self.reads > 2 and how == "serves":
                self.canary_ready = True
            pods = [
                {
                    "metadata": {"labels": {"onnx-model.juju.is/model-sha256": sha[:16]}},
                    "status": {"conditions": [{"type": "Ready", "status": str(self.canary_ready)}]},
                }
            ]
            sdep = {"status": {"state": "Failed", "description": "not available"}} if how == "refused" else None
            weight = int(self.config["canary-weight"])
            serving = with_canary(serving, sha, weight, self.routed(), sdep, pods)
        self.log.append(("route", self.routed()))
        return serving.kind, serving.message


def canary_app(site: CanarySite, **config) -> FakeModel:
    model = FakeModel(Site({}))
    app = model.applications["scratch"]
    app.site = site
    app.units = [FakeUnit(site)]
    app.config.update(config)
    site.config = dict(app.config)
    return model


FAST = {"timeout": 0.5, "poll": 0.01, "drain": 0.0}


def test_a_canary_starts_and_waits_until_it_takes_its_share(gateway):
    site = CanarySite({CANARY: "serves"})
    gateway["site"] = Site({})  # the gateway answers from the stable model
    model = canary_app(site)
    said: list[str] = []
    outcome = asyncio.run(
        canary(model, "scratch", "https://m/c.onnx", CANARY, 10, gateway["url"], SAMPLE, say=said.append, **FAST)
    )
    assert outcome.code == OK, outcome.message
    assert "canary ccccccc answers 10% of requests, aaaaaaa the rest" in outcome.message
    app = model.applications["scratch"]
    assert app.history == [
        {"canary-model-uri": "https://m/c.onnx", "canary-model-sha256": CANARY, "canary-weight": "10"}
    ]
    assert site.log[-1] == ("route", 10)


@pytest.mark.parametrize("how", ["never-ready", "refused"])
def test_a_refused_canary_is_removed_and_never_took_a_request(gateway, how):
    site = CanarySite({CANARY: how})
    gateway["site"] = Site({})
    model = canary_app(site)
    outcome = asyncio.run(
        canary(model, "scratch", "https://m/c.onnx", CANARY, 10, gateway["url"], SAMPLE, say=print, **FAST)
    )
    assert outcome.code == ROLLED_BACK, outcome.message
    assert "canary ccccccc refused" in outcome.message and "aaaaaaa serves all" in outcome.message
    assert {weight for kind, weight in site.log if kind == "route"} == {0}
    assert "canary-model-uri" not in {k for k, v in model.applications["scratch"].config.items() if v}


def started_canary(weight: int = 10) -> tuple[CanarySite, FakeModel]:
    site = CanarySite({CANARY: "serves"})
    model = canary_app(
        site, **{"canary-model-uri": "https://m/c.onnx", "canary-model-sha256": CANARY, "canary-weight": weight}
    )
    site.canary_ready = True
    return site, model


def assert_share_returned_before_removal(site: CanarySite) -> None:
    """The canary's options were reset only after the route had given it 0% (what drops no request)."""
    resets = [i for i, (kind, what) in enumerate(site.log) if kind == "config" and not what.get("canary-model-uri")]
    assert resets, site.log
    before = [weight for kind, weight in site.log[: resets[0]] if kind == "route"]
    assert before[-1] == 0


def test_abort_returns_the_share_first_then_removes_the_canary():
    site, model = started_canary()
    outcome = asyncio.run(abort(model, "scratch", say=print, **FAST))
    assert outcome.code == OK, outcome.message
    app = model.applications["scratch"]
    assert app.history == [
        {"canary-weight": "0"},
        {"reset": ["canary-model-uri", "canary-model-sha256", "canary-weight"]},
    ]
    assert "canary-weight" not in app.config and app.config["canary-model-uri"] == ""
    assert_share_returned_before_removal(site)


def test_promote_rolls_the_stable_model_to_the_canary_then_removes_it(gateway):
    site, model = started_canary()
    gateway["site"] = Site({})
    gateway["site"].serving = CANARY  # once promoted, the gateway answers from the canary's model
    outcome = asyncio.run(promote(model, "scratch", gateway["url"], SAMPLE, say=print, **FAST))
    assert outcome.code == OK, outcome.message
    app = model.applications["scratch"]
    assert app.history[0] == {"model-uri": "https://m/c.onnx", "model-sha256": CANARY}
    assert app.history[1:] == [
        {"canary-weight": "0"},
        {"reset": ["canary-model-uri", "canary-model-sha256", "canary-weight"]},
    ]
    # The canary kept its share while the stable pods rolled to its model.
    promoted = next(
        i for i, (kind, what) in enumerate(site.log) if kind == "config" and what.get("model-sha256") == CANARY
    )
    routes_while_rolling = [w for kind, w in site.log[promoted:] if kind == "route"]
    assert routes_while_rolling[0] == 10
    assert_share_returned_before_removal(site)
    assert site.stable == CANARY


def test_promote_and_abort_without_a_canary_are_usage_errors(gateway):
    site = CanarySite({})
    model = canary_app(site)
    assert asyncio.run(promote(model, "scratch", gateway["url"], SAMPLE, **FAST)).code == USAGE
    outcome = asyncio.run(abort(model, "scratch", **FAST))
    assert outcome.code == USAGE and "no canary" in outcome.message
    assert model.applications["scratch"].history == []


def test_the_fake_refuses_what_libjuju_refuses():
    site = CanarySite({})
    app = canary_app(site).applications["scratch"]
    with pytest.raises(JujuApplicationConfigError):
        asyncio.run(app.set_config({"canary-weight": 10}))
    with pytest.raises(ValueError, match="unknown option"):
        asyncio.run(app.reset_config(["canary-weigth"]))
