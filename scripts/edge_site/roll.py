"""Roll a new model onto a real site with python-libjuju, and put the old one back if it fails.

Steps: remember the application's model-uri/model-sha256, set the new ones,
wait until every unit reports the new sha as serving, smoke-test the gateway
with a sample image (the answer must name the new sha256), and on any
failure restore the previous values and wait for them to serve again.

A canary (``canary()``, ``promote()``, ``abort()``) is driven through the charm's
canary-* options and read back from the status the charm sets (serving_status.py):
``serving /model/<name>/ sha <7>, canary <7> at <N>%``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
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

OK, JUJU_REFUSED, USAGE, ROLLED_BACK, ROLLBACK_FAILED = 0, 1, 2, 3, 4
KEYS = ("model-uri", "model-sha256")
CANARY_KEYS = ("canary-model-uri", "canary-model-sha256", "canary-weight")
# After the charm routed the canary's share back, before its pods go: istiod pushes a changed
# VirtualService to the gateway within about a second; this leaves room for a slow push.
DRAIN_SECONDS = 10.0
_SERVING = re.compile(r"^serving \S+ sha ([0-9a-f]{7})(?:, canary ([0-9a-f]{7}) at (\d+)%)?$")


@dataclass(frozen=True)
class Outcome:
    code: int
    message: str


def _value(config: dict[str, Any], key: str) -> str:
    entry = config.get(key) or {}
    return str(entry.get("value") or "") if isinstance(entry, dict) else str(entry or "")


def serving(status: str, message: str) -> tuple[str, str, int] | None:
    """(stable sha7, canary sha7 or "", canary percent) from an active unit's status, else None."""
    m = _SERVING.match(message) if status == "active" else None
    return (m.group(1), m.group(2) or "", int(m.group(3) or 0)) if m else None


class ConfigRefused(Exception):
    """Juju (or libjuju) refused a config change: said with the command it stands for, exit 1."""


async def _configure(app: Any, app_name: str, values: dict[str, str] | None = None, reset: list[str] = ()) -> None:
    """app.set_config / app.reset_config, with any refusal turned into one line naming the change."""
    try:
        if values is not None:
            await app.set_config(values)
        else:
            await app.reset_config(list(reset))
    except Exception as exc:  # libjuju raises JujuError, JujuAPIError, JujuApplicationConfigError, ...
        change = " ".join(f"{k}={v}" for k, v in values.items()) if values is not None else "--reset " + ",".join(reset)
        raise ConfigRefused(
            f"juju config {app_name} {change} was refused ({type(exc).__name__}: {exc}); "
            f"check `juju config {app_name}` and `juju status {app_name}`"
        ) from None


def _no_such_app(model: Any, app_name: str) -> Outcome:
    """Every command names the model it looked in, so a wrong -m is obvious."""
    return Outcome(USAGE, f"no application {app_name!r} in model {getattr(model, 'name', '?')}")


async def wait_until(
    app: Any, accept: Any, want: str, timeout: float, poll: float, blocked_ok: str = ""
) -> tuple[bool, str]:
    """Until every unit's (status, message) is accepted; a blocked unit fails at once
    unless its message contains ``blocked_ok``."""
    deadline = time.monotonic() + timeout
    last = "no units"
    while time.monotonic() < deadline:
        units = list(app.units)
        if units:
            states = [(u.workload_status, u.workload_status_message) for u in units]
            last = "; ".join(f"{s}: {m}" for s, m in states)
            blocked = [m for s, m in states if s == "blocked" and not (blocked_ok and blocked_ok in m)]
            if blocked:
                return False, f"blocked: {blocked[0]}"
            if all(accept(s, m) for s, m in states):
                return True, last
        await asyncio.sleep(poll)
    return False, f"not {want} after {timeout:g}s (last status: {last})"


