"""predict --watch when the disk refuses: a tiny filesystem that fills up, a folder made read-only.

The service runs its real loop, outbox and folders on real tmpfs mounts (size=, ro); only the
model and the broker are stand-ins. What a user must see: the photo stays in the drop folder,
a line says why, it is tried again and goes through once the disk takes it, the model is not
asked twice for a result that was stored, and nothing is published that was not filed.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from inspection.drop_folder import DropFolder  # noqa: E402
from inspection.folders import Folders  # noqa: E402
from inspection.message import Band  # noqa: E402
from inspection.outbox import Outbox  # noqa: E402
from inspection.service import Service, Settings  # noqa: E402

PHOTO = ROOT / "tests/data/metal-tags/images/image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"
ANSWER = {
    "detections": [{"label": "scratch", "confidence": 0.9, "box": {"x": 1, "y": 2, "width": 3, "height": 4}}],
    "model": {"name": "scratch", "version": "v", "sha256": "f" * 64},
    "image": {"width": 450, "height": 300},
    "inference_ms": 1.0,
}


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@contextmanager
def tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    proc = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root or CAP_SYS_ADMIN: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def remount(path: Path, mode: str) -> None:
    proc = _mount("-o", f"remount,{mode}", str(path))
    assert proc.returncode == 0, proc.stderr


def fill(folder: Path) -> Path:
    """Write until the filesystem says ENOSPC; the filler file is returned, to free the space."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


class Model:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def predict(self, data: bytes, image: str) -> dict:
        self.asked.append(image)
        return ANSWER


class Publisher:
    fatal = None
    published = 0

    def wake(self) -> None:
        pass


class Running:
    """The service's real loop on a thread; every wait below has a deadline."""

    def __init__(self, drop: Path, outbox_dir: Path, done: Path, failed: Path) -> None:
        self.lines: list[str] = []
        self.model = Model()
        self.outbox = Outbox(outbox_dir, 1 << 20, 3600, self.lines.append)
        settings = Settings("scratch", 0.18, Band(0.18, 0.5), poll_s=0.02, retry_max_s=0.2)
        self.service = Service(
            settings, DropFolder(drop), self.model, self.outbox, Publisher(), Folders(done, failed, None),
            _Sink(self.lines), self.lines.append,
        )  # fmt: skip
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stopping,), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def await_(self, condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.thread.is_alive(), f"the service died while waiting for {what}; lines: {self.lines}"
            assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}; lines: {self.lines[-5:]}"
            time.sleep(0.02)

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))


class _Sink:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> None:
        if text.strip():
            self.lines.append(text.strip())

    def flush(self) -> None:
        pass


def drop_photos(folder: Path, *names: str) -> None:
    for name in names:
        shutil.copyfile(PHOTO, folder / name)


@pytest.mark.parametrize("how", ["fills up", "read-only"])
def test_an_outbox_the_disk_refuses_keeps_the_photos_and_retries(tmp_path, how):
    drop, done, failed = tmp_path / "drop", tmp_path / "done", tmp_path / "failed"
    for folder in (drop, done, failed):
        folder.mkdir()
    with tmpfs(tmp_path / "outbox", size="64k") as outbox_dir:
        filler = fill(outbox_dir) if how == "fills up" else None
        with Running(drop, outbox_dir, done, failed) as site:
            if how == "read-only":
                remount(outbox_dir, "ro")
            drop_photos(drop, "a.jpg", "b.jpg")
            why = "No space left on device" if filler else "Read-only file system"
            site.await_(lambda: site.said(f"a.jpg: its result cannot be stored in {outbox_dir} ({why}"), "a's line")
            site.await_(lambda: site.said("b.jpg: its result cannot be stored"), "b is tried too, not held up")
            site.await_(lambda: site.said("a.jpg: its result cannot be stored") and site.said("try 3 in"), "retries")
            assert sorted(p.name for p in drop.iterdir()) == ["a.jpg", "b.jpg"]  # nothing lost, nothing moved
            assert [p.name for p in outbox_dir.iterdir() if p.name != "filler"] == []  # no half-written result
            if filler:
                filler.unlink()
            else:
                remount(outbox_dir, "rw")
            site.await_(lambda: sorted(p.name for p in done.iterdir()) == ["a.jpg", "b.jpg"], "both filed")
            assert sorted(e.image() for e in site.outbox.pending()) == ["a.jpg", "b.jpg"]  # one result each
            assert list(drop.iterdir()) == []


def test_a_read_only_done_folder_holds_the_result_and_never_asks_the_model_twice(tmp_path):
    drop, outbox_dir = tmp_path / "drop", tmp_path / "outbox"
    drop.mkdir()
    with tmpfs(tmp_path / "done") as done, Running(drop, outbox_dir, done, tmp_path / "failed") as site:
        remount(done, "ro")
        drop_photos(drop, "a.jpg")
        site.await_(lambda: site.said("a.jpg: it cannot be moved out of the drop folder"), "the refusal, said")
        site.await_(lambda: site.said("Read-only file system") and site.said("try 3 in"), "tried again")
        assert [p.name for p in drop.iterdir()] == ["a.jpg"]
        assert site.outbox.pending() == []  # stored, held: not sent for a photo that was not filed
        assert [e.image() for e in site.outbox.held_entries()] == ["a.jpg"]
        remount(done, "rw")
        site.await_(lambda: [p.name for p in done.iterdir()] == ["a.jpg"], "filed once the folder takes it")
        site.await_(lambda: [e.image() for e in site.outbox.pending()] == ["a.jpg"], "released to the broker")
        # the line about the photo follows its release: awaited, not assumed already printed
        site.await_(lambda: site.said("a.jpg: DEFECT, 1 detection(s)"), "the photo's line")
        assert site.model.asked == ["a.jpg"]  # the held result was reused


def test_a_result_held_before_a_crash_is_released_at_start_when_its_photo_was_filed(tmp_path):
    """The crash came after the move, before the release: the result must still reach the line."""
    drop, done = tmp_path / "drop", tmp_path / "done"
    drop.mkdir()
    done.mkdir()
    box = Outbox(tmp_path / "outbox", 1 << 20, 3600, print)
    box.put("r" * 32, b'{"image": "a.jpg"}', held=True)
    (done / "a.jpg").write_bytes(b"x")
    with Running(drop, tmp_path / "outbox", done, tmp_path / "failed") as site:
        site.await_(lambda: [e.image() for e in site.outbox.pending()] == ["a.jpg"], "released at start")
