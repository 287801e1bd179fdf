"""mAP@0.5, precision and recall of an ONNX model, measured through the server's own code path.

Decoding, letterboxing and NMS are the server's (defect_server), so the
model card states what a client of the served model gets.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from defect_server.detector import Detector, Thresholds  # noqa: E402
from defect_server.image_input import DecodedImage  # noqa: E402

from .dataset import Sample  # noqa: E402

MAP_THRESHOLDS = Thresholds(confidence=0.001, iou=0.6)  # as detection benchmarks score mAP


@dataclass(frozen=True)
class Scores:
    map50: float
    precision: float  # at the serving thresholds
    recall: float
    latency_ms_p50: float  # bare session.run on a prepared tensor, this machine
    threads: int


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box (x1,y1,x2,y2) against many."""
    xx1, yy1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    xx2, yy2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-9)


def _match(detections: list[tuple[float, np.ndarray]], truth: np.ndarray) -> list[tuple[float, bool]]:
    """(confidence, is_true_positive) with greedy matching at IoU 0.5, best confidence first."""
    used = np.zeros(len(truth), bool)
    out = []
    for conf, box in sorted(detections, key=lambda d: -d[0]):
        hit = False
        if len(truth):
            overlaps = iou(box, truth)
            overlaps[used] = 0
            j = int(overlaps.argmax())
            if overlaps[j] >= 0.5:
                used[j] = hit = True
        out.append((conf, hit))
    return out


def average_precision(matches: list[tuple[float, bool]], n_truth: int) -> float:
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


def _boxes(sample: Sample) -> np.ndarray:
    return np.array([[b.left, b.top, b.left + b.width, b.top + b.height] for b in sample.boxes]).reshape(-1, 4)


def detect(detector: Detector, sample: Sample, thresholds: Thresholds) -> list[tuple[float, np.ndarray]]:
    pixels = np.asarray(Image.open(sample.path).convert("RGB"))
    image = DecodedImage(pixels, pixels.shape[1], pixels.shape[0])
    found, _ = detector.detect(image, thresholds)
    return [(d.confidence, np.array([d.x, d.y, d.x + d.width, d.y + d.height])) for d in found]


def evaluate(model: Path, samples: list[Sample], serving: Thresholds = Thresholds(), threads: int = 2) -> Scores:
    detector = Detector(model.read_bytes(), threads=threads)
    all_matches, at_threshold = [], []
    n_truth = 0
    for sample in samples:
        truth = _boxes(sample)
        n_truth += len(truth)
        all_matches += _match(detect(detector, sample, MAP_THRESHOLDS), truth)
        at_threshold += _match(detect(detector, sample, serving), truth)
    tp = sum(hit for _, hit in at_threshold)
    precision = tp / len(at_threshold) if at_threshold else 1.0
    return Scores(
        map50=round(average_precision(all_matches, n_truth), 4),
        precision=round(precision, 4),
        recall=round(tp / n_truth if n_truth else 0.0, 4),
        latency_ms_p50=round(bare_latency_ms(detector), 2),
        threads=threads,
    )


def bare_latency_ms(detector: Detector, runs: int = 50) -> float:
    """Median of session.run alone on a prepared tensor, after warm-up."""
    h, w = detector.input_hw
    tensor = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    for _ in range(5):
        detector.run(tensor)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        detector.run(tensor)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
