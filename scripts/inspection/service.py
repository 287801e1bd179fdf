"""The loop: complete photo -> model -> result in the outbox -> photo filed -> publisher woken.

Order matters for "nothing lost": the result is durable in the outbox BEFORE the photo leaves
the drop folder. Every photo gets one line on stdout with the running counters; problems go to
stderr. Runs until SIGTERM/SIGINT (systemd's stop) or a fatal broker refusal.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import message
from .drop_folder import DropFolder
from .folders import Folders
from .model_client import ModelClient, Refused, ShuttingDown
from .outbox import Outbox
from .publisher import Publisher


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
    ) -> None:
        self.s, self.drop, self.model, self.outbox = settings, drop, model, outbox
        self.publisher, self.folders, self.out, self.log = publisher, folders, out, log
        self.counters = Counters()

    def run(self, stopping: threading.Event) -> None:
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
        try:
            answer = self.model.predict(data, photo.name)
        except Refused as exc:
            self._refused(photo, rid, captured, str(exc))
            return
        msg = message.inspected(
            rid=rid, image=photo.name, captured_at=captured, inspected_at=time.time(), answer=answer,
            threshold=self.s.threshold,
        )  # fmt: skip
        self.outbox.put(rid, json.dumps(msg).encode())
        self.publisher.wake()
        why = message.needs_relabel(answer["detections"], self.s.band)
        notes = []
        if why and self.folders.relabel is not None:
            self.folders.copy_for_relabel(photo, rid, why, answer)
            notes.append(f"relabel: {why}")
        if not self._file(photo, lambda: self.folders.to_done(photo, rid)):
            return
        self.counters.inspected += 1
        best = message.best_confidence(answer["detections"])
        verdict = "DEFECT" if msg["defect"] else "ok"
        summary = f"{len(answer['detections'])} detection(s)" + (f", best {best:.2f}" if best is not None else "")
        self._line(f"{photo.name}: {verdict}, {summary}" + "".join(f"; {n}" for n in notes) + f" [{rid[:8]}]")

    def _refused(self, photo: Path, rid: str, captured: float, reason: str) -> None:
        msg = message.failed(
            rid=rid, image=photo.name, captured_at=captured, inspected_at=time.time(), model_name=self.s.model_name,
            reason=reason,
        )  # fmt: skip
        self.outbox.put(rid, json.dumps(msg).encode())
        self.publisher.wake()
        if not self._file(photo, lambda: self.folders.to_failed(photo, rid, reason)):
            return
        self.counters.failed += 1
        self._line(f"{photo.name}: FAILED: {reason} -> {self.folders.failed}/ [{rid[:8]}]")

    def _file(self, photo: Path, move) -> bool:
        try:
            move()
            return True
        except OSError as exc:
            self.log(f"{photo.name}: cannot move it out of the drop folder ({exc}); left there, not inspected again")
            self.drop.skip(photo)
            return False

    def _line(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {text} | {self.counters.line(self.publisher, self.outbox)}", file=self.out, flush=True)
