"""Roll a new model onto a real site with python-libjuju, and put the old one back if it fails.

Steps: remember the application's model-uri/model-sha256, set the new ones,
wait until every unit reports the new sha as serving, smoke-test the gateway
with a sample image (the answer must name the new sha256), and on any
failure restore the previous values and wait for them to serve again.

A canary (``canary()``, ``promote()``, ``abort()``) is driven through the charm's
canary-* options and read back from the status the charm sets (serving_status.py):
``serving /model/<name>/ sha <7>, canary <7> at <N>%``.

Juju's timing: ``set_config`` returns once the controller stored the options
(python-libjuju application.py, SetConfigs); the charm sees them at its next hook, seconds
later, and until then the unit shows the status it had before. So every wait first waits for
a status set after the change (``wait_until``'s baseline), and judges only that.

Ctrl-C (SIGINT, which ``run`` turns into a cancellation): a roll puts the previous
model-uri/model-sha256 back; a canary, promote or abort says what it left and the command
that finishes it. Errors from Juju while changing options are named, never a traceback; a
change Juju refuses before anything changed is exit 1 (JUJU_REFUSED), with the command to check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "charms" / "onnx-model" / "src"))

from model_config import DEFAULT_MODEL_SHA256  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from inspection.shadow_record import default_record_dir, read, summarize  # noqa: E402

# 1: Juju refused a change (named; nothing else changed), 2: bad usage or no Juju connection:
# the world refusing is not a usage error.
OK, JUJU_REFUSED, USAGE, ROLLED_BACK, ROLLBACK_FAILED, INTERRUPTED = 0, 1, 2, 3, 4, 130
KEYS = ("model-uri", "model-sha256")
# How long a unit may keep the status it had before a change: Juju runs config-changed seconds
# after set_config; a status identical to the one before may keep its `since` (then it is judged
# after this long).
SETTLE_SECONDS = 60.0
CANARY_KEYS = ("canary-model-uri", "canary-model-sha256", "canary-weight")
# After the charm routed the canary's share back, before its pods go: istiod pushes a changed
# VirtualService to the gateway within about a second; this leaves room for a slow push.
DRAIN_SECONDS = 10.0
# The charm's shadow (the issue-23 contract: /model/<name>/shadow/ answers, decides nothing).
SHADOW_KEYS = ("shadow-model-uri", "shadow-model-sha256")
_SERVING = re.compile(r"^serving \S+ sha ([0-9a-f]{7})(?:, canary ([0-9a-f]{7}) at (\d+)%)?$")


@dataclass(frozen=True)
class Outcome:
    code: int
    message: str


def _value(config: dict[str, Any], key: str) -> str:
    entry = config.get(key) or {}
    return str(entry.get("value") or "") if isinstance(entry, dict) else str(entry or "")


_SHADOW_PART = "; shadow "  # serving_status.with_shadow: "<the stable model's message>; shadow <sha7> <state>"


def serving(status: str, message: str) -> tuple[str, str, int] | None:
    """(stable sha7, canary sha7 or "", canary percent) from an active unit's status, else None.

    With a shadow, the charm appends its state to the stable model's message and the unit's
    status is the worse of the two: a shadow still starting (waiting) or refused (blocked) says
    nothing about the line, so the stable part alone decides here.
    """
    stable, shadow, _ = message.partition(_SHADOW_PART)
    m = _SERVING.match(stable) if status == "active" or shadow else None
    return (m.group(1), m.group(2) or "", int(m.group(3) or 0)) if m else None


def _no_such_app(model: Any, app_name: str) -> Outcome:
    """Every command names the model it looked in, so a wrong -m is obvious."""
    return Outcome(USAGE, f"no application {app_name!r} in model {getattr(model, 'name', '?')}")


Baseline = dict[str, tuple[Any, ...]]


class ConfigRefused(Exception):
    """Juju (or python-libjuju) refused an option change; the message names the options (exit 1)."""


def _check(app_name: str) -> str:
    """What to look at after Juju refused a change."""
    return f"check `juju config {app_name}` and `juju status {app_name}`"


def _statuses(app: Any) -> Baseline:
    """Each unit's (status, message, since): what it showed before a change."""
    return {u.name: _statuses_of(u) for u in app.units}


