"""Training pipeline for the scratch detector (not run in CI).

Its command lines parse their values with the parser every site command shares
(scripts/cli_values.py, standard library only), so scripts/ goes on the path here, once.
"""

import sys
from pathlib import Path

_SCRIPTS = str(Path(__file__).resolve().parents[2] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)
