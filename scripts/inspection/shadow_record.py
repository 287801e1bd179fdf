"""The shadow comparison's record on disk, and the figures read from it (agreement, flips, latency).

Standard library only: ``scripts/shadow-report`` and ``scripts/roll-model --promote-shadow`` read
the record on a plant PC or an operator's laptop without the watcher's venv. The watcher writes it
(``inspection.shadow``); this module is the one place that says what a line means and how the
figures are computed from it, so the report, the MQTT summary, the metrics and the promotion
gate can never disagree.

The record is ``<DIR>/comparisons.jsonl``: one JSON object per line, appended and fsynced, never
rewritten. A crash can leave at most a torn last line, which readers skip. A photo compared twice
(a crash after its line was written, before its pending job was removed) counts once: the last
line for a ``result_id`` wins.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = "shadow-comparison/1"
RECORD_FILE = "comparisons.jsonl"
COMPARED, FAILED, DROPPED = "compared", "shadow_failed", "dropped"
# Which verdict flipped: the stable model's verdict first (what the line acted on).
DEFECT_TO_OK, OK_TO_DEFECT = "stable_defect_shadow_ok", "stable_ok_shadow_defect"
# Detection sizes by box area in original-image pixels, COCO's buckets (32^2, 96^2).
SIZES = (("small", 32**2), ("medium", 96**2), ("large", math.inf))
Z95 = 1.959963984540054  # the normal quantile for a two-sided 95 % interval


def default_record_dir(model: str) -> Path:
    """Where the watcher keeps the record for ``/model/<model>/`` unless told (--shadow-record), and
    where the report and the promotion look unless told (--record): one default for the three.

    The XDG state directory, because the record is state that outlives a run (not a cache, not
    configuration); a systemd unit with ``StateDirectory=`` sets XDG_STATE_HOME to it."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "defect-inspection" / "shadow" / model


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (0, 1) when there is no trial.

    Wilson rather than the normal approximation because agreement is near 1, where p +/- z*sqrt(pq/n)
    runs past 1 and says nothing about how few photos were seen (E. B. Wilson, JASA 22, 1927)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if successes == 0 else low), (1.0 if successes == n else high)  # exact at the ends


def size_of(detection: dict) -> str:
    box = detection.get("box") or {}
    area = float(box.get("width", 0)) * float(box.get("height", 0))
    return next(name for name, limit in SIZES if area < limit)


class Record:
    """Append-only, fsynced JSON lines; safe to share between the shadow worker's threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / RECORD_FILE
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        self._end_torn_line()

    def _end_torn_line(self) -> None:
        """A crash mid-append left a line without its newline: end it, or the next line would be glued
        to it and lost with it (readers skip the torn one)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        except (FileNotFoundError, OSError):
            return  # no record yet (or empty: seek before the start)
        if torn:
            with open(self.path, "ab") as f:
                f.write(b"\n")
                os.fsync(f.fileno())

    def append(self, entry: dict) -> None:
        """One line, on disk before this returns (OSError propagates: the caller counts it)."""
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


def read(folder: Path) -> list[dict]:
    """Every complete line of the record in ``folder`` (a torn last line is skipped); [] if none."""
    return read_checked(folder)[0]


def read_checked(folder: Path) -> tuple[list[dict], list[int]]:
    """The record's entries, and the numbers (from 1) of the lines that are not a JSON object.

    Such a line is skipped, not refused: a crash leaves a torn last line (the next writer ends it,
    so it can sit mid-file afterwards), and one bad line must not make months of comparisons
    unreadable. The report says how many it skipped (scripts/shadow-report), so a record edited
    by hand is noticed. Lines of another schema are left out silently: a later watcher's."""
    path = folder / RECORD_FILE
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return [], []
    out, corrupt = [], []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip():
                corrupt.append(number)  # a line a crash cut short, or an edit
            continue
        if not isinstance(entry, dict):
            corrupt.append(number)
        elif entry.get("schema") == SCHEMA:
            out.append(entry)
    return out, corrupt


def flip(entry: dict) -> str | None:
    """Which way the verdict flipped on this photo, or None when both models agree."""
    if entry["agree"]:
        return None
    return DEFECT_TO_OK if entry["stable"]["defect"] else OK_TO_DEFECT


def severity(entry: dict) -> float:
    """How far apart the two answers are: a flipped verdict outweighs any number of unmatched boxes,
    then each unmatched detection counts its confidence (a confident miss is worse than a faint one)."""
    unmatched = sum(float(d["confidence"]) for d in entry["stable_only"] + entry["shadow_only"])
    return (0.0 if entry["agree"] else 100.0) + unmatched


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    if len(values) == 1:
        return {"p50": round(values[0], 1), "p95": round(values[0], 1)}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(statistics.median(values), 1), "p95": round(cuts[94], 1)}


@dataclass
class Summary:
    """The figures of one stable/shadow pair over the photos both answered."""

    stable_sha256: str | None
    shadow_sha256: str | None
    compared: int = 0
    agreements: int = 0
    flips: dict[str, int] = field(default_factory=lambda: {DEFECT_TO_OK: 0, OK_TO_DEFECT: 0})
    shadow_failed: int = 0
    dropped: int = 0
    detections: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # by class / by size
    latency_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    worst: list[dict] = field(default_factory=list)
    other_pairs: int = 0  # photos compared for another stable/shadow pair (before a roll), left out

    @property
    def agreement(self) -> float | None:
        return self.agreements / self.compared if self.compared else None

    def count(self, entry: dict) -> None:
        """One more photo both models answered: agreed, or flipped one way."""
        self.compared += 1
        which = flip(entry)
        if which is None:
            self.agreements += 1
        else:
            self.flips[which] += 1

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.agreements, self.compared)

    def as_json(self) -> dict:
        low, high = self.interval
        return {
            "stable_sha256": self.stable_sha256,
            "shadow_sha256": self.shadow_sha256,
            "photos_compared": self.compared,
            "agreements": self.agreements,
            "disagreements": self.compared - self.agreements,
            "agreement": None if self.agreement is None else round(self.agreement, 4),
            "agreement_ci95": [round(low, 4), round(high, 4)],
            "flips": dict(self.flips),
            "shadow_failed": self.shadow_failed,
            "dropped": self.dropped,
            "detections": self.detections,
            "latency_ms": self.latency_ms,
            "worst": self.worst,
            "other_pairs_compared": self.other_pairs,
        }


