"""The shadow model: every photo the line inspected also goes to a second model, which decides nothing.

The line's loop only *offers* a photo (``Shadow.offer``: a put into a bounded in-memory queue,
no I/O, no waiting; when the queue is full the photo is dropped and counted). Two threads of
their own do the rest, so a shadow that is down, slow, refusing or crashing never changes the
line's results, latency or counters:

- *intake* writes each offered job to ``<record>/pending/`` (fsynced), so a restart resumes the
  jobs it had not finished; past ``max_pending`` jobs on disk a job is dropped and counted;
- *sender* takes the pending jobs oldest first, reads the photo back from the done folder (the
  same bytes the stable model saw: its result_id is checked), asks the shadow once (any non-200
  means "shadow unavailable": counted, never retried, the next photo goes on), compares the two
  answers at the line's threshold, appends the comparison to the record (shadow_record), queues
  a summary in the shadow's own outbox (published to ``<topic>/shadow`` by its own Publisher,
  store and forward as the results are), updates the metrics, and copies a photo whose verdicts
  differ to the relabel folder with both answers beside it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import requests

# The matching every scorer of this project uses (one implementation; the package puts the root on the path).
from models.training.scoring import pairs

from . import message
from .folders import Folders
from .outbox import Outbox
from .shadow_record import (
    COMPARED,
    DEFECT_TO_OK,
    DROPPED,
    FAILED,
    OK_TO_DEFECT,
    SCHEMA,
    Record,
    Summary,
    flip,
    read,
    summarize,
)

PENDING = "pending"
SUMMARY_SCHEMA = "shadow-summary/1"
LOG_EVERY_S = 60.0  # a shadow that keeps failing is said once a minute, not once a photo


@dataclass(frozen=True)
class Job:
    """One photo for the shadow: where the line filed it and what the stable model answered."""

    image: str
    result_id: str
    photo: str  # its path under the done folder
    stable: dict  # the line's message (defect-result/1): detections, model, inference_ms
    stable_latency_ms: float | None  # the watcher's request to the stable model; None for a held result
    offered_at: float


def _box(d: dict) -> np.ndarray:
    b = d["box"]
    return np.array([b["x"], b["y"], b["x"] + b["width"], b["y"] + b["height"]], float)


def compare(stable: list[dict], shadow: list[dict], threshold: float) -> dict:
    """The two answers on one photo: verdicts at ``threshold``, and detections paired class by class
    with the project's matching (models/training/scoring.py: greedy by confidence, IoU >= 0.5)."""
    matched, stable_only, shadow_only = [], [], []
    for label in sorted({d["label"] for d in stable} | {d["label"] for d in shadow}):
        ours = [d for d in stable if d["label"] == label]
        theirs = [d for d in shadow if d["label"] == label]
        truth = np.array([_box(d) for d in ours]).reshape(-1, 4)
        used = set()
        for i, j in pairs([(float(d["confidence"]), _box(d)) for d in theirs], truth):
            if j is None:
                shadow_only.append(theirs[i])
            else:
                used.add(j)
                matched.append({"stable": ours[j], "shadow": theirs[i]})
        stable_only += [d for k, d in enumerate(ours) if k not in used]
    stable_defect = message.is_defect(stable, threshold)
    shadow_defect = message.is_defect(shadow, threshold)
    return {
        "agree": stable_defect == shadow_defect,
        "stable_defect": stable_defect,
        "shadow_defect": shadow_defect,
        "matched": matched,
        "stable_only": stable_only,
        "shadow_only": shadow_only,
    }