async def configure(app: Any, app_name: str, values: dict[str, str] | None = None, reset: list[str] = ()) -> Baseline:
    """Set (or reset) options; the units' statuses just before, to tell a stale one from the answer.

    Any error is named with the options it concerned (libjuju raises JujuError and its kin,
    JujuApplicationConfigError, or the websocket's own errors on a dropped connection)."""
    before = _statuses(app)
    what = " ".join(
        [*(f"{k}={v}" for k, v in (values or {}).items()), *([f"--reset {','.join(reset)}"] if reset else [])]
    )
    try:
        if values:
            await app.set_config(values)
        if reset:
            await app.reset_config(list(reset))
    except Exception as exc:  # noqa: BLE001 - the boundary to Juju: named, never a traceback
        raise ConfigRefused(f"juju config {app_name} {what} failed: {type(exc).__name__}: {exc}") from None
    return before


def _serving_despite_seldon(sha: str, message: str) -> bool:
    """`serving <sha>; SeldonDeployment failed: ...`: the pods of ``sha`` are Ready and Seldon's
    state still says Failed from the rollout before; Seldon recomputes it at its next reconcile
    (v1.17.1 operator/controllers/seldondeployment_controller.go), the charm reports it until then
    (serving_status.assess). Seen after a rollback, it is on its way to `active`."""
    m = re.match(r"^serving ([0-9a-f]{7}(?:, [0-9a-f]{7})*); SeldonDeployment failed: ", message)
    return bool(m) and sha[:7] in m.group(1).split(", ")


async def wait_until(
    app: Any,
    accept: Any,
    want: str,
    timeout: float,
    poll: float,
    blocked_ok: Any = None,
    before: Baseline | None = None,
) -> tuple[bool, str]:
    """Until every unit's (status, message) is accepted. A unit still showing what it showed
    ``before`` the change has not run a hook since: it is not judged (for SETTLE_SECONDS at most).
    A blocked unit fails at once unless ``blocked_ok(message)``."""
    start = time.monotonic()
    deadline, settled = start + timeout, start + min(SETTLE_SECONDS, timeout)
    last = "no units"
    while time.monotonic() < deadline:
        units = list(app.units)
        stale = [u for u in units if before and before.get(u.name) == _statuses_of(u)]
        if units and (not stale or time.monotonic() >= settled):
            states = [(u.workload_status, u.workload_status_message) for u in units]
            last = "; ".join(f"{s}: {m}" for s, m in states)
            blocked = [m for s, m in states if s == "blocked" and not (blocked_ok and blocked_ok(m))]
            if blocked:
                return False, f"blocked: {blocked[0]}"
            if all(accept(s, m) for s, m in states):
                return True, last
        elif units:
            last = "; ".join(f"{u.workload_status}: {u.workload_status_message} (before the change)" for u in units)
        await asyncio.sleep(poll)
    return False, f"not {want} after {timeout:g}s (last status: {last})"


def _statuses_of(unit: Any) -> tuple[Any, ...]:
    return (unit.workload_status, unit.workload_status_message, unit.workload_status_since)


async def wait_serving(app: Any, sha: str, timeout: float, poll: float, before: Baseline) -> tuple[bool, str]:
    """Until every unit says `serving ... sha <7>` (with or without a canary beside it)."""

    def accept(status: str, message: str) -> bool:
        state = serving(status, message)
        return state is not None and state[0] == sha[:7]

    return await wait_until(
        app, accept, f"serving sha {sha[:7]}", timeout, poll, lambda m: _serving_despite_seldon(sha, m), before
    )


