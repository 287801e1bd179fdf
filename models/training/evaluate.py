"""Score a scratch detector on COCO-labelled photos: a running endpoint, or an ONNX file offline.

    python -m models.training.evaluate --url http://<node>:<port>/model/<name>/api/v0.1/predictions --data DIR
    python -m models.training.evaluate --model models/scratch-detector/model-int8.onnx --data DIR

DIR holds ``annotations.json`` (COCO, one category) and ``images/``. Offline, the photo is
decoded, letterboxed, run and decoded by the server's own code (defect_server), so the
figures are what a client of the served model gets. The endpoint form needs only numpy and
requests (requirements/evaluate.txt): a plant PC has no onnxruntime or PyTorch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from cli_values import positive_number, probability  # scripts/, on the path via models/training/__init__

from .dataset import DatasetError, Sample, load_coco
from .scoring import Detection, Figures, score

if TYPE_CHECKING:
    from defect_server.detector import Detector, Thresholds

SERVER_SRC = Path(__file__).resolve().parents[1] / "server"
SERVED = (0.18, 0.45)  # the bundle's confidence-threshold (cross-validated) and the charm's iou-threshold
MAP_THRESHOLDS = (0.001, 0.6)  # as detection benchmarks score mAP: (almost) every detection


def _server():
    """The server's modules (onnxruntime, Pillow), imported only where a model runs here."""
    if str(SERVER_SRC) not in sys.path:
        sys.path.insert(0, str(SERVER_SRC))
    from defect_server import detector, image_input

    return detector, image_input


@dataclass(frozen=True)
class Scores:
    """The model card's figures for one variant."""

    map50: float
    precision: float  # at the serving thresholds
    recall: float
    latency_ms_p50: float  # bare session.run on a prepared tensor, this machine
    threads: int


def truth_boxes(sample: Sample) -> np.ndarray:
    return np.array([[b.left, b.top, b.left + b.width, b.top + b.height] for b in sample.boxes]).reshape(-1, 4)


def load_detector(model: Path, threads: int = 2, flip: bool = False) -> Detector:
    detector, _ = _server()
    return detector.Detector(model.read_bytes(), threads=threads, flip=flip)


class AveragedDetector:
    """Several detectors of one architecture and input size as one: their raw outputs averaged
    anchor by anchor (boxes and class scores), then the server's one decode and NMS.

    An ensemble for evaluation (``rescore --average-with``); the server runs one model. YOLOv8's
    output has one column per anchor of a fixed grid, so the same column of two models is the
    same place in the photo, and averaging them is the plain output average of an ensemble.
    """

    def __init__(self, members: list[Detector]) -> None:
        sizes = {(m.input_hw, len(m.names)) for m in members}
        if len(sizes) != 1:
            raise DatasetError(f"models to average differ in input size or classes: {sorted(sizes)}")
        self.members = members
        self.input_hw = members[0].input_hw
        self.names = members[0].names

    def run(self, tensor: np.ndarray) -> np.ndarray:
        return np.mean([m.run(tensor) for m in self.members], axis=0)

    def detect(self, image, thresholds: Thresholds) -> tuple[list[Detection], float]:
        detector, _ = _server()
        return detector.Detector.detect(self, image, thresholds)  # the server's letterbox and decode, with run() above


def detect(detector: Detector, sample: Sample, thresholds: Thresholds) -> list[Detection]:
    """Detections on one photo, decoded from its file exactly as the server decodes a request."""
    _, image_input = _server()
    image = image_input.decode_image_bytes(sample.path.read_bytes(), image_input.Limits(), detector.input_hw)
    found, _ = detector.detect(image, thresholds)
    return [(d.confidence, np.array([d.x, d.y, d.x + d.width, d.y + d.height])) for d in found]


def offline_predictions(
    model: Path | Detector, samples: list[Sample], confidence: float, iou: float, threads: int = 2
) -> list[list[Detection]]:
    """Every photo's detections by an ONNX model through the server's code, at these thresholds."""
    detector_mod, _ = _server()
    det = load_detector(model, threads) if isinstance(model, Path) else model
    thresholds = detector_mod.Thresholds(confidence, iou)
    return [detect(det, s, thresholds) for s in samples]


