"""Private virtualenvs for the site and the model server, rebuilt only when their pins change.

Works on a fresh Debian/Ubuntu whose python3 has no ensurepip (python3-venv
not installed): the venv is then made without pip and pip is installed from
its wheel on PyPI, run straight from the wheel file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_REQUIREMENTS = ROOT / "models" / "server" / "requirements.txt"
SITE_REQUIREMENTS = ROOT / "requirements" / "site.txt"


def ensure(target: Path, requirements: Path, python: str | None = None) -> Path:
    """Return target's python, creating the venv and installing the pins if they changed."""
    python = python or sys.executable
    stamp = target / ".requirements.sha256"
    wanted = hashlib.sha256(requirements.read_bytes() + python.encode()).hexdigest()
    bin_python = target / "bin" / "python"
    if bin_python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return bin_python
    print(f"installing {requirements.relative_to(ROOT)} into {target} (once)", file=sys.stderr, flush=True)
    _create(target, python)
    pip = [str(bin_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    stamp.write_text(wanted)
    return bin_python


def _create(target: Path, python: str) -> None:
    has_ensurepip = subprocess.run([python, "-c", "import ensurepip"], capture_output=True).returncode == 0
    if has_ensurepip:
        subprocess.run([python, "-m", "venv", "--clear", str(target)], check=True)
        return
    subprocess.run([python, "-m", "venv", "--clear", "--without-pip", str(target)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_pip_wheel(Path(tmp))
        subprocess.run(
            [str(target / "bin" / "python"), f"{wheel}/pip", "install", "--quiet", str(wheel)],
            check=True,
        )


def _download_pip_wheel(into: Path) -> Path:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    json_api = index.replace("/simple", "/pypi") + "/pip/json"
    with urllib.request.urlopen(json_api, timeout=60) as resp:
        release = json.load(resp)
    url = next(u["url"] for u in release["urls"] if u["filename"].endswith("-py3-none-any.whl"))
    wheel = into / url.rsplit("/", 1)[1]
    with urllib.request.urlopen(url, timeout=120) as resp:
        wheel.write_bytes(resp.read())
    return wheel


def server_python(target: Path | None = None) -> Path:
    """The model server's venv (seldon-core 1.17.1 pins protobuf 3: it cannot share a venv)."""
    target = target or Path(os.environ.get("DEFECT_SERVER_VENV") or ROOT / ".venv" / "server")
    return ensure(target, SERVER_REQUIREMENTS, os.environ.get("DEFECT_SERVER_PYTHON"))