async def wait_serving(app: Any, sha: str, timeout: float, poll: float) -> tuple[bool, str]:
    """Until every unit says `serving ... sha <7>` (with or without a canary beside it)."""

    def accept(status: str, message: str) -> bool:
        state = serving(status, message)
        return state is not None and state[0] == sha[:7]

    return await wait_until(app, accept, f"serving sha {sha[:7]}", timeout, poll)


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
    say(f"{app_name}: rolling {previous['model-sha256'][:7] or 'default'} -> {sha[:7]} ({uri})")
    await _configure(app, app_name, {"model-uri": uri, "model-sha256": sha})
    ok, why = await wait_serving(app, sha, timeout, poll)
    if ok:
        say(f"{app_name}: {why}")
        # A canary beside it may answer too: its share of the requests is not the new model's.
        ok, why = smoke_test(gateway_url, model_name, sample, sha, or_sha=_value(config, "canary-model-sha256"))
    if ok:
        say(f"{app_name}: {why}")
        return Outcome(OK, f"{app_name} serves {sha[:7]}")
    say(f"{app_name}: roll failed ({why}); restoring the previous model")
    await _configure(app, app_name, previous)
    old_sha = previous["model-sha256"] or DEFAULT_MODEL_SHA256
    back, why_back = await wait_serving(app, old_sha, timeout, poll)
    if back:
        return Outcome(ROLLED_BACK, f"{app_name}: new model refused ({why}); {old_sha[:7]} serves again")
    return Outcome(ROLLBACK_FAILED, f"{app_name}: new model refused ({why}) and rollback failed: {why_back}")


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
    await _configure(app, app_name, {"canary-model-uri": uri, "canary-model-sha256": sha, "canary-weight": str(weight)})

    def routed(status: str, message: str) -> bool:
        return serving(status, message) == (stable[:7], sha[:7], weight)

    ok, why = await wait_until(app, routed, f"serving canary {sha[:7]} at {weight}%", timeout, poll)
    if ok:
        say(f"{app_name}: {why}")
        ok, why = smoke_test(gateway_url, _value(config, "model-name") or app_name, sample, stable, or_sha=sha)
    if ok:
        say(f"{app_name}: {why}")
        return Outcome(OK, f"{app_name}: canary {sha[:7]} answers {weight}% of requests, {stable[:7]} the rest")
    say(f"{app_name}: canary failed ({why}); removing it")
    removed, why_removed = await _remove_canary(app, app_name, sha, stable, timeout, poll, say, drain)
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
    if outcome.code != OK:
        return outcome  # the previous stable model serves again; the canary is left as it was
    removed, why = await _remove_canary(app, app_name, sha, sha, timeout, poll, say, drain)
    if removed:
        return Outcome(OK, f"{app_name}: promoted, {sha[:7]} serves all requests")
    return Outcome(ROLLBACK_FAILED, f"{app_name}: {sha[:7]} serves, but the canary was not removed: {why}")


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
    removed, why = await _remove_canary(app, app_name, sha, stable, timeout, poll, say, drain)
    if removed:
        return Outcome(OK, f"{app_name}: canary {sha[:7]} removed, {stable[:7]} serves all requests")
    return Outcome(ROLLBACK_FAILED, f"{app_name}: canary {sha[:7]} not removed: {why}")


async def _remove_canary(
    app: Any, app_name: str, sha: str, stable: str, timeout: float, poll: float, say, drain: float
) -> tuple[bool, str]:
    """Weight 0 first and wait until the charm routed it so; then, after a drain, the options go."""
    await _configure(app, app_name, {"canary-weight": "0"})

    def unrouted(status: str, message: str) -> bool:
        # Routed at 0%, or never routed at all: not Ready, or refused by Seldon (blocked).
        return serving(status, message) == (stable[:7], sha[:7], 0) or (
            f"canary {sha[:7]} not Ready" in message or f"canary {sha[:7]} refused" in message
        )

    ok, why = await wait_until(app, unrouted, f"routing 0% to canary {sha[:7]}", timeout, poll, blocked_ok="canary")
    if not ok:
        return False, why
    say(f"{app_name}: canary {sha[:7]} takes no more requests; removing it in {drain:g}s")
    await asyncio.sleep(drain)
    await _configure(app, app_name, reset=list(CANARY_KEYS))

    def gone(status: str, message: str) -> bool:
        return serving(status, message) == (stable[:7], "", 0)

    ok, why = await wait_until(app, gone, f"serving {stable[:7]} without a canary", timeout, poll)
    if ok:
        say(f"{app_name}: {why}")
    return ok, why


async def connect(model_name: str) -> Any:
    from juju.model import Model

    model = Model()
    await model.connect(model_name=model_name)
    return model


async def run(args: Any) -> Outcome:
    try:
        model = await connect(args.model)
    except Exception as exc:  # libjuju raises many types for "no controller"
        return Outcome(USAGE, f"cannot connect to Juju model {args.model!r}: {exc}")
    try:
        if args.promote:
            return await promote(model, args.app, args.gateway_url, args.sample, args.timeout)
        if args.abort:
            return await abort(model, args.app, args.timeout)
        if args.canary is not None:
            return await canary(
                model, args.app, args.uri, args.sha256, args.canary, args.gateway_url, args.sample, args.timeout
            )
        return await roll(model, args.app, args.uri, args.sha256, args.gateway_url, args.sample, args.timeout)
    except ConfigRefused as exc:
        return Outcome(JUJU_REFUSED, str(exc))
    finally:
        await model.disconnect()
