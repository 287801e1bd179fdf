"""Matching detections to labelled boxes, and the figures a plant reads: P, R, F1, mAP@0.5.

One implementation for every place the project scores a detector: the model card
(offline, through the server's decode), the cross-validation, and the tool that
scores a running endpoint. Pure numpy, so the endpoint tool runs on a plant PC
without onnxruntime or PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

MATCH_IOU = 0.5
# A missed scratch at least this much inside a reported box is marked on the photo, only not
# boxed as labelled (one box around two scratches, a box cut short): what an inspector sees.
COVERED = 0.5

# One detection: (confidence, [x1, y1, x2, y2] in original-image pixels).
Detection = tuple[float, np.ndarray]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box (x1,y1,x2,y2) against many."""
    xx1, yy1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    xx2, yy2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-9)


def pairs(detections: Sequence[Detection], truth: np.ndarray) -> list[tuple[int, int | None]]:
    """(index in ``detections``, index of the box it matched in ``truth`` or None), best confidence first.

    Greedy matching at IoU 0.5: each box of ``truth`` is matched at most once. The indices are
    what a caller needs to say *which* detections matched (the shadow comparison pairs one model's
    detections with another's); ``match`` keeps only whether each did.
    """
    used = np.zeros(len(truth), bool)
    out: list[tuple[int, int | None]] = []
    for i in sorted(range(len(detections)), key=lambda k: -detections[k][0]):
        hit: int | None = None
        if len(truth):
            overlaps = iou(np.asarray(detections[i][1], float), truth)
            overlaps[used] = 0
            j = int(overlaps.argmax())
            if overlaps[j] >= MATCH_IOU:
                used[j] = True
                hit = j
        out.append((i, hit))
    return out


def match(detections: Sequence[Detection], truth: np.ndarray) -> list[tuple[float, bool]]:
    """(confidence, is_true_positive) with greedy matching at IoU 0.5, best confidence first.

    Each labelled box is matched at most once: a second detection of one scratch is a false positive.
    """
    return [(float(detections[i][0]), j is not None) for i, j in pairs(detections, truth)]


def average_precision(matches: Sequence[tuple[float, bool]], n_truth: int) -> float:
    """Area under the all-point interpolated precision-recall curve."""
    if n_truth == 0:
        return 0.0
    matches = sorted(matches, key=lambda m: -m[0])
    tp = np.cumsum([m[1] for m in matches])
    fp = np.cumsum([not m[1] for m in matches])
    recall = np.concatenate([[0.0], tp / n_truth, [1.0]])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.where(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


@dataclass(frozen=True)
class Figures:
    """What a detector scored on a set of photos, at one confidence threshold."""

    threshold: float
    images: int
    labelled: int  # labelled boxes
    true_positives: int
    false_positives: int
    precision: float
    recall: float
    f1: float
    map50: float  # over every detection given (not only those above `threshold`)
    # Per photo, at `threshold`: what a line that rejects a tag on any report does.
    photos_with_scratches: int = 0
    flagged: int = 0  # of those, photos with at least one report
    clean_photos: int = 0
    clean_flagged: int = 0  # clean photos with a (false) report
    missed_covered: int = 0  # missed scratches at least COVERED inside a reported box

    @property
    def missed(self) -> int:
        return self.labelled - self.true_positives


def prf(tp: int, fp: int, n_truth: int) -> tuple[float, float, float]:
    """Precision, recall, F1. No detection at all is precision 1 (nothing claimed wrongly)."""
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / n_truth if n_truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def score(
    predictions: Sequence[Sequence[Detection]], truths: Sequence[np.ndarray], threshold: float, digits: int = 4
) -> Figures:
    """Figures over photos: ``predictions[i]`` are the detections on the photo labelled ``truths[i]``.

    mAP@0.5 is over every detection given; P/R/F1 over those with confidence >= ``threshold``.
    Matching is per photo, so a detection never matches a scratch on another photo.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} photos")
    everything: list[tuple[float, bool]] = []
    tp = fp = n_truth = 0
    photos = {"photos_with_scratches": 0, "flagged": 0, "clean_photos": 0, "clean_flagged": 0, "missed_covered": 0}
    for found, truth in zip(predictions, truths, strict=True):
        n_truth += len(truth)
        everything += match(found, truth)
        reported = [d for d in found if d[0] >= threshold]
        hits = {j for _, j in pairs(reported, truth) if j is not None}
        tp += len(hits)
        fp += len(reported) - len(hits)
        kind = "photos_with_scratches" if len(truth) else "clean_photos"
        photos[kind] += 1
        photos["flagged" if len(truth) else "clean_flagged"] += bool(reported)
        missed = [box for j, box in enumerate(truth) if j not in hits]
        photos["missed_covered"] += sum(covered(box, reported) for box in missed)
    precision, recall, f1 = prf(tp, fp, n_truth)
    return Figures(
        threshold=threshold,
        images=len(truths),
        labelled=n_truth,
        true_positives=tp,
        false_positives=fp,
        precision=round(precision, digits),
        recall=round(recall, digits),
        f1=round(f1, digits),
        map50=round(average_precision(everything, n_truth), digits),
        **photos,
    )


def covered(box: np.ndarray, reported: Sequence[Detection]) -> bool:
    """At least COVERED of ``box``'s area lies inside one reported box."""
    if not reported:
        return False
    boxes = np.array([d[1] for d in reported], float).reshape(-1, 4)
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-9)
    return bool((w * h / area).max() >= COVERED)


