"""Running the host's commands (snap, microk8s, juju, docker) for the site's scripts.

A command that fails raises StepFailed with the command and the end of its output,
which the scripts print with what to do.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "localhost:32000"  # MicroK8s' registry add-on
MICROK8S_CHANNEL = "1.28/stable"  # the versions the site is tested with (README: "Versions")
JUJU_CHANNEL = "3.6/stable"


class StepFailed(RuntimeError):
    """A step could not be completed; the message says what to do."""


def run(*cmd: str, cwd: Path | None = None, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise StepFailed(f"`{cmd[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise StepFailed(f"`{' '.join(cmd)}` did not finish in {timeout:g}s") from None
    if check and proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[-800:]
        raise StepFailed(f"`{' '.join(cmd)}` exited {proc.returncode}: {output}")
    return proc


def succeeds(*cmd: str) -> bool:
    try:
        return run(*cmd, check=False, timeout=120).returncode == 0
    except StepFailed:
        return False
