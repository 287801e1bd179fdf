"""Integration tests need the site that `sudo scripts/bootstrap-edge-site` sets up; elsewhere they skip, saying why.

The same setup as a real site, from the same script (README: "The real site"): classic MicroK8s
1.28 registered with `juju add-k8s` as cloud `edge-microk8s`, controller `edge-microk8s` owned by
the invoking user, the server image imported into MicroK8s, the charm packed to
build/onnx-model.charm. Run them as that user:  tox -e integration -- --model kubeflow
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTROLLER = "edge-microk8s"  # scripts/edge_site/bootstrap.py
SETUP = "run `sudo scripts/bootstrap-edge-site` on a MicroK8s host first (.github/workflows/integration.yaml does)"


def controller_problem() -> str | None:
    if shutil.which("juju") is None:
        return f"no juju CLI on PATH: {SETUP}"
    try:
        out = subprocess.run(["juju", "controllers", "--format", "json"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"juju controllers failed: {exc}"
    if out.returncode != 0:
        return f"no Juju controller reachable ({out.stderr.strip()[:200]}): {SETUP}"
    if CONTROLLER not in (json.loads(out.stdout or "{}").get("controllers") or {}):
        return f"no controller {CONTROLLER} for this user: {SETUP}"
    if shutil.which("microk8s") is None:
        return f"no microk8s on PATH: {SETUP}"
    if not (ROOT / "build" / "onnx-model.charm").is_file():
        return f"build/onnx-model.charm is missing: {SETUP}"
    return None


def pytest_collection_modifyitems(config, items):
    problem = controller_problem()
    if problem:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=problem))
