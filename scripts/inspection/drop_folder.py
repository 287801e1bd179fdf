"""Which photos in the camera's drop folder are complete and ready to inspect.

Cameras and FTP servers either write to a temporary name and rename (then the photo appears
whole, at once) or write in place. Both are handled without reading a half-written file:
temporary-looking names are never picked up, and a photo is ready only once two scans in a
row saw the same size and modification time. Standard-library polling: no daemon, works on
NFS/SMB mounts where inotify sees nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
TEMP_SUFFIXES = {".tmp", ".part", ".partial", ".crdownload", ".filepart"}


def looks_temporary(name: str) -> bool:
    lower = name.lower()
    return lower.startswith((".", "~")) or lower.endswith("~") or any(lower.endswith(s) for s in TEMP_SUFFIXES)


class DropFolder:
    """Scan ``folder`` (not its subfolders) for complete photos, oldest first."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._seen: dict[str, tuple[int, int]] = {}
        self._not_before: dict[str, float] = {}  # photo -> monotonic time of its next try

    def ready(self) -> list[Path]:
        now: dict[str, tuple[int, int]] = {}
        with os.scandir(self.folder) as it:
            for e in it:
                if looks_temporary(e.name) or Path(e.name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    if not e.is_file(follow_symlinks=False):
                        continue
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # renamed away between the listing and the stat
                now[e.name] = (st.st_size, st.st_mtime_ns)
        clock = time.monotonic()
        stable = [
            name
            for name, sig in now.items()
            if sig[0] > 0 and self._seen.get(name) == sig and self._not_before.get(name, 0.0) <= clock
        ]
        self._seen = now
        self._not_before = {n: t for n, t in self._not_before.items() if n in now}
        return [self.folder / n for n in sorted(stable, key=lambda n: (now[n][1], n))]

    def defer(self, photo: Path, seconds: float) -> None:
        """Leave this photo alone for ``seconds`` (the disk refused its result or its move)."""
        self._not_before[photo.name] = time.monotonic() + seconds