class Metrics:
    """What a dashboard plots: prometheus-client in a registry of our own (no process metrics)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.compared = Counter("defect_shadow_photos_compared", "Photos answered by both models", registry=r)
        self.agreements = Counter("defect_shadow_agreements", "Photos with the same defect verdict", registry=r)
        self.disagreements = Counter(
            "defect_shadow_disagreements", "Photos whose verdicts differ, by direction", ["direction"], registry=r
        )
        for direction in (DEFECT_TO_OK, OK_TO_DEFECT):
            self.disagreements.labels(direction)
        self.failures = Counter("defect_shadow_failures", "Photos the shadow did not answer (non-200...)", registry=r)
        self.dropped = Counter("defect_shadow_dropped", "Photos never sent to the shadow (queue full)", registry=r)
        buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        self.latency = Histogram(
            "defect_shadow_request_seconds",
            "Request latency seen by the watcher",
            ["model"],
            buckets=buckets,
            registry=r,
        )
        self.agreement = Gauge("defect_shadow_agreement_ratio", "Agreement over the record, current pair", registry=r)
        self.ci_low = Gauge("defect_shadow_agreement_ci95_low", "Wilson 95% CI, lower bound", registry=r)
        self.ci_high = Gauge("defect_shadow_agreement_ci95_high", "Wilson 95% CI, upper bound", registry=r)
        self.pending = Gauge("defect_shadow_pending", "Photos waiting for the shadow", registry=r)

    def serve(self, port: int) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, registry=self.registry)


class Totals:
    """Running agreement of the current stable/shadow pair, started from the record (restarts keep it)."""

    def __init__(self, entries: list[dict]) -> None:
        self.current = summarize(entries, worst=0)

    def add(self, entry: dict) -> None:
        pair = (entry["stable"]["sha256"], entry["shadow"]["sha256"])
        if pair != (self.current.stable_sha256, self.current.shadow_sha256):
            self.current = Summary(*pair)  # a roll or a new shadow: the figures start again for the new pair
        self.current.count(entry)

    def as_json(self) -> dict:
        c = self.current
        low, high = c.interval
        return {
            "stable_sha256": c.stable_sha256,
            "shadow_sha256": c.shadow_sha256,
            "photos_compared": c.compared,
            "agreements": c.agreements,
            "agreement": round(c.agreement, 4) if c.agreement is not None else None,
            "agreement_ci95": [round(low, 4), round(high, 4)],
            "flips": dict(c.flips),
        }


class Shadow:
    def __init__(
        self,
        url: str,
        record_dir: Path,
        threshold: float,
        timeout: float,
        folders: Folders,
        outbox: Outbox,
        wake_publisher: Callable[[], None],
        log: Callable[[str], None],
        metrics: Metrics | None = None,
        max_pending: int = 200,
    ) -> None:
        """``url``: the shadow's predictions endpoint; ``outbox``: the shadow's own (its topic's)."""
        self.url, self.threshold, self.timeout = url, threshold, timeout
        self.folders, self.outbox, self.wake_publisher, self.log = folders, outbox, wake_publisher, log
        self.metrics = metrics or Metrics()
        self.max_pending = max_pending
        self.record = Record(record_dir)
        self.pending_dir = record_dir / PENDING
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.pending_dir.glob(".tmp-*"):
            leftover.unlink()
        self.totals = Totals(read(record_dir))
        self._set_gauges()
        # One slot more than the bound: stop()'s wake-up always fits.
        self._offered: queue.Queue[Job | None] = queue.Queue(maxsize=max_pending + 1)
        self._dropped_offers = 0  # by the line's thread: counted, recorded by intake
        self._lock = threading.Lock()
        self._work = threading.Event()
        self._stop = threading.Event()
        self._seq = max((int(p.name.split("-", 1)[0]) for p in self._pending()), default=0) + 1
        self._last_log = 0.0
        self._failing = False
        self.session = requests.Session()
        self._threads = [
            threading.Thread(target=self._intake, name="shadow-intake", daemon=True),
            threading.Thread(target=self._sender, name="shadow-sender", daemon=True),
        ]

    # --- the line's side: never blocks, never raises --------------------------------------

    def offer(self, job: Job) -> None:
        if self._offered.qsize() < self.max_pending:  # only this thread puts jobs: no race
            self._offered.put_nowait(job)
            return
        with self._lock:
            self._dropped_offers += 1

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        waiting = len(self._pending())
        if waiting:
            self.log(f"shadow: {waiting} photo(s) left pending by the last run; comparing them first")
        self._work.set()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """What is offered but not yet on disk is written to pending/ first (a restart resumes it).

        A request in flight to a slow shadow is not waited for: its job stays in pending/."""
        self._stop.set()
        self._offered.put(None)  # wakes intake; its reserved slot
        self._work.set()
        intake, sender = self._threads
        intake.join(timeout=10)
        sender.join(timeout=1)

    # --- intake: offered jobs to pending/ -------------------------------------------------

    def _pending(self) -> list[Path]:
        return sorted(p for p in self.pending_dir.iterdir() if p.suffix == ".json" and not p.name.startswith("."))

    def _intake(self) -> None:
        while True:
            job = self._offered.get()
            self._record_dropped_offers()
            if job is None:
                if self._stop.is_set() and self._offered.empty():
                    return
                continue
            if len(self._pending()) >= self.max_pending:
                self._drop(job.image, job.result_id, f"{self.max_pending} photos already wait for the shadow")
                continue
            path = self.pending_dir / f"{self._seq:012d}-{job.result_id}.json"
            self._seq += 1
            tmp = path.with_name(".tmp-" + path.name)
            try:
                with open(tmp, "w") as f:
                    json.dump(asdict(job), f)
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                self._drop(job.image, job.result_id, f"cannot write {self.pending_dir} ({exc.strerror or exc})")
                continue
            self.metrics.pending.set(len(self._pending()))
            self._work.set()

    def _record_dropped_offers(self) -> None:
        with self._lock:
            count, self._dropped_offers = self._dropped_offers, 0
        if count:
            self._drop(None, None, "the shadow's queue was full", count)

    def _drop(self, image: str | None, rid: str | None, why: str, count: int = 1) -> None:
        self.metrics.dropped.inc(count)
        self._log_limited(f"shadow: {count} photo(s) not compared ({why})")
        entry = {"schema": SCHEMA, "status": DROPPED, "at": message.iso(time.time()), "image": image}
        entry.update({"result_id": rid, "count": count, "why": why})
        try:
            self.record.append(entry)
        except OSError as exc:
            self.log(f"shadow: cannot append to {self.record.path} ({exc.strerror or exc})")

    # --- sender: pending/ to the shadow, the record, the outbox ---------------------------

    def _sender(self) -> None:
        while not self._stop.is_set():
            self._work.wait(timeout=1.0)
            self._work.clear()
            for path in self._pending():
                if self._stop.is_set():
                    return
                self._compare_one(path)
            self.metrics.pending.set(len(self._pending()))
            self._record_dropped_offers()

    def _compare_one(self, path: Path) -> None:
        try:
            job = Job(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            self.log(f"shadow: {path.name}: unreadable pending job ({exc}); removed")
            path.unlink(missing_ok=True)
            return
        try:
            data = Path(job.photo).read_bytes()
        except OSError:
            data = None
        if data is None or message.result_id(job.image, data) != job.result_id:
            self._drop(job.image, job.result_id, f"the photo left {job.photo} before the shadow saw it")
            path.unlink(missing_ok=True)
            return
        started = time.monotonic()
        answer, error = self._ask(data)
        latency_ms = (time.monotonic() - started) * 1000
        if answer is None:
            self.metrics.failures.inc()
            entry = {"schema": SCHEMA, "status": FAILED, "at": message.iso(time.time()), "image": job.image}
            entry.update({"result_id": job.result_id, "error": error, "latency_ms": round(latency_ms, 1)})
            self._log_limited(f"shadow: unavailable ({error}); the line goes on without it")
            self._failing = True
            if not self._write(entry):
                return
            path.unlink(missing_ok=True)
            return
        if self._failing:
            self._failing = False
            self.log("shadow: answering again")
        entry = self._entry(job, data, answer, latency_ms)
        if not self._write(entry):
            return
        self.totals.add(entry)
        self._count(entry, job)
        self._publish(entry)
        if not entry["agree"]:
            self._relabel(job, entry, answer)
        path.unlink(missing_ok=True)

    def _ask(self, data: bytes) -> tuple[dict | None, str]:
        """One request; (jsonData, "") or (None, why). Any non-200 is "shadow unavailable"."""
        body = {"binData": base64.b64encode(data).decode()}
        try:
            resp = self.session.post(self.url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {str(exc)[-160:]}"
        if resp.status_code != 200:
            return None, f"HTTP {resp.status_code} from {self.url}"
        try:
            answer = resp.json()["jsonData"]
            answer["detections"][:0]
        except (ValueError, KeyError, TypeError):
            return None, f"HTTP 200 but not a prediction: {resp.text[:120]!r}"
        return answer, ""

    def _entry(self, job: Job, data: bytes, answer: dict, latency_ms: float) -> dict:
        stable = job.stable
        result = compare(stable["detections"], answer["detections"], self.threshold)
        shadow_model = answer.get("model") or {}

        def side(sha, defect, detections, latency, inference):
            return {
                "sha256": sha,
                "defect": defect,
                "detections": detections,
                "latency_ms": None if latency is None else round(latency, 1),
                "inference_ms": inference,
            }

        return {
            "schema": SCHEMA,
            "status": COMPARED,
            "at": message.iso(time.time()),
            "image": job.image,
            "photo_sha256": hashlib.sha256(data).hexdigest(),
            "result_id": job.result_id,
            "threshold": self.threshold,
            "agree": result["agree"],
            "stable": side(
                stable["model"]["sha256"], result["stable_defect"], stable["detections"], job.stable_latency_ms,
                stable.get("inference_ms"),
            ),
            "shadow": side(
                shadow_model.get("sha256"), result["shadow_defect"], answer["detections"], latency_ms,
                answer.get("inference_ms"),
            ),
            "matched": result["matched"],
            "stable_only": result["stable_only"],
            "shadow_only": result["shadow_only"],
        }  # fmt: skip

    def _write(self, entry: dict) -> bool:
        try:
            self.record.append(entry)
            return True
        except OSError as exc:  # the job stays pending: compared again once the disk takes it
            self._log_limited(f"shadow: cannot append to {self.record.path} ({exc.strerror or exc}); retrying")
            self._stop.wait(5)
            return False

    def _count(self, entry: dict, job: Job) -> None:
        m = self.metrics
        m.compared.inc()
        which = flip(entry)
        if which is None:
            m.agreements.inc()
        else:
            m.disagreements.labels(which).inc()
        m.latency.labels("shadow").observe(entry["shadow"]["latency_ms"] / 1000)
        if job.stable_latency_ms is not None:
            m.latency.labels("stable").observe(job.stable_latency_ms / 1000)
        self._set_gauges()

    def _set_gauges(self) -> None:
        c = self.totals.current
        low, high = c.interval
        if c.agreement is not None:
            self.metrics.agreement.set(c.agreement)
        self.metrics.ci_low.set(low)
        self.metrics.ci_high.set(high)

    def _publish(self, entry: dict) -> None:
        """The summary for this photo and the running totals, through the shadow's outbox."""
        summary = {
            "schema": SUMMARY_SCHEMA,
            "result_id": entry["result_id"],
            "image": entry["image"],
            "photo_sha256": entry["photo_sha256"],
            "agree": entry["agree"],
            "flip": flip(entry),
            "stable": {k: entry["stable"][k] for k in ("sha256", "defect", "latency_ms")},
            "shadow": {k: entry["shadow"][k] for k in ("sha256", "defect", "latency_ms")},
            "matched": len(entry["matched"]),
            "stable_only": len(entry["stable_only"]),
            "shadow_only": len(entry["shadow_only"]),
            "totals": self.totals.as_json(),
        }
        try:
            self.outbox.put(entry["result_id"], json.dumps(summary).encode())
        except OSError as exc:  # the record has it; the summary topic misses one message, said
            self.log(f"shadow: summary of {entry['image']} not queued ({exc.strerror or exc}); it is in the record")
            return
        self.wake_publisher()

    def _relabel(self, job: Job, entry: dict, answer: dict) -> None:
        if self.folders.relabel is None:
            return
        stable, shadow = entry["stable"], entry["shadow"]
        why = (
            f"shadow disagrees: stable {'DEFECT' if stable['defect'] else 'ok'} ({stable['sha256'][:7]}), "
            f"shadow {'DEFECT' if shadow['defect'] else 'ok'} ({(shadow['sha256'] or '?')[:7]})"
        )
        stable_answer = {
            "detections": job.stable["detections"],
            "model": job.stable["model"],
            "image": job.stable.get("image_size"),
            "inference_ms": job.stable.get("inference_ms"),
        }
        try:
            self.folders.copy_for_relabel(Path(job.photo), job.result_id, why, stable_answer, shadow=answer)
        except OSError as exc:
            self.log(f"{job.image}: no copy for relabelling ({exc.strerror or exc})")

    def _log_limited(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            self.log(text)
