"""int8 recipes side by side: does this CPU compute what each one's arithmetic says?

    python -m models.training.int8_recipes --fp32 models/scratch-detector/model-fp32.onnx \\
        --data ../shared/datasets/metal-tags --json runs/int8-recipes.json

Each recipe quantises the same fp32 model (calibrated as the shipped pipeline does). Each
int8 file is then scored twice on the photos through the server's decode: with this CPU's
int8 kernels (what the server runs), and with onnxruntime's graph optimisations off, where
QDQ runs as dequantise -> float op -> quantise: the exact integer arithmetic, what a CPU with
VNNI computes. A gap between the two is the kernels' saturation, not quantisation error. A
bare ``session.run`` latency per file, measured side by side, gives the speed ratio to fp32.

The photos are the model's own training photos, so the figures measure fidelity to fp32 and
saturation only, never how well a model generalises (that is crossval's job).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import DatasetError, Sample, load_coco
from .evaluate import MAP_THRESHOLDS, SERVED, _server, detect, load_detector, truth_boxes
from .scoring import score


@dataclass(frozen=True)
class Recipe:
    name: str
    weight_type: str  # onnxruntime.quantization.QuantType member
    per_channel: bool
    reduce_range: bool


RECIPES = (
    Recipe("u8s8-per-channel-8bit (the earlier int8)", "QInt8", True, False),
    Recipe("u8s8-per-channel-7bit (shipped)", "QInt8", True, True),
    Recipe("u8u8-per-channel-8bit", "QUInt8", True, False),
    Recipe("u8s8-per-tensor-7bit", "QInt8", False, True),
)


def quantise(fp32: Path, recipe: Recipe, calibration: list[Path], work: Path) -> Path:
    """``fp32`` quantised as quantize.py does, with this recipe's weight type, granularity and range."""
    from onnxruntime.quantization import QuantType

    from .quantize import quantize

    out = work / f"{recipe.name.split()[0]}.onnx"
    kind = getattr(QuantType, recipe.weight_type)
    return quantize(fp32, out, calibration, work / "quant", kind, recipe.per_channel, recipe.reduce_range)


def as_arithmetic(model: Path):
    """The model's detector with graph optimisations off: QDQ computed exactly, no int8 kernels."""
    import onnxruntime as ort

    detector = load_detector(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 2
    detector.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return detector


def figures(detector, samples: list[Sample]) -> dict:
    thresholds = _server()[0].Thresholds
    truths = [truth_boxes(s) for s in samples]
    everything = score([detect(detector, s, thresholds(*MAP_THRESHOLDS)) for s in samples], truths, MAP_THRESHOLDS[0])
    served = score([detect(detector, s, thresholds(*SERVED)) for s in samples], truths, SERVED[0])
    return {"map50": everything.map50, "precision": served.precision, "recall": served.recall, "f1": served.f1}


def class_score_gap(kernels, arithmetic, samples: list[Sample]) -> float:
    """The largest |kernels - arithmetic| class score over every anchor of every photo.

    The direct sign of saturation: P/R/F1 move only where a wrong score crosses the threshold
    on a labelled box, which depends on the model and the photos; the raw scores do not.
    """
    from PIL import Image

    _server()
    from defect_server.yolo import letterbox

    gap = 0.0
    for sample in samples:
        tensor, _ = letterbox(np.asarray(Image.open(sample.path).convert("RGB")), kernels.input_hw)
        feed = {kernels.session.get_inputs()[0].name: tensor}
        (fast,), (exact,) = (d.session.run(None, feed) for d in (kernels, arithmetic))
        gap = max(gap, float(np.abs(fast[0, 4:] - exact[0, 4:]).max()))
    return gap


def side_by_side_ms(paths: dict[str, Path], rounds: int = 60) -> dict[str, float]:
    """Median bare session.run per file, the files taking turns so that noise hits them alike."""
    detectors = {name: load_detector(path) for name, path in paths.items()}
    tensor = np.random.default_rng(0).random((1, 3, *next(iter(detectors.values())).input_hw), dtype=np.float32)
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for _ in range(rounds):
        for name, det in detectors.items():
            feed = {det.session.get_inputs()[0].name: tensor}
            started = time.perf_counter()
            det.session.run(None, feed)
            times[name].append((time.perf_counter() - started) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.training.int8_recipes", description=__doc__.splitlines()[0])
    p.add_argument("--fp32", type=Path, required=True, help="the fp32 ONNX model to quantise")
    p.add_argument("--data", type=Path, required=True, help="COCO data set: annotations.json + images/")
    p.add_argument("--work", type=Path, default=Path("runs/int8-recipes"), help="where the int8 files go")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    try:
        if not args.fp32.is_file():
            raise DatasetError(f"--fp32 {args.fp32}: no such file")
        samples, _ = load_coco(args.data)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    paths = {"fp32": args.fp32}
    results: dict[str, dict] = {"fp32": {"kernels": figures(load_detector(args.fp32), samples)}}
    for recipe in RECIPES:
        path = quantise(args.fp32, recipe, [s.path for s in samples], args.work)
        paths[recipe.name] = path
        kernels, arithmetic = load_detector(path), as_arithmetic(path)
        results[recipe.name] = {
            "kernels": figures(kernels, samples),
            "arithmetic": figures(arithmetic, samples),
            "class_score_gap": round(class_score_gap(kernels, arithmetic, samples), 4),
        }
    ms = side_by_side_ms(paths)
    print(f"{len(samples)} photos (the model's own: fidelity and saturation, not generalisation)")
    print(
        f"{'recipe':44s} {'this CPU: mAP / P / R / F1':>30s} {'arithmetic: mAP / P / R / F1':>30s}"
        "  score gap  p50 ms  vs fp32"
    )
    for name, r in results.items():
        r["latency_ms_p50"] = round(ms[name], 2)
        r["speedup"] = round(ms["fp32"] / ms[name], 2)
        cells = [" / ".join(f"{r[k][f]:.3f}" for f in ("map50", "precision", "recall", "f1")) if k in r else "-"
                 for k in ("kernels", "arithmetic")]  # fmt: skip
        gap = f"{r['class_score_gap']:.3f}" if "class_score_gap" in r else "-"
        print(f"{name:44s} {cells[0]:>30s} {cells[1]:>30s}  {gap:>9s}  {ms[name]:6.1f}  {r['speedup']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"photos": len(samples), "recipes": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
