"""Find processes by a variable in their environment (children inherit it, whatever they exec)."""

from __future__ import annotations

import os
from pathlib import Path


def processes_with_env(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment holds ``NAME=value``."""
    needle = marker.encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if needle not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(pid), cmdline))
    return found
