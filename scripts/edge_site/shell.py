"""Running the host's commands (snap, microk8s, juju, charmcraft, lxd) for the site's scripts.

A command that fails raises StepFailed with the command and the end of its output,
which the scripts print with what to do. ``user=``: run it as that user (``sudo -u``),
for the Juju client, whose controllers live in each user's own ``~/.local/share/juju``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "localhost:32000"  # MicroK8s' registry add-on
# The versions the site is tested with (README: "Versions"). Classic MicroK8s, as the Charmed
# Kubeflow 1.8 guide installs it; Juju reaches it through `juju add-k8s` (see bootstrap.py).
MICROK8S_CHANNEL = "1.28/stable"
JUJU_CHANNEL = "3.6/stable"
# `base: ubuntu@24.04` in charmcraft.yaml needs charmcraft 3 (charmcraft 2 only knows `bases:`).
CHARMCRAFT_CHANNEL = "3.x/stable"


class StepFailed(RuntimeError):
    """A step could not be completed; the message says what to do."""


def as_user(user: str | None, cmd: tuple[str, ...]) -> tuple[str, ...]:
    """``cmd`` as ``user`` with that user's HOME (sudo -H), or as is for root / no user."""
    if user is None or user == "root":
        return cmd
    return ("sudo", "-u", user, "-H", "--", *cmd)


def run(
    *cmd: str,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = 3600,
    user: str | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    full = as_user(user, cmd)
    shown = " ".join(cmd) + (f" (as {user})" if full != cmd else "")
    try:
        proc = subprocess.run(full, cwd=cwd, capture_output=True, text=True, timeout=timeout, input=stdin)
    except FileNotFoundError:
        raise StepFailed(f"`{full[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise StepFailed(f"`{shown}` did not finish in {timeout:g}s") from None
    if check and proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[-800:]
        raise StepFailed(f"`{shown}` exited {proc.returncode}: {output}")
    return proc


def succeeds(*cmd: str, user: str | None = None) -> bool:
    try:
        return run(*cmd, check=False, timeout=120, user=user).returncode == 0
    except StepFailed:
        return False