def evaluate(model: Path, samples: list[Sample], serving: tuple[float, float] = SERVED, threads: int = 2) -> Scores:
    """The model card's figures: mAP@0.5 over all detections, P/R at the serving thresholds."""
    det = load_detector(model, threads)
    truths = [truth_boxes(s) for s in samples]
    everything = score(offline_predictions(det, samples, *MAP_THRESHOLDS), truths, MAP_THRESHOLDS[0])
    served = score(offline_predictions(det, samples, *serving), truths, serving[0])
    return Scores(
        map50=everything.map50,
        precision=served.precision,
        recall=served.recall,
        latency_ms_p50=round(bare_latency_ms(det), 2),
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


# --- the command line ----------------------------------------------------------------


def endpoint_predictions(url: str, samples: list[Sample], label: str, timeout_s: float) -> tuple[list, set]:
    """Every photo's detections as the endpoint returns them, and the (name, sha256) that answered."""
    from .endpoint import Endpoint

    endpoint = Endpoint(url, timeout_s=timeout_s)
    found = []
    for i, sample in enumerate(samples, 1):
        found.append(endpoint.detect(sample.path, label))
        if sys.stderr.isatty():
            print(f"\r{i}/{len(samples)} photos", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if endpoint.other_labels:
        print(
            f"warning: the endpoint also returned labels {sorted(endpoint.other_labels)}, not scored: "
            f"the photos' category is {label!r}",
            file=sys.stderr,
        )
    return found, endpoint.served


def report(figures: Figures, source: str, served: set, note: str) -> str:
    at = (
        f"at confidence >= {figures.threshold:g}:"
        if figures.threshold > 0
        else "at the endpoint's own confidence threshold (every detection it returned):"
    )
    lines = [
        f"{source}",
        f"{figures.images} photos, {figures.labelled} labelled boxes",
    ]
    for name, sha in sorted(served):
        lines.append(f"served by model {name!r} sha256 {sha}")
    lines += [
        "",
        at,
        f"  precision {figures.precision:.3f}   recall {figures.recall:.3f}   F1 {figures.f1:.3f}",
        f"  found {figures.true_positives}, missed {figures.missed}, false alarms {figures.false_positives}",
        f"  per photo: {figures.flagged} of {figures.photos_with_scratches} with a labelled scratch flagged, "
        f"{figures.clean_flagged} of {figures.clean_photos} clean ones flagged",
        f"  {figures.missed_covered} of the {figures.missed} missed scratches lie at least half inside a reported box "
        "(marked, not boxed as labelled)",
        f"mAP@0.5 {figures.map50:.3f}  ({note})",
    ]
    return "\n".join(lines)


def _endpoint_url(text: str) -> str:
    from .endpoint import endpoint_url  # requests: only where an endpoint is scored

    return endpoint_url(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.training.evaluate",
        description="Precision / recall / F1 / mAP@0.5 of a served model (--url) or an ONNX file (--model) "
        "on a folder of COCO-labelled photos.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--url", type=_endpoint_url, help="http://<node>:<port>/model/<name>/api/v0.1/predictions of a running model"
    )
    source.add_argument("--model", type=Path, help="an ONNX file, run here through the server's code (onnxruntime)")
    p.add_argument("--data", type=Path, required=True, help="folder with annotations.json (COCO) and images/")
    p.add_argument(
        "--min-confidence",
        type=probability,
        help="P/R/F1 at this confidence; with --url only at or above the endpoint's own threshold "
        f"(the endpoint returns nothing below it). Default: everything returned (--url), {SERVED[0]:g} (--model: "
        "the served threshold)",
    )
    p.add_argument("--iou", type=probability, default=SERVED[1], help="NMS IoU with --model (default: the served 0.45)")
    p.add_argument("--timeout", type=positive_number, default=30.0, help="seconds per request with --url")
    p.add_argument("--json", type=Path, help="also write the figures here (to compare before and after a roll)")
    args = p.parse_args(argv)

    try:
        samples, names = load_coco(args.data)
        truths = [truth_boxes(s) for s in samples]
        if args.url:
            from .endpoint import EndpointError

            try:
                found, served = endpoint_predictions(args.url, samples, names[0], args.timeout)
            except EndpointError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            threshold = args.min_confidence or 0.0
            figures = score(found, truths, threshold)
            source = f"endpoint {args.url}"
            note = (
                "over the detections the endpoint returned: it applies its own confidence threshold, so this "
                "is lower than an offline mAP over all detections (--model scores those)"
            )
        else:
            if not args.model.is_file():
                raise DatasetError(f"--model {args.model}: no such file")
            threshold = SERVED[0] if args.min_confidence is None else args.min_confidence
            det = load_detector(args.model)
            everything = score(offline_predictions(det, samples, *MAP_THRESHOLDS), truths, MAP_THRESHOLDS[0])
            figures = score(offline_predictions(det, samples, threshold, args.iou), truths, threshold)
            figures = Figures(**{**asdict(figures), "map50": everything.map50})
            served, source = set(), f"model {args.model} (offline, the server's decode, NMS IoU {args.iou:g})"
            note = f"over all detections, confidence >= {MAP_THRESHOLDS[0]}, NMS IoU {MAP_THRESHOLDS[1]}"
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(figures, source, served, note))
    if args.json:
        record = {"source": source, "data": str(args.data), **asdict(figures), "map50_over": note}
        record["served_by"] = [{"name": n, "sha256": s} for n, s in sorted(served)]
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if len(served) > 1:
        print("warning: more than one model answered during the run (a roll?): the figures mix them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
