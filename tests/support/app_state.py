"""Leave an onnx-model application as a test found it: its options back, and serving what it served.

Used by the integration suite (each test changes options inside ``async with kept(app)``), and
tested against the fake libjuju (tests/unit/test_roll_model.py). Waiting uses roll-model's own
``configure`` / ``wait_until``, so a status from before the restore is never taken for its result.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from edge_site.roll import DEFAULT_MODEL_SHA256, configure, serving, wait_until  # noqa: E402


def user_options(config: dict[str, Any]) -> dict[str, str]:
    """The options a user set (libjuju's get_config marks them source "user"), as set_config takes them."""
    return {
        key: str(entry["value"])
        for key, entry in config.items()
        if isinstance(entry, dict) and entry.get("source") == "user" and entry.get("value") is not None
    }


def expected_status(options: dict[str, str]) -> tuple[str, str, int]:
    """What roll.serving() reads from a unit serving ``options``: (stable, canary, routed percent)."""
    stable = (options.get("model-sha256") or DEFAULT_MODEL_SHA256)[:7]
    if not options.get("canary-model-uri"):
        return stable, "", 0
    return stable, options["canary-model-sha256"][:7], int(options.get("canary-weight") or 0)


async def restore(app: Any, saved: dict[str, str], timeout: float, poll: float) -> None:
    """Set back what changed, reset what was added, and wait until the unit serves as before."""
    now = user_options(await app.get_config())
    changed = {key: value for key, value in saved.items() if now.get(key) != value}
    added = sorted(set(now) - set(saved))
    if not changed and not added:
        return
    before = await configure(app, app.name, changed, added)
    want = expected_status(saved)
    ok, why = await wait_until(
        app, lambda s, m: serving(s, m) == want, f"serving {want} as before", timeout, poll, before=before
    )
    assert ok, f"{app.name} was not restored: {why}"


@asynccontextmanager
async def kept(app: Any, timeout: float = 20 * 60, poll: float = 5.0) -> AsyncIterator[Any]:
    """Whatever the body does to ``app``'s options, they are put back (and served) after it."""
    saved = user_options(await app.get_config())
    try:
        yield app
    finally:
        await restore(app, saved, timeout, poll)
