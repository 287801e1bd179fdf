"""scripts/roll-model against a fake python-libjuju Model with Juju's timing, and a real HTTP gateway.

The fake (tests/support/fake_libjuju.py) applies a change at the charm's next hook, not when
set_config returns, so a unit shows its previous status for a while, as on a real site.
"""

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

from edge_site.roll import (  # noqa: E402
    INTERRUPTED,
    JUJU_REFUSED,
    OK,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    USAGE,
    abort,
    canary,
    promote,
    roll,
)
from model_config import ModelConfig  # noqa: E402
from serving_status import assess, with_canary  # noqa: E402
from support.fake_libjuju import (  # noqa: E402
    FakeApplication,
    FakeModel,
    JujuAPIError,
    JujuApplicationConfigError,
)

OLD, NEW = "a" * 64, "b" * 64
SAMPLE = ROOT / "tests/data/metal-tags/images/image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"
SERVING_OLD = ("active", f"serving /model/scratch/ sha {OLD[:7]}")
SELDON_FAILED = {"state": "Failed", "description": "Deployment is no longer progressing and not available."}


def ready_pod(sha: str, ready: bool = True) -> dict:
    return {
        "metadata": {
            "name": f"scratch-default-0-model-{sha[:5]}",
            "labels": {"onnx-model.juju.is/model-sha256": sha[:16]},
        },
        "status": {"conditions": [{"type": "Ready", "status": str(ready)}]},
    }


class Site:
    """The cluster and the charm's reconcile for one model, in the charm's own words (assess()).

    ``behaviour``: sha -> "serves" (Ready at the third reconcile), "never-ready", "refused"
    (Seldon marks the SeldonDeployment Failed at the second reconcile, as past its progress
    deadline) or "invalid" (the charm blocks on its config, e.g. an s3 secret gone). Seldon
    recomputes its state at its own next reconcile, so the first status after a rollback may
    still say Failed while the old pods serve (what a real site shows).
    """

    def __init__(self, behaviour: dict[str, str]) -> None:
        self.behaviour = behaviour
        self.serving = self.wanted = OLD
        self.reads = 0
        self.failed = False
        self.refused = ""

    def apply(self, config: dict) -> None:
        # The charm's own validation (load_config(..., errors="blocked")): a config it refuses
        # blocks the unit, whatever the cluster does.
        try:
            ModelConfig.from_options({k: v for k, v in config.items() if v != ""})
            self.refused = ""
        except ValueError as exc:
            self.refused = str(exc)
        sha = config.get("model-sha256") or OLD
        if sha != self.wanted:
            self.wanted, self.reads = sha, 0

    def status(self) -> tuple[str, str]:
        self.reads += 1
        if self.refused:
            return "blocked", self.refused
        how = self.behaviour.get(self.wanted, "serves")
        if how == "invalid":
            return "blocked", "Invalid config: model-uri: the s3-credentials secret is gone"
        if self.wanted != self.serving:
            if how == "serves" and self.reads > 2:
                self.serving, self.failed = self.wanted, False
            elif how == "refused" and self.reads > 1:
                self.failed = True
        elif self.reads > 1:
            self.failed = False
        pods = [ready_pod(self.serving)] + ([ready_pod(self.wanted, False)] if self.wanted != self.serving else [])
        state = SELDON_FAILED if self.failed else {"state": "Available" if self.wanted == self.serving else "Creating"}
        serving = assess("scratch", self.wanted, {"metadata": {"namespace": "kubeflow"}, "status": state}, pods)
        return serving.kind, serving.message


def scratch(charm, status=SERVING_OLD, **config) -> FakeModel:
    base = {"model-uri": "https://m/old.onnx", "model-sha256": OLD, "model-name": ""}
    return FakeModel(FakeApplication("scratch", charm, {**base, **config}, status))


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


def a_roll(gateway: dict, behaviour: dict[str, str], timeout: float = 1.0, status=SERVING_OLD):
    """A site whose gateway answers from it, and the roll to NEW on it (not started yet)."""
    site = Site(behaviour)
    gateway["site"] = site
    model = scratch(site, status=status)
    app = model.applications["scratch"]
    return (
        model,
        app,
        lambda: roll(model, "scratch", "https://m/new.onnx", NEW, gateway["url"], SAMPLE, timeout, 0.01, print),
    )


