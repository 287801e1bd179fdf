"""The loop: complete photo -> model -> result in the outbox -> photo filed -> publisher woken.

Order matters for "nothing lost": the result is durable in the outbox (held) BEFORE the photo
leaves the drop folder, and released to the broker only after. When the disk refuses either
step (full, read-only) the photo stays in the folder, the line says why, and it is tried again
with backoff while the other photos go on; a held result is reused, never inspected twice.
Every photo gets one line on stdout with the running counters; problems go to stderr. Runs
until SIGTERM/SIGINT (systemd's stop) or a fatal broker refusal.

With a shadow model (``--shadow``), an inspected photo is *offered* to it only after its result
is released and the photo filed, exactly as without one: the offer is an in-memory put that
never waits (inspection.shadow), so nothing the shadow does reaches the line.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import faults, message
from .drop_folder import DropFolder
from .folders import Folders
from .model_client import ModelClient, Refused, ShuttingDown
from .outbox import Outbox
from .publisher import Publisher
from .shadow import Job, Shadow


class BrokerRefused(Exception):
    """The broker refused us for good (credentials, client id): printed and exit 1."""


@dataclass
class Counters:
    inspected: int = 0
    failed: int = 0

    def line(self, publisher: Publisher, outbox: Outbox) -> str:
        text = f"inspected {self.inspected} published {publisher.published} queued {len(outbox)} failed {self.failed}"
        return text + (f" dropped {outbox.dropped}" if outbox.dropped else "")


@dataclass
class Settings:
    model_name: str
    threshold: float
    band: message.Band
    poll_s: float
    retry_max_s: float = 60.0  # a disk that refuses: tried again at 1, 2, 4 ... s, then every minute


class Service:
    def __init__(
        self,
        settings: Settings,
        drop: DropFolder,
        model: ModelClient,
        outbox: Outbox,
        publisher: Publisher,
        folders: Folders,
        out,
        log,
        shadow: Shadow | None = None,
    ) -> None:
        self.s, self.drop, self.model, self.outbox = settings, drop, model, outbox
        self.publisher, self.folders, self.out, self.log = publisher, folders, out, log
        self.shadow = shadow
        self.counters = Counters()
        self._tries: dict[str, int] = {}  # photo -> refused disk writes in a row

    def recover(self) -> None:
        """At start: a held result whose photo already left the folder (filed just before a crash)
        is released; one whose photo is still there waits for it (handle() files it)."""
        for entry in self.outbox.held_entries():
            if not (self.drop.folder / entry.image()).exists():
                self._release(entry.result_id, entry.image())

    def run(self, stopping: threading.Event) -> None:
        self.recover()
        while not stopping.is_set():
            self._check_broker()
            for photo in self.drop.ready():
                if stopping.is_set():
                    break
                try:
                    self.handle(photo)
                except ShuttingDown:
                    break  # the photo stays in the drop folder; inspected again at the next start
                self._check_broker()
            stopping.wait(self.s.poll_s)

    def _check_broker(self) -> None:
        if self.publisher.fatal:
            raise BrokerRefused(self.publisher.fatal)

    def handle(self, photo: Path) -> None:
        try:
            data = photo.read_bytes()
            captured = photo.stat().st_mtime
        except FileNotFoundError:
            return  # taken away by someone else
        rid = message.result_id(photo.name, data)
        held = self.outbox.held(rid)
        if held is not None:  # stored before a crash or a refused move: file it, do not ask again
            self._file(photo, rid, json.loads(held.payload()), None)
            return
        started = time.monotonic()
        try:
            answer = self.model.predict(data, photo.name)
        except Refused as exc:
            msg = message.failed(
                rid=rid, image=photo.name, captured_at=captured, inspected_at=time.time(),
                model_name=self.s.model_name, reason=str(exc),
            )  # fmt: skip
        else:
            msg = message.inspected(
                rid=rid, image=photo.name, captured_at=captured, inspected_at=time.time(), answer=answer,
                threshold=self.s.threshold,
            )  # fmt: skip
        try:
            self.outbox.put(rid, json.dumps(msg).encode(), held=True)
        except OSError as exc:
            self._disk_refused(photo, f"its result cannot be stored in {self.outbox.folder}", exc)
            return
        faults.point(faults.AFTER_OUTBOX_BEFORE_MOVE)
        latency_ms = (time.monotonic() - started) * 1000
        self._file(photo, rid, msg, answer if msg["status"] == "inspected" else None, latency_ms)

    def _file(self, photo: Path, rid: str, msg: dict, answer: dict | None, latency_ms: float | None = None) -> None:
        """Move the photo to done or failed, then release its result to the broker."""
        notes = []
        if msg["status"] == "inspected":
            why = message.needs_relabel(msg["detections"], self.s.band)
            if why and answer is not None and self.folders.relabel is not None:
                try:
                    self.folders.copy_for_relabel(photo, rid, why, answer)
                    notes.append(f"relabel: {why}")
                except OSError as exc:  # a copy for people, not the line's result: said, not retried
                    self.log(f"{photo.name}: no copy for relabelling ({exc.strerror or exc}: {exc.filename})")
        try:
            if msg["status"] == "inspected":
                filed = self.folders.to_done(photo, rid)
            else:
                self.folders.to_failed(photo, rid, msg["error"])
        except OSError as exc:
            self._disk_refused(photo, "it cannot be moved out of the drop folder (its result waits, held)", exc)
            return
        self._tries.pop(photo.name, None)
        self._release(rid, photo.name)
        if msg["status"] == "inspected":
            self.counters.inspected += 1
            best = message.best_confidence(msg["detections"])
            verdict = "DEFECT" if msg["defect"] else "ok"
            summary = f"{len(msg['detections'])} detection(s)" + (f", best {best:.2f}" if best is not None else "")
            self._line(f"{photo.name}: {verdict}, {summary}" + "".join(f"; {n}" for n in notes) + f" [{rid[:8]}]")
            if self.shadow is not None:  # after the line's result and line: the shadow only sees it
                self.shadow.offer(Job(photo.name, rid, str(filed), msg, latency_ms, time.time()))
        else:
            self.counters.failed += 1
            self._line(f"{photo.name}: FAILED: {msg['error']} -> {self.folders.failed}/ [{rid[:8]}]")

    def _release(self, rid: str, image: str) -> None:
        try:
            self.outbox.release(rid)
        except OSError as exc:  # the photo is filed; the result stays held until the next start
            self.log(f"{image}: result {rid[:8]} filed but not released ({exc.strerror or exc}); sent after a restart")
            return
        self.publisher.wake()

    def _disk_refused(self, photo: Path, what: str, exc: OSError) -> None:
        """The photo stays where it is; it is tried again with backoff, the others go on."""
        tries = self._tries.get(photo.name, 0) + 1
        self._tries[photo.name] = tries
        delay = min(self.s.retry_max_s, 2.0 ** (tries - 1))
        where = f": {exc.filename}" if exc.filename else ""
        self.log(
            f"{photo.name}: {what} ({exc.strerror or exc}{where}); the photo stays in {self.drop.folder}, "
            f"try {tries + 1} in {delay:g} s"
        )
        self.drop.defer(photo, delay)

    def _line(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {text} | {self.counters.line(self.publisher, self.outbox)}", file=self.out, flush=True)
