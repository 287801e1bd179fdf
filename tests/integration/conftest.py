"""Integration tests need a real MicroK8s + Juju controller; everywhere else they skip, saying why."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest


def controller_problem() -> str | None:
    if shutil.which("juju") is None:
        return "no juju CLI on PATH: run on a MicroK8s + Juju host (see .github/workflows/integration.yaml)"
    try:
        out = subprocess.run(["juju", "controllers", "--format", "json"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"juju controllers failed: {exc}"
    if out.returncode != 0:
        return f"no Juju controller reachable: {out.stderr.strip()[:200]}"
    if not json.loads(out.stdout or "{}").get("current-controller"):
        return "no current Juju controller: juju bootstrap microk8s"
    if shutil.which("microk8s") is None and shutil.which("kubectl") is None:
        return "neither microk8s nor kubectl on PATH"
    return None


def pytest_collection_modifyitems(config, items):
    problem = controller_problem()
    if problem:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=problem))
