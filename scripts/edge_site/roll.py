"""Roll a new model onto a real site with python-libjuju, and put the old one back if it fails.

Steps: remember the application's model-uri/model-sha256, set the new ones,
wait until every unit reports the new sha as serving, smoke-test the gateway
with a sample image (the answer must name the new sha256), and on any
failure restore the previous values and wait for them to serve again.
"""

from __future__ import annotations

import asyncio
import base64
import json
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

OK, USAGE, ROLLED_BACK, ROLLBACK_FAILED = 0, 2, 3, 4
KEYS = ("model-uri", "model-sha256")


@dataclass(frozen=True)
class Outcome:
    code: int
    message: str


def _value(config: dict[str, Any], key: str) -> str:
    entry = config.get(key) or {}
    return str(entry.get("value") or "") if isinstance(entry, dict) else str(entry or "")


async def wait_serving(app: Any, sha: str, timeout: float, poll: float) -> tuple[bool, str]:
    """Until every unit says `serving ... sha <7>`; a blocked unit fails at once."""
    deadline = time.monotonic() + timeout
    want = f"sha {sha[:7]}"
    last = "no units"
    while time.monotonic() < deadline:
        units = list(app.units)
        if units:
            states = [(u.workload_status, u.workload_status_message) for u in units]
            last = "; ".join(f"{s}: {m}" for s, m in states)
            blocked = [m for s, m in states if s == "blocked"]
            if blocked:
                return False, f"blocked: {blocked[0]}"
            if all(s == "active" and m.startswith("serving ") and m.endswith(want) for s, m in states):
                return True, last
        await asyncio.sleep(poll)
    return False, f"not serving {want} after {timeout:g}s (last status: {last})"


def smoke_test(gateway_url: str, model_name: str, sample: Path, sha: str, timeout: float = 30.0) -> tuple[bool, str]:
    """One prediction through the gateway; the answer must come from the new model."""
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
    if served != sha:
        return False, f"smoke test: {url} answered with model {served[:7]}, not {sha[:7]}"
    return True, f"smoke test: {len(answer['detections'])} detection(s) from {sha[:7]}"


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
        return Outcome(USAGE, f"no application {app_name!r} in model {getattr(model, 'name', '?')}")
    config = await app.get_config()
    previous = {k: _value(config, k) for k in KEYS}
    model_name = _value(config, "model-name") or app_name
    say(f"{app_name}: rolling {previous['model-sha256'][:7] or 'default'} -> {sha[:7]} ({uri})")
    await app.set_config({"model-uri": uri, "model-sha256": sha})
    ok, why = await wait_serving(app, sha, timeout, poll)
    if ok:
        say(f"{app_name}: {why}")
        ok, why = smoke_test(gateway_url, model_name, sample, sha)
    if ok:
        say(f"{app_name}: {why}")
        return Outcome(OK, f"{app_name} serves {sha[:7]}")
    say(f"{app_name}: roll failed ({why}); restoring the previous model")
    await app.set_config(previous)
    old_sha = previous["model-sha256"] or DEFAULT_MODEL_SHA256
    back, why_back = await wait_serving(app, old_sha, timeout, poll)
    if back:
        return Outcome(ROLLED_BACK, f"{app_name}: new model refused ({why}); {old_sha[:7]} serves again")
    return Outcome(ROLLBACK_FAILED, f"{app_name}: new model refused ({why}) and rollback failed: {why_back}")


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
        return await roll(model, args.app, args.uri, args.sha256, args.gateway_url, args.sample, args.timeout)
    finally:
        await model.disconnect()
