"""The JSON message published for each photo, and the choices made from the model's answer.

Pure functions (no I/O besides hashing bytes given to them), so the message's shape is
tested alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone

SCHEMA = "defect-result/1"


def result_id(image_name: str, data: bytes) -> str:
    """Same photo (name and bytes) -> same id, across retries and restarts, so the line can de-duplicate.

    The name is part of it because two parts can give byte-identical photos (an empty belt, a
    black frame); the bytes are because cameras reuse names when their counter wraps.
    """
    content = hashlib.sha256(data).hexdigest()
    return hashlib.sha256(f"{image_name}\0{content}".encode()).hexdigest()[:32]


# The scratch detector's serving threshold, chosen by cross-validation (models/scratch-detector/model.yaml):
# a photo is a defect when the model reports anything, and a report below 0.5 is worth a person's look.
DEFECT_THRESHOLD = 0.18
UNCERTAIN_BAND = f"{DEFECT_THRESHOLD:g}-0.5"


def iso(ts: float) -> str:
    """UTC, ISO 8601 with milliseconds and a Z: what every MES parses."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Band:
    """Confidences a person should look at: [low, high). ``high`` is normally the defect threshold."""

    low: float
    high: float

    @classmethod
    def parse(cls, text: str) -> Band:
        try:
            low, high = (float(x) for x in text.split("-", 1))
        except ValueError:
            raise ValueError(f"--uncertain {text!r}: expected LOW-HIGH, e.g. 0.25-0.5") from None
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"--uncertain {text!r}: need 0 <= LOW < HIGH <= 1")
        return cls(low, high)


def best_confidence(detections: list[dict]) -> float | None:
    return max((float(d["confidence"]) for d in detections), default=None)


def is_defect(detections: list[dict], threshold: float) -> bool:
    return any(float(d["confidence"]) >= threshold for d in detections)


def needs_relabel(detections: list[dict], band: Band) -> str | None:
    """Why a photo is a hard example worth labelling (None when it is not)."""
    best = best_confidence(detections)
    if best is None:
        return "nothing found"
    if band.low <= best < band.high:
        return f"best detection {best:.2f} in the uncertain band {band.low:g}-{band.high:g}"
    return None


def inspected(*, rid: str, image: str, captured_at: float, inspected_at: float, answer: dict, threshold: float) -> dict:
    """The message for a photo the model answered (``answer`` is the model's ``jsonData``)."""
    detections = answer["detections"]
    model = answer.get("model") or {}
    return {
        "schema": SCHEMA,
        "result_id": rid,
        "status": "inspected",
        "image": image,
        "captured_at": iso(captured_at),
        "inspected_at": iso(inspected_at),
        "model": {"name": model.get("name"), "version": model.get("version"), "sha256": model.get("sha256")},
        "detections": detections,
        "defect": is_defect(detections, threshold),
        "defect_threshold": threshold,
        "image_size": answer.get("image"),
        "inference_ms": answer.get("inference_ms"),
    }


def failed(*, rid: str, image: str, captured_at: float, inspected_at: float, model_name: str, reason: str) -> dict:
    """The message for a photo the model refused: the line must know this part was NOT inspected."""
    return {
        "schema": SCHEMA,
        "result_id": rid,
        "status": "failed",
        "image": image,
        "captured_at": iso(captured_at),
        "inspected_at": iso(inspected_at),
        "model": {"name": model_name, "version": None, "sha256": None},
        "detections": None,
        "defect": None,
        "error": reason,
    }