def recall_by_length(
    predictions: Sequence[Sequence[Detection]], truths: Sequence[np.ndarray], threshold: float, edges=(60, 120)
) -> list[dict]:
    """Recall at ``threshold`` by the labelled scratch's longer side (photo pixels), bands split at ``edges``."""
    bounds = [0, *edges, None]
    counts = [[0, 0] for _ in range(len(bounds) - 1)]  # labelled, found
    for found, truth in zip(predictions, truths, strict=True):
        hits = {j for _, j in pairs([d for d in found if d[0] >= threshold], truth) if j is not None}
        for j, box in enumerate(truth):
            length = max(box[2] - box[0], box[3] - box[1])
            band = sum(length >= e for e in edges)
            counts[band][0] += 1
            counts[band][1] += j in hits
    return [
        {
            "longer_side_px": f"{lo}-{hi}" if hi else f">={lo}",
            "labelled": n,
            "found": k,
            "recall": round(k / n, 4) if n else None,
        }
        for (lo, hi), (n, k) in zip(pairwise(bounds), counts, strict=True)
    ]


def f1_optimal_threshold(
    predictions: Sequence[Sequence[Detection]], truths: Sequence[np.ndarray], floor: float = 0.05
) -> float:
    """The confidence threshold (>= ``floor``) with the highest F1 over these photos.

    Matching at a threshold t keeps only detections >= t; greedy matching by confidence means a
    detection's match does not depend on lower-confidence ones, so one matching at the lowest
    threshold gives every threshold's TP/FP by a cumulative sum. Ties go to the lower threshold
    (more recall for the same F1).
    """
    matches = [m for found, truth in zip(predictions, truths, strict=True) for m in match(found, truth)]
    n_truth = sum(len(t) for t in truths)
    matches = sorted((m for m in matches if m[0] >= floor), key=lambda m: -m[0])
    if not matches or n_truth == 0:
        return floor
    conf = np.array([m[0] for m in matches])
    tp = np.cumsum([m[1] for m in matches])
    fp = np.cumsum([not m[1] for m in matches])
    f1 = 2 * tp / (tp + fp + n_truth)  # = 2PR / (P + R)
    # Only the last detection of a run of equal confidences is a real cut-off.
    last_of_run = np.append(conf[1:] != conf[:-1], True)
    best = max(np.flatnonzero(last_of_run), key=lambda i: (round(float(f1[i]), 9), -conf[i]))
    return float(conf[best])
