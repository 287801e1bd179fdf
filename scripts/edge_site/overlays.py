"""``--overlay`` files, checked before a command does anything: bootstrap and airgap export.

An overlay is read much later (after snaps are installed, or while charms download), where a
missing file or broken YAML used to surface as a traceback. Checked first, with the reader the
local site uses (local_site.bundle.read), it is one line naming the file, exit 2.
"""

from __future__ import annotations

from pathlib import Path

from local_site.bundle import BundleError, read


def first_problem(paths: list[Path]) -> str | None:
    """``--overlay <file>: <why>`` for the first overlay that cannot be used, or None."""
    for path in paths:
        try:
            read(path)
        except BundleError as exc:
            return f"--overlay {exc}"
    return None
