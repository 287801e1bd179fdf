"""tests/image imports the site's own code (scripts/edge_site), as bootstrap does."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