def _count(table: dict, key: str, where: str) -> None:
    row = table.setdefault(key, {"both": 0, "stable_only": 0, "shadow_only": 0})
    row[where] += 1


def summarize(entries: Iterable[dict], shadow_sha256: str | None = None, worst: int = 10) -> Summary:
    """The figures for the pair whose shadow is ``shadow_sha256`` (default: the latest compared).

    Photos compared for another pair (an earlier shadow, or before the stable model rolled) are
    counted in ``other_pairs`` only: figures never mix two models. Failures and drops cannot be
    told apart by model (the shadow did not answer), so every one in the record is counted."""
    entries = list(entries)
    latest: dict[str, dict] = {}
    failed = dropped = 0
    for e in entries:
        if e.get("status") == COMPARED:
            latest[e["result_id"]] = e
        elif e.get("status") == FAILED:
            failed += 1
        elif e.get("status") == DROPPED:
            dropped += int(e.get("count", 1))
    compared = list(latest.values())
    if shadow_sha256 is None and compared:
        shadow_sha256 = compared[-1]["shadow"]["sha256"]
    ours = [e for e in compared if e["shadow"]["sha256"] == shadow_sha256]
    stable_shas = Counter(e["stable"]["sha256"] for e in ours)
    stable_sha = stable_shas.most_common(1)[0][0] if stable_shas else None
    ours = [e for e in ours if e["stable"]["sha256"] == stable_sha]
    s = Summary(stable_sha, shadow_sha256, shadow_failed=failed, dropped=dropped)
    s.other_pairs = len(compared) - len(ours)
    by_class: dict[str, dict[str, int]] = {}
    by_size: dict[str, dict[str, int]] = {}
    for e in ours:
        s.count(e)
        for where in ("stable_only", "shadow_only"):
            for d in e[where]:
                _count(by_class, str(d["label"]), where)
                _count(by_size, size_of(d), where)
        for pair in e["matched"]:  # counted by the stable model's box: what the line saw
            _count(by_class, str(pair["stable"]["label"]), "both")
            _count(by_size, size_of(pair["stable"]), "both")
    s.detections = {"by_class": by_class, "by_size": by_size}
    for model in ("stable", "shadow"):
        values = [float(e[model]["latency_ms"]) for e in ours if e[model].get("latency_ms") is not None]
        s.latency_ms[model] = _percentiles(values)
    ranked = sorted((e for e in ours if severity(e) > 0), key=severity, reverse=True)[:worst]
    s.worst = [
        {
            "image": e["image"],
            "result_id": e["result_id"],
            "flip": flip(e),
            "stable_defect": e["stable"]["defect"],
            "shadow_defect": e["shadow"]["defect"],
            "stable_only": len(e["stable_only"]),
            "shadow_only": len(e["shadow_only"]),
            "severity": round(severity(e), 3),
        }
        for e in ranked
    ]
    return s


def table(s: Summary) -> str:
    """The report a person reads: plain text, one figure per line, widest context first."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f} %"

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f} ms"

    low, high = s.interval
    lines = [
        f"stable {(s.stable_sha256 or '?')[:12]}  shadow {(s.shadow_sha256 or '?')[:12]}",
        f"photos compared        {s.compared}"
        + (f"   ({s.other_pairs} more for other model pairs, not counted)" if s.other_pairs else ""),
        f"agreement              {pct(s.agreement)}   95 % CI (Wilson) {pct(low)} - {pct(high)}",
        f"disagreements          {s.compared - s.agreements}",
        f"  stable DEFECT, shadow ok   {s.flips[DEFECT_TO_OK]}",
        f"  stable ok, shadow DEFECT   {s.flips[OK_TO_DEFECT]}",
        f"shadow failed          {s.shadow_failed}",
        f"shadow dropped         {s.dropped}   (its queue was full)",
        "",
        f"latency                {'p50':>10} {'p95':>10}",
    ]
    for model in ("stable", "shadow"):
        q = s.latency_ms.get(model, {})
        lines.append(f"  {model:<20} {ms(q.get('p50')):>10} {ms(q.get('p95')):>10}")
    for title, key in (("detections by class", "by_class"), ("detections by size", "by_size")):
        lines += ["", f"{title:<22} {'both':>6} {'stable only':>12} {'shadow only':>12}"]
        for name, row in sorted(s.detections.get(key, {}).items()):
            lines.append(f"  {name:<20} {row['both']:>6} {row['stable_only']:>12} {row['shadow_only']:>12}")
    lines += ["", "worst photos (verdict flips first, then unmatched detections by confidence)"]
    if not s.worst:
        lines.append("  none: every photo got the same detections from both")
    for w in s.worst:
        verdicts = (
            f"stable {'DEFECT' if w['stable_defect'] else 'ok'} / shadow {'DEFECT' if w['shadow_defect'] else 'ok'}"
        )
        lines.append(
            f"  {w['image']}  {verdicts}  stable only {w['stable_only']}, shadow only {w['shadow_only']}"
            f"  [{w['result_id'][:8]}]"
        )
    return "\n".join(lines)