def smoke_test(
    gateway_url: str, model_name: str, sample: Path, sha: str, timeout: float = 30.0, or_sha: str = ""
) -> tuple[bool, str]:
    """One prediction through the gateway; the answer must come from the new model (or ``or_sha``)."""
    url = f"{gateway_url.rstrip('/')}/model/{model_name}/api/v0.1/predictions"
    body = json.dumps({"binData": base64.b64encode(sample.read_bytes()).decode()}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            answer = json.load(resp)["jsonData"]
    except urllib.error.HTTPError as exc:
        return False, f"smoke test: {url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        return False, f"smoke test: {url}: {exc}"
    served = answer.get("model", {}).get("sha256", "")
    if served not in (sha, or_sha or sha):
        return False, f"smoke test: {url} answered with model {served[:7]}, not {sha[:7]}"
    return True, f"smoke test: {len(answer['detections'])} detection(s) from {served[:7]}"


async def roll(
    model: Any,
    app_name: str,
    uri: str,
    sha: str,
    gateway_url: str,
    sample: Path,
    timeout: float = 900.0,
    poll: float = 5.0,
    say=print,
) -> Outcome:
    app = model.applications.get(app_name)
    if app is None:
        return _no_such_app(model, app_name)
    config = await app.get_config()
    previous = {k: _value(config, k) for k in KEYS}
    model_name = _value(config, "model-name") or app_name
    old_sha = previous["model-sha256"] or DEFAULT_MODEL_SHA256
    say(f"{app_name}: rolling {previous['model-sha256'][:7] or 'default'} -> {sha[:7]} ({uri})")
    try:
        before = await configure(app, app_name, {"model-uri": uri, "model-sha256": sha})
        ok, why = await wait_serving(app, sha, timeout, poll, before)
        if ok:
            say(f"{app_name}: {why}")
            # A canary beside it may answer too: its share of the requests is not the new model's.
            ok, why = smoke_test(gateway_url, model_name, sample, sha, or_sha=_value(config, "canary-model-sha256"))
        if ok:
            say(f"{app_name}: {why}")
            return Outcome(OK, f"{app_name} serves {sha[:7]}")
    except ConfigRefused as exc:
        return Outcome(JUJU_REFUSED, f"{app_name}: {exc}; nothing changed; {_check(app_name)}")
    except asyncio.CancelledError:  # the new model may be set already: put the previous one back
        return await _interrupted_roll(app, app_name, previous, sha, say)
    say(f"{app_name}: roll failed ({why}); restoring the previous model")
    try:
        before = await configure(app, app_name, previous)
    except ConfigRefused as exc:
        return Outcome(
            ROLLBACK_FAILED, f"{app_name}: new model refused ({why}) and {exc}; {_restore_hint(app_name, previous)}"
        )
    try:
        back, why_back = await wait_serving(app, old_sha, timeout, poll, before)
    except asyncio.CancelledError:
        return Outcome(
            INTERRUPTED,
            f"{app_name}: interrupted while {old_sha[:7]} rolls back in: its model-uri/model-sha256 are restored; "
            f"`juju status {app_name}` until it says serving sha {old_sha[:7]}",
        )
    if back:
        return Outcome(ROLLED_BACK, f"{app_name}: new model refused ({why}); {old_sha[:7]} serves again")
    return Outcome(ROLLBACK_FAILED, f"{app_name}: new model refused ({why}) and rollback failed: {why_back}")


def _restore_hint(app_name: str, previous: dict[str, str]) -> str:
    """The command that puts ``previous`` back by hand (unset options: back to the charm's default)."""
    if all(previous.values()):
        return "restore it with: juju config " + app_name + " " + " ".join(f"{k}={v}" for k, v in previous.items())
    return f"restore it with: juju config {app_name} --reset {','.join(previous)}"


async def _interrupted_roll(app: Any, app_name: str, previous: dict[str, str], sha: str, say) -> Outcome:
    """Ctrl-C after the new model was set: put the previous one back (Juju and Seldon roll the pods)."""
    old = previous["model-sha256"][:7] or "the default model"
    say(f"{app_name}: interrupted; restoring {old}")
    try:
        await configure(
            app, app_name, {k: v for k, v in previous.items() if v}, [k for k, v in previous.items() if not v]
        )
    except (ConfigRefused, asyncio.CancelledError) as exc:
        reason = "interrupted again" if isinstance(exc, asyncio.CancelledError) else str(exc)
        return Outcome(
            INTERRUPTED,
            f"{app_name}: interrupted, and the previous model was not restored ({reason}): it is configured for "
            f"{sha[:7]}; {_restore_hint(app_name, previous)}",
        )
    return Outcome(
        INTERRUPTED,
        f"{app_name}: interrupted; model-uri/model-sha256 set back to {old}, which keeps or takes back the "
        f"traffic once its pods are Ready: `juju status {app_name}` until it says serving sha {old}",
    )


async def _left(app: Any, app_name: str, finish: str) -> Outcome:
    """Ctrl-C in a canary step: say exactly what the options are now, and what finishes the job."""
    try:
        config = await app.get_config()
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - we are already reporting an interruption
        return Outcome(
            INTERRUPTED, f"{app_name}: interrupted; `juju config {app_name}` shows what is set; then {finish}"
        )
    stable = (_value(config, "model-sha256") or DEFAULT_MODEL_SHA256)[:7]
    state = f"model {stable}"
    if _value(config, "canary-model-uri"):
        weight = _value(config, "canary-weight") or "unset"
        state += f", canary {_value(config, 'canary-model-sha256')[:7]} at canary-weight {weight}"
    else:
        state += ", no canary"
    return Outcome(INTERRUPTED, f"{app_name}: interrupted; configured now: {state}; {finish}")


async def canary(
    model: Any,
    app_name: str,
    uri: str,
    sha: str,
    weight: int,
    gateway_url: str,
    sample: Path,
    timeout: float = 900.0,
    poll: float = 5.0,
    say=print,
    drain: float = DRAIN_SECONDS,
) -> Outcome:
    """Start a canary at ``weight`` percent and wait until it is Ready and routed; remove it if it is refused."""
    app = model.applications.get(app_name)
    if app is None:
        return _no_such_app(model, app_name)
    config = await app.get_config()
    stable = _value(config, "model-sha256") or DEFAULT_MODEL_SHA256
    say(f"{app_name}: canary {sha[:7]} ({uri}) at {weight}% beside {stable[:7]}")
    # libjuju's set_config takes strings only (juju/python-libjuju juju/application.py).
    change = {"canary-model-uri": uri, "canary-model-sha256": sha, "canary-weight": str(weight)}

    def routed(status: str, message: str) -> bool:
        return serving(status, message) == (stable[:7], sha[:7], weight)

    try:
        before = await configure(app, app_name, change)
        ok, why = await wait_until(
            app, routed, f"serving canary {sha[:7]} at {weight}%", timeout, poll, before=before
        )  # fmt: skip
        if ok:
            say(f"{app_name}: {why}")
            ok, why = smoke_test(gateway_url, _value(config, "model-name") or app_name, sample, stable, or_sha=sha)
        if ok:
            say(f"{app_name}: {why}")
            return Outcome(OK, f"{app_name}: canary {sha[:7]} answers {weight}% of requests, {stable[:7]} the rest")
        say(f"{app_name}: canary failed ({why}); removing it")
        removed, why_removed = await _remove_canary(app, app_name, sha, stable, timeout, poll, say, drain)
    except ConfigRefused as exc:
        return Outcome(JUJU_REFUSED, f"{app_name}: {exc}; nothing changed; {_check(app_name)}")
    except asyncio.CancelledError:
        return await _left(app, app_name, f"remove the canary with: scripts/roll-model {app_name} --abort")
    if removed:
        return Outcome(ROLLED_BACK, f"{app_name}: canary {sha[:7]} refused ({why}); removed, {stable[:7]} serves all")
    return Outcome(ROLLBACK_FAILED, f"{app_name}: canary {sha[:7]} refused ({why}) and not removed: {why_removed}")


async def promote(
    model: Any,
    app_name: str,
    gateway_url: str,
    sample: Path,
    timeout: float = 900.0,
    poll: float = 5.0,
    say=print,
    drain: float = DRAIN_SECONDS,
) -> Outcome:
    """The canary's model becomes the stable one (the canary keeps its share meanwhile), then the canary goes."""
    app = model.applications.get(app_name)
    if app is None:
        return _no_such_app(model, app_name)
    config = await app.get_config()
    uri, sha = _value(config, "canary-model-uri"), _value(config, "canary-model-sha256")
    if not uri:
        return Outcome(USAGE, f"{app_name} has no canary to promote (canary-model-uri is not set)")
    say(f"{app_name}: promoting canary {sha[:7]}: the stable model rolls to it first")
    outcome = await roll(model, app_name, uri, sha, gateway_url, sample, timeout, poll, say)
    if outcome.code == INTERRUPTED:
        return Outcome(INTERRUPTED, f"{outcome.message}; the canary is left as it was")
    if outcome.code != OK:
        return outcome  # the previous stable model serves again; the canary is left as it was
    try:
        removed, why = await _remove_canary(app, app_name, sha, sha, timeout, poll, say, drain)
    except asyncio.CancelledError:
        return await _left(
            app, app_name, f"{sha[:7]} serves; remove the canary with: scripts/roll-model {app_name} --abort"
        )
    if removed:
        return Outcome(OK, f"{app_name}: promoted, {sha[:7]} serves all requests")
    return Outcome(ROLLBACK_FAILED, f"{app_name}: {sha[:7]} serves, but the canary was not removed: {why}")


def shadow_gate(folder: Path, shadow_sha: str, stable_sha: str, min_photos: int, min_agreement: float) -> str:
    """Why the recorded comparison does not allow promoting ``shadow_sha`` ("" when it does).

    ``min_agreement`` is held against the LOWER bound of agreement's Wilson 95 % interval, not the
    point estimate: 20 agreeing photos out of 20 are a point estimate of 100 % and a lower bound
    of 84 %, and a plant should not swap its inspection model on 20 photos. Only photos compared
    with this very shadow and this very stable model count (shadow_record.summarize)."""
    s = summarize(read(folder), shadow_sha)
    where = f"in {folder}"
    if s.compared and s.stable_sha256 != stable_sha:
        return (
            f"the record {where} compares shadow {shadow_sha[:7]} with stable {(s.stable_sha256 or '?')[:7]}, "
            f"but {stable_sha[:7]} serves now: compare them again"
        )
    if s.compared < min_photos:
        return f"photos compared {s.compared} < --min-photos {min_photos} (shadow {shadow_sha[:7]}, record {folder})"
    low, high = s.interval
    if low < min_agreement:
        return (
            f"agreement lower bound (Wilson 95 %) {low:.4f} < --min-agreement {min_agreement:g} "
            f"(agreement {s.agreement:.4f} on {s.compared} photos, interval {low:.4f}-{high:.4f}; "
            f"flips: {s.flips})"
        )
    return ""


async def promote_shadow(
    model: Any,
    app_name: str,
    gateway_url: str,
    sample: Path,
    min_photos: int,
    min_agreement: float,
    record: Path | None = None,
    timeout: float = 900.0,
    poll: float = 5.0,
    say=print,
) -> Outcome:
    """The shadow becomes the stable model when the record says so: a roll (pods Ready, smoke test,
    the old model back on failure), then the shadow options are reset."""
    app = model.applications.get(app_name)
    if app is None:
        return _no_such_app(model, app_name)
    config = await app.get_config()
    uri, sha = (_value(config, k) for k in SHADOW_KEYS)
    if not uri or not sha:
        return Outcome(USAGE, f"{app_name} has no shadow to promote (shadow-model-uri/shadow-model-sha256 not set)")
    stable = _value(config, "model-sha256") or DEFAULT_MODEL_SHA256
    folder = record or default_record_dir(_value(config, "model-name") or app_name)
    why = shadow_gate(folder, sha, stable, min_photos, min_agreement)
    if why:
        return Outcome(JUJU_REFUSED, f"{app_name}: shadow {sha[:7]} not promoted: {why}")
    # The shadow's options go first: the charm refuses a shadow whose sha256 is the stable
    # model's (model_config: "nothing to compare"), so rolling first would block the unit on its
    # own config and the roll would never see its model serving. The shadow decides nothing for
    # the line, so removing it first changes no answer; the roll then verifies the file anew.
    again = f"juju config {app_name} shadow-model-uri={uri} shadow-model-sha256={sha}"
    say(f"{app_name}: the record allows shadow {sha[:7]}: its options are reset, then the stable model rolls to it")
    try:
        await configure(app, app_name, reset=list(SHADOW_KEYS))
    except ConfigRefused as exc:
        return Outcome(JUJU_REFUSED, f"{app_name}: {exc}; nothing changed; {_check(app_name)}")
    except asyncio.CancelledError:
        return Outcome(INTERRUPTED, f"{app_name}: the shadow's options may be reset; to shadow it again: {again}")
    outcome = await roll(model, app_name, uri, sha, gateway_url, sample, timeout, poll, say)
    if outcome.code != OK:
        return Outcome(outcome.code, f"{outcome.message}; the shadow was removed; to shadow it again: {again}")
    return Outcome(OK, f"{app_name}: shadow promoted, {sha[:7]} serves all requests; shadow options reset")


async def abort(
    model: Any, app_name: str, timeout: float = 900.0, poll: float = 5.0, say=print, drain: float = DRAIN_SECONDS
) -> Outcome:
    """Remove the canary: its share goes back to the stable model before its pods go."""
    app = model.applications.get(app_name)
    if app is None:
        return _no_such_app(model, app_name)
    config = await app.get_config()
    sha = _value(config, "canary-model-sha256")
    if not _value(config, "canary-model-uri"):
        return Outcome(USAGE, f"{app_name} has no canary to abort (canary-model-uri is not set)")
    stable = _value(config, "model-sha256") or DEFAULT_MODEL_SHA256
    try:
        removed, why = await _remove_canary(app, app_name, sha, stable, timeout, poll, say, drain)
    except asyncio.CancelledError:
        return await _left(app, app_name, f"finish with: scripts/roll-model {app_name} --abort")
    if removed:
        return Outcome(OK, f"{app_name}: canary {sha[:7]} removed, {stable[:7]} serves all requests")
    return Outcome(ROLLBACK_FAILED, f"{app_name}: canary {sha[:7]} not removed: {why}")


async def _remove_canary(
    app: Any, app_name: str, sha: str, stable: str, timeout: float, poll: float, say, drain: float
) -> tuple[bool, str]:
    """Weight 0 first and wait until the charm routed it so; then, after a drain, the options go."""
    try:
        before = await configure(app, app_name, {"canary-weight": "0"})
    except ConfigRefused as exc:
        return False, str(exc)

    def unrouted(status: str, message: str) -> bool:
        # Routed at 0%, or never routed at all: not Ready, or refused by Seldon (blocked).
        return serving(status, message) == (stable[:7], sha[:7], 0) or (
            f"canary {sha[:7]} not Ready" in message or f"canary {sha[:7]} refused" in message
        )

    ok, why = await wait_until(
        app, unrouted, f"routing 0% to canary {sha[:7]}", timeout, poll, lambda m: "canary" in m, before
    )
    if not ok:
        return False, why
    say(f"{app_name}: canary {sha[:7]} takes no more requests; removing it in {drain:g}s")
    await asyncio.sleep(drain)
    try:
        before = await configure(app, app_name, reset=list(CANARY_KEYS))
    except ConfigRefused as exc:
        return False, f"{exc} (it takes no requests: canary-weight is 0)"

    def gone(status: str, message: str) -> bool:
        return serving(status, message) == (stable[:7], "", 0)

    ok, why = await wait_until(app, gone, f"serving {stable[:7]} without a canary", timeout, poll, before=before)
    if ok:
        say(f"{app_name}: {why}")
    return ok, why


async def connect(model_name: str) -> Any:
    from juju.model import Model

    model = Model()
    await model.connect(model_name=model_name)
    return model


async def run(args: Any) -> Outcome:
    """One command against the model; Ctrl-C cancels it, and each command says what it left."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers off the main thread
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        model = await connect(args.model)
    except asyncio.CancelledError:
        return Outcome(INTERRUPTED, "interrupted before connecting: nothing changed")
    except Exception as exc:  # noqa: BLE001 - libjuju raises many types for "no controller"
        return Outcome(USAGE, f"cannot connect to Juju model {args.model!r}: {type(exc).__name__}: {exc}")
    try:
        if args.promote:
            return await promote(model, args.app, args.gateway_url, args.sample, args.timeout)
        if getattr(args, "promote_shadow", False):
            return await promote_shadow(
                model, args.app, args.gateway_url, args.sample, args.min_photos, args.min_agreement, args.record,
                args.timeout,
            )  # fmt: skip
        if args.abort:
            return await abort(model, args.app, args.timeout)
        if args.canary is not None:
            return await canary(
                model, args.app, args.uri, args.sha256, args.canary, args.gateway_url, args.sample, args.timeout
            )
        return await roll(model, args.app, args.uri, args.sha256, args.gateway_url, args.sample, args.timeout)
    except ConfigRefused as exc:  # each command names its own; none leaves here as a traceback
        return Outcome(JUJU_REFUSED, f"{args.app}: {exc}; {_check(args.app)}")
    except asyncio.CancelledError:  # before any option was changed (each command handles it after)
        return Outcome(INTERRUPTED, f"{args.app}: interrupted before anything changed")
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await model.disconnect()
