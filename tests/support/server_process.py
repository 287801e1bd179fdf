"""The tests start model servers with the product's own launcher (scripts/local_site)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from local_site.model_server import NotReady, ServerProcess, free_port  # noqa: E402
from local_site.venvs import server_python  # noqa: E402

__all__ = ["ROOT", "NotReady", "ServerProcess", "free_port", "server_python"]
