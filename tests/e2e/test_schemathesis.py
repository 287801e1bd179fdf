"""schemathesis against models/server/openapi.yaml and the real running server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.server_process import ROOT

_BESIDE = Path(sys.executable).with_name("schemathesis")
SCHEMATHESIS = str(_BESIDE) if _BESIDE.exists() else shutil.which("schemathesis")
# What the schema cannot express: "a decodable JPEG" (so schema-valid strings are rightly refused),
# and Flask always allowing HEAD/OPTIONS beside the documented methods.
EXCLUDED = "positive_data_acceptance,allow_header_conformance"


def test_the_server_holds_to_its_openapi_document(synthetic_server, tmp_path):
    assert SCHEMATHESIS, "schemathesis is in requirements/e2e.txt"
    # Examples per operation: a few dozen in CI, up to 1000 in the long run (6 operations).
    examples = str(min(int(os.environ.get("FUZZ_EXAMPLES", "40")), 1000))
    out = subprocess.run(
        [SCHEMATHESIS, "run", str(ROOT / "models/server/openapi.yaml"), "--url", synthetic_server.url,
         "--max-examples", examples, "--exclude-checks", EXCLUDED, "--seed", "1"],
        capture_output=True, text=True, timeout=1800, cwd=tmp_path,  # its .schemathesis cache goes there
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-6000:]
