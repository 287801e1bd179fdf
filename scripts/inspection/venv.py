"""The venv of ``predict --watch`` (paho-mqtt, requests, tenacity): .venv/predict, built once.

Made from the real interpreter behind ``sys.executable`` so that a run from a tox venv (the
tests) and a run from the system's python3 (a user, systemd) share one venv instead of
rebuilding it in turn: ``ensure()`` rebuilds when the interpreter's path changes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from local_site.venvs import ROOT, ensure

PREDICT_VENV = ROOT / ".venv" / "predict"
PREDICT_REQUIREMENTS = ROOT / "requirements" / "predict.txt"


def predict_python() -> Path:
    return ensure(PREDICT_VENV, PREDICT_REQUIREMENTS, os.path.realpath(sys.executable))
