"""Results on disk until the broker acknowledges them: store and forward.

One file per result, named ``<seq>-<queued ms>-<result_id>.json`` and holding the exact MQTT
payload, so the folder's sorted listing is the sending order and survives a SIGKILL or a reboot:
each file is written to a temporary name, fsynced, renamed into place and the folder fsynced.
A crash mid-write leaves only a ``.tmp-`` file, removed at the next start; a write the disk
refuses (full, read-only) removes its temporary file and raises, so the photo stays put.

Held results (``<seq>-<ms>-<result_id>.held``): the service stores a result *held* before its
photo leaves the drop folder and releases it (rename to ``.json``) once the photo is filed.
The publisher sends only released results. So a crash, or a move the disk refuses, between
the two steps leaves the photo in the folder and its result held: the service files the photo
with that same result later instead of asking the model again, and the line never gets two
different results for one photo.

Bounds (the policy, also in the README): the outbox keeps at most ``max_bytes`` of results and
none older than ``max_age_s``. When a new result would exceed the size, the OLDEST results are
dropped to make room (the line acts on fresh results; the photo of a dropped result is still in
the done folder, so it can be inspected again). Every dropped result is logged with its image
and result_id and counted; nothing leaves silently.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TMP_PREFIX = ".tmp-"
SENDABLE, HELD = ".json", ".held"


@dataclass(frozen=True)
class Entry:
    seq: int
    queued_at: float
    result_id: str
    path: Path
    size: int
    held: bool = False

    @property
    def name(self) -> str:
        return self.path.name

    def payload(self) -> bytes:
        return self.path.read_bytes()

    def image(self) -> str:
        """The photo's name, for log lines about this entry (reads the file)."""
        try:
            return str(json.loads(self.payload()).get("image"))
        except (OSError, ValueError):
            return "?"


def _parse(path: Path) -> Entry | None:
    parts = path.stem.split("-")
    if path.suffix not in (SENDABLE, HELD) or len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return Entry(int(parts[0]), int(parts[1]) / 1000, parts[2], path, path.stat().st_size, path.suffix == HELD)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """An ordered, bounded, crash-safe queue of MQTT payloads; safe to share between two threads."""

    def __init__(
        self,
        folder: Path,
        max_bytes: int,
        max_age_s: float,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder, self.max_bytes, self.max_age_s = folder, max_bytes, max_age_s
        self.log, self.clock = log, clock
        self.dropped = 0
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob(TMP_PREFIX + "*"):
            leftover.unlink()  # a write interrupted before its rename: never a complete result
        found = sorted(filter(None, (_parse(p) for p in folder.iterdir() if p.is_file())), key=lambda e: e.seq)
        self._entries: dict[str, Entry] = {e.result_id: e for e in found}
        self._next_seq = (found[-1].seq + 1) if found else 1

    # --- the producer's side ----------------------------------------------------------

    def put(self, rid: str, payload: bytes, held: bool = False) -> bool:
        """Queue durably; False (and nothing written) when this result_id is already waiting.

        OSError (disk full, read-only) propagates with nothing left behind: the caller keeps
        the photo and tries again later."""
        with self._lock:
            if rid in self._entries:
                return False
            self._make_room(len(payload))
            now = self.clock()
            path = self.folder / f"{self._next_seq:012d}-{int(now * 1000)}-{rid}{HELD if held else SENDABLE}"
            tmp = self.folder / (TMP_PREFIX + path.name)
            try:
                with open(tmp, "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, path)
                _fsync_dir(self.folder)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
            self._entries[rid] = Entry(self._next_seq, now, rid, path, len(payload), held)
            self._next_seq += 1
            return True

    def held(self, rid: str) -> Entry | None:
        """The held result of this photo, stored before a crash or a refused move."""
        with self._lock:
            entry = self._entries.get(rid)
            return entry if entry is not None and entry.held else None

    def held_entries(self) -> list[Entry]:
        with self._lock:
            return [e for e in self._entries.values() if e.held]

    def release(self, rid: str) -> None:
        """Its photo is filed: the result may go to the broker now (OSError: it stays held)."""
        with self._lock:
            entry = self._entries.get(rid)
            if entry is None or not entry.held:
                return
            sendable = entry.path.with_suffix(SENDABLE)
            os.rename(entry.path, sendable)
            _fsync_dir(self.folder)
            self._entries[rid] = Entry(entry.seq, entry.queued_at, rid, sendable, entry.size)

    def _make_room(self, incoming: int) -> None:
        while self._entries and self._bytes() + incoming > self.max_bytes:
            oldest = next(iter(self._entries.values()))
            self._drop(oldest, f"outbox full ({self.max_bytes} bytes)")

    # --- the sender's side ------------------------------------------------------------

    def pending(self) -> list[Entry]:
        """Every waiting result, oldest first (expired ones are dropped first, with a log line)."""
        with self._lock:
            cutoff = self.clock() - self.max_age_s
            for entry in [e for e in self._entries.values() if e.queued_at < cutoff]:
                self._drop(entry, f"older than {self.max_age_s:g} s")
            return [e for e in self._entries.values() if not e.held]

    def remove(self, entry: Entry) -> None:
        """The broker acknowledged it. A crash before the unlink only means one duplicate later."""
        with self._lock:
            if self._entries.get(entry.result_id) == entry:
                del self._entries[entry.result_id]
            entry.path.unlink(missing_ok=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _bytes(self) -> int:
        return sum(e.size for e in self._entries.values())

    def _drop(self, entry: Entry, why: str) -> None:
        self.log(f"outbox: DROPPED result {entry.result_id} of {entry.image()} ({why}); it was never published")
        del self._entries[entry.result_id]
        entry.path.unlink(missing_ok=True)
        self.dropped += 1