def run_then(coro, ready, act):
    """Run ``coro``; once ``ready()``, ``act(task)`` (cancel it as roll-model's SIGINT handler does,
    break the controller connection, ...); return what it returns."""

    async def go():
        task = asyncio.ensure_future(coro)
        while not ready():
            await asyncio.sleep(0.001)
        act(task)
        return await task

    return asyncio.run(go())


def run_roll(site: Site, gateway: dict, app: str = "scratch", **kw):
    gateway["site"] = site
    model = scratch(site)
    said: list[str] = []
    outcome = asyncio.run(
        roll(
            model, app, "https://m/new.onnx", NEW, gateway["url"], SAMPLE, timeout=1.0, poll=0.01, say=said.append, **kw
        )
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


def test_a_refused_model_fails_fast_and_the_rollback_that_works_is_reported_as_such(gateway):
    """After the rollback's set_config the unit still shows the refusal (no hook has run yet), then
    the first hook still says Seldon failed while the old pods serve: neither is the rollback's
    verdict. Reading the unit at once reported this working rollback as "rollback failed"."""
    outcome, app, said = run_roll(Site({NEW: "refused"}), gateway)
    assert outcome.code == ROLLED_BACK, outcome.message
    assert "still serving aaaaaaa; SeldonDeployment failed" in outcome.message
    assert outcome.message.endswith("aaaaaaa serves again")
    assert app.history[-1] == {"model-uri": "https://m/old.onnx", "model-sha256": OLD}


def test_the_new_model_is_judged_only_once_the_charm_has_seen_it(gateway):
    """A unit blocked before the roll (e.g. on a bad canary) is not the new model's verdict."""
    blocked = ("blocked", "serving /model/scratch/ sha aaaaaaa; canary ccccccc refused")
    _, _, rolling = a_roll(gateway, {NEW: "serves"}, status=blocked)
    outcome = asyncio.run(rolling())
    assert outcome.code == OK, outcome.message


def test_a_failing_smoke_test_rolls_back(gateway):
    gateway["status"] = 503
    outcome, app, _ = run_roll(Site({NEW: "serves"}), gateway)
    assert outcome.code == ROLLED_BACK
    assert "answered HTTP 503" in outcome.message
    assert app.config["model-sha256"] == OLD


def test_a_failed_rollback_is_its_own_exit_code(gateway):
    outcome, _, _ = run_roll(Site({NEW: "never-ready", OLD: "invalid"}), gateway)
    assert outcome.code == ROLLBACK_FAILED
    assert "rollback failed: blocked: Invalid config" in outcome.message


def test_an_unknown_application_is_a_usage_error(gateway):
    outcome, app, _ = run_roll(Site({}), gateway, app="nope")
    assert outcome.code == USAGE and "no application 'nope'" in outcome.message
    assert app.history == []


def test_juju_refusing_the_new_config_is_named_and_changes_nothing(gateway):
    _, app, rolling = a_roll(gateway, {})
    app.refuse["model-sha256"] = JujuAPIError('permission denied: user "line3" may not change scratch')
    outcome = asyncio.run(rolling())
    assert outcome.code == JUJU_REFUSED
    assert outcome.message == (
        f"scratch: juju config scratch model-uri=https://m/new.onnx model-sha256={NEW} failed: "
        'JujuAPIError: permission denied: user "line3" may not change scratch; nothing changed; '
        "check `juju config scratch` and `juju status scratch`"
    )
    assert app.config["model-sha256"] == OLD


def test_juju_refusing_the_rollback_names_it_and_the_command_that_restores(gateway):
    _, app, rolling = a_roll(gateway, {NEW: "refused"})

    def lose_the_connection(_task):
        app.refuse["model-uri"] = ConnectionResetError("connection to the controller lost")

    outcome = run_then(rolling(), lambda: app.history, lose_the_connection)
    assert outcome.code == ROLLBACK_FAILED
    assert "failed: ConnectionResetError: connection to the controller lost" in outcome.message
    assert outcome.message.endswith(
        f"restore it with: juju config scratch model-uri=https://m/old.onnx model-sha256={OLD}"
    )


def test_ctrl_c_during_a_roll_puts_the_previous_model_back(gateway):
    _, app, rolling = a_roll(gateway, {NEW: "never-ready"}, timeout=5.0)
    outcome = run_then(rolling(), lambda: app.hooks_run >= 2, lambda task: task.cancel())  # new model rolling
    assert outcome.code == INTERRUPTED
    assert "model-uri/model-sha256 set back to aaaaaaa" in outcome.message
    assert (app.config["model-uri"], app.config["model-sha256"]) == ("https://m/old.onnx", OLD)


def test_ctrl_c_twice_says_exactly_what_is_configured_and_how_to_restore(gateway):
    _, app, rolling = a_roll(gateway, {NEW: "never-ready"}, timeout=5.0)

    def press_ctrl_c_twice(task):
        app.refuse["model-uri"] = asyncio.CancelledError()  # the second one lands in the restoring call
        task.cancel()

    outcome = run_then(rolling(), lambda: app.hooks_run >= 2, press_ctrl_c_twice)
    assert outcome.code == INTERRUPTED
    assert "the previous model was not restored (interrupted again): it is configured for bbbbbbb" in outcome.message
    assert outcome.message.endswith(f"juju config scratch model-uri=https://m/old.onnx model-sha256={OLD}")
    assert app.config["model-sha256"] == NEW


def test_sigint_reaches_the_roll_as_a_cancellation_not_a_traceback(gateway, monkeypatch):
    """roll-model's run(): Ctrl-C (SIGINT) cancels the command, which restores and says so."""
    import argparse
    import os
    import signal

    from edge_site import roll as roll_module

    model, app, _ = a_roll(gateway, {NEW: "never-ready"})

    async def connect(_name):
        async def press_ctrl_c():
            while app.hooks_run < 2:
                await asyncio.sleep(0.001)
            os.kill(os.getpid(), signal.SIGINT)

        asyncio.get_running_loop().create_task(press_ctrl_c())
        return model

    monkeypatch.setattr(roll_module, "connect", connect)
    args = argparse.Namespace(
        model="kubeflow", app="scratch", uri="https://m/new.onnx", sha256=NEW, gateway_url=gateway["url"],
        sample=SAMPLE, timeout=5.0, promote=False, abort=False, canary=None,
    )  # fmt: skip
    outcome = asyncio.run(roll_module.run(args))
    assert outcome.code == INTERRUPTED and "set back to aaaaaaa" in outcome.message
    assert app.config["model-sha256"] == OLD


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
        if config == self.config:
            return  # a hook that sees no change
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
    base = {"model-uri": "https://m/old.onnx", "model-sha256": OLD, "model-name": "", **config}
    site.config = dict(base)
    return FakeModel(FakeApplication("scratch", site, base, site.status()))  # as the last hook left it


FAST = {"timeout": 1.0, "poll": 0.01, "drain": 0.0}


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
    site.canary_ready = True
    model = canary_app(
        site, **{"canary-model-uri": "https://m/c.onnx", "canary-model-sha256": CANARY, "canary-weight": str(weight)}
    )
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


def test_juju_refusing_a_canary_is_named_and_changes_nothing(gateway):
    site = CanarySite({CANARY: "serves"})
    model = canary_app(site)
    app = model.applications["scratch"]
    app.refuse["canary-weight"] = JujuAPIError('permission denied: user "line3" may not change scratch')
    outcome = asyncio.run(
        canary(model, "scratch", "https://m/c.onnx", CANARY, 10, gateway["url"], SAMPLE, say=print, **FAST)
    )
    assert outcome.code == JUJU_REFUSED
    assert outcome.message.startswith("scratch: juju config scratch canary-model-uri=https://m/c.onnx ")
    assert outcome.message.endswith("; nothing changed; check `juju config scratch` and `juju status scratch`")
    assert app.history == [] and not app.config.get("canary-model-uri")


def test_ctrl_c_during_a_canary_says_what_is_configured_and_how_to_remove_it(gateway):
    site = CanarySite({CANARY: "never-ready"})
    gateway["site"] = Site({})
    model = canary_app(site)
    app = model.applications["scratch"]
    outcome = run_then(
        canary(model, "scratch", "https://m/c.onnx", CANARY, 10, gateway["url"], SAMPLE, say=print, **FAST),
        lambda: app.hooks_run >= 1,
        lambda task: task.cancel(),
    )
    assert (outcome.code, outcome.message) == (
        INTERRUPTED,
        "scratch: interrupted; configured now: model aaaaaaa, canary ccccccc at canary-weight 10; "
        "remove the canary with: scripts/roll-model scratch --abort",
    )


def test_the_fake_refuses_what_libjuju_refuses():
    site = CanarySite({})
    app = canary_app(site).applications["scratch"]
    with pytest.raises(JujuApplicationConfigError):
        asyncio.run(app.set_config({"canary-weight": 10}))
    with pytest.raises(JujuAPIError, match="unknown option"):
        asyncio.run(app.reset_config(["canary-weigth"]))


def test_the_fake_unit_keeps_its_status_until_the_charm_runs_a_hook():
    """Juju applies options at the charm's next hook: set_config returning changes no status."""
    site = Site({NEW: "serves"})
    app = scratch(site).applications["scratch"]
    unit = app.units[0]

    async def go():
        before = (unit.workload_status_message, unit.workload_status_since)
        await app.set_config({"model-uri": "https://m/new.onnx", "model-sha256": NEW})
        assert (unit.workload_status_message, unit.workload_status_since) == before and app.hooks_run == 0
        while app.hooks_run == 0:
            await asyncio.sleep(0.005)
        assert unit.workload_status_since != before[1] and "rolling out bbbbbbb" in unit.workload_status_message

    asyncio.run(go())


# --- the integration suite's clean-up (tests/support/app_state.py) -------------------------


def test_kept_puts_the_options_back_and_waits_until_the_old_model_serves_again():
    from support.app_state import kept

    site = CanarySite({NEW: "serves", CANARY: "serves"})
    model = canary_app(site)
    app = model.applications["scratch"]
    found = dict(app.config)

    async def a_test_that_changes_everything():
        async with kept(app, timeout=2.0, poll=0.01):
            await app.set_config({"model-uri": "https://m/new.onnx", "model-sha256": NEW})
            await app.set_config({"canary-model-uri": "https://m/c.onnx", "canary-model-sha256": CANARY})
            await app.set_config({"canary-weight": "20"})
        return app.units[0].workload_status, app.units[0].workload_status_message

    status = asyncio.run(a_test_that_changes_everything())
    assert status == SERVING_OLD  # judged on a status set after the restore, not the one before
    assert {k: v for k, v in app.config.items() if k in found or v} == found
    assert app.history[-2:] == [
        {"model-uri": "https://m/old.onnx", "model-sha256": OLD},
        {"reset": ["canary-model-sha256", "canary-model-uri", "canary-weight"]},
    ]


def test_kept_fails_the_test_when_the_model_does_not_come_back():
    from support.app_state import kept

    site = Site({OLD: "invalid"})
    model = scratch(site)
    app = model.applications["scratch"]

    async def go():
        async with kept(app, timeout=0.5, poll=0.01):
            await app.set_config({"model-sha256": NEW})

    with pytest.raises(AssertionError, match="scratch was not restored: blocked: Invalid config"):
        asyncio.run(go())


# --- --promote-shadow: the record's figures decide, then a roll, then the shadow options go ----------


@pytest.fixture
def shadow_options(monkeypatch):
    """The charm's shadow options (issue 23's contract; the charm side adds them to charmcraft.yaml)."""
    from support import fake_libjuju

    for key in ("shadow-model-uri", "shadow-model-sha256"):
        if key not in fake_libjuju.OPTIONS:
            monkeypatch.setitem(fake_libjuju.OPTIONS, key, {"type": "string", "default": ""})


def shadow_record(folder: Path, agree: int, disagree: int, shadow: str = NEW, stable: str = OLD) -> Path:
    """A record as the watcher writes it: ``agree`` photos with the same verdict, ``disagree`` flipped."""
    from inspection.shadow_record import Record

    record = Record(folder)
    for i in range(agree + disagree):
        same = i < agree
        record.append({
            "schema": "shadow-comparison/1", "status": "compared", "image": f"p{i}.jpg", "result_id": f"r{i}",
            "agree": same, "stable": {"sha256": stable, "defect": True, "latency_ms": 20.0},
            "shadow": {"sha256": shadow, "defect": same, "latency_ms": 10.0},
            "matched": [], "stable_only": [], "shadow_only": [],
        })  # fmt: skip
    return folder


def promote_shadow_run(gateway, folder: Path, min_photos: int, min_agreement: float, **config):
    from edge_site.roll import promote_shadow

    site = Site({NEW: "serves"})
    gateway["site"] = site
    model = scratch(site, **{"shadow-model-uri": "https://m/new.onnx", "shadow-model-sha256": NEW, **config})
    outcome = asyncio.run(
        promote_shadow(
            model, "scratch", gateway["url"], SAMPLE, min_photos, min_agreement, folder, 1.0, 0.01, print
        )
    )  # fmt: skip
    return outcome, model.applications["scratch"]


def test_promote_shadow_rolls_to_the_shadow_then_resets_its_options(gateway, shadow_options, tmp_path):
    outcome, app = promote_shadow_run(gateway, shadow_record(tmp_path, 400, 2), 300, 0.98)
    assert outcome.code == OK, outcome.message
    assert app.config["model-sha256"] == NEW and app.config["model-uri"] == "https://m/new.onnx"
    assert app.history == [  # the shadow's options first: the charm refuses a shadow of the stable sha
        {"reset": ["shadow-model-uri", "shadow-model-sha256"]},
        {"model-uri": "https://m/new.onnx", "model-sha256": NEW},
    ]
    assert app.config["shadow-model-uri"] == "" and app.config["shadow-model-sha256"] == ""


def test_promote_shadow_refuses_too_few_photos_and_names_the_figure(gateway, shadow_options, tmp_path):
    outcome, app = promote_shadow_run(gateway, shadow_record(tmp_path, 50, 0), 300, 0.9)
    assert outcome.code == 1 and "photos compared 50 < --min-photos 300" in outcome.message
    assert app.history == []  # nothing changed


def test_promote_shadow_holds_the_lower_bound_not_the_point_estimate(gateway, shadow_options, tmp_path):
    """99 % agreement on 100 photos is a lower bound of 94.6 %: short of 0.97, so no promotion."""
    outcome, app = promote_shadow_run(gateway, shadow_record(tmp_path, 99, 1), 100, 0.97)
    assert outcome.code == 1, outcome.message
    assert "agreement lower bound (Wilson 95 %) 0.9455 < --min-agreement 0.97" in outcome.message
    assert "agreement 0.9900 on 100 photos" in outcome.message and app.history == []


def test_promote_shadow_refuses_a_record_of_another_shadow_or_stable(gateway, shadow_options, tmp_path):
    other = "c" * 64
    outcome, _ = promote_shadow_run(gateway, shadow_record(tmp_path / "a", 500, 0, shadow=other), 100, 0.9)
    assert outcome.code == 1 and "photos compared 0 < --min-photos 100" in outcome.message  # not this shadow's
    outcome, app = promote_shadow_run(gateway, shadow_record(tmp_path / "b", 500, 0, stable=other), 100, 0.9)
    assert outcome.code == 1 and "but aaaaaaa serves now: compare them again" in outcome.message
    assert app.history == []


def test_promote_shadow_without_a_shadow_is_a_usage_error(gateway, shadow_options, tmp_path):
    outcome, app = promote_shadow_run(gateway, tmp_path, 1, 0.5, **{"shadow-model-uri": ""})
    assert outcome.code == USAGE and "no shadow to promote" in outcome.message and app.history == []


def shadow_status(state: str) -> tuple[str, str]:
    """The charm's own status (serving_status.with_shadow) for a stable NEW with a shadow OLD."""
    from serving_status import Serving, with_shadow

    stable = assess("scratch", NEW, {"metadata": {"namespace": "kubeflow"}, "status": {"state": "Available"}},
                    [ready_pod(NEW)])  # fmt: skip
    pods = {"ready": [ready_pod(OLD)], "starting": [ready_pod(OLD, False)], "refused": [ready_pod(OLD, False)]}[state]
    problem = Serving("blocked", "model refused by the server: sha256 mismatch") if state == "refused" else None
    out = with_shadow(stable, "scratch", "scratch", OLD, {"status": {"state": "Creating"}}, pods, problem)
    return out.kind, out.message


@pytest.mark.parametrize("state", ["ready", "starting", "refused"])
def test_a_roll_reads_the_stable_model_from_a_status_with_a_shadow(state):
    """The shadow's state makes the unit's status worse, not the line's model: a roll beside a
    starting or refused shadow still sees its model serving."""
    from edge_site.roll import serving

    status, message = shadow_status(state)
    assert f"shadow {OLD[:7]}" in message and (status == "active") == (state == "ready")
    assert serving(status, message) == (NEW[:7], "", 0)


def test_a_stable_model_not_yet_serving_beside_a_shadow_is_not_serving():
    from edge_site.roll import serving

    assert serving("waiting", f"still serving {OLD[:7]}; {NEW[:7]} not Ready yet; shadow {OLD[:7]} starting") is None
    assert serving("blocked", "shadow-model-sha256: is the stable model's sha256 ...") is None
