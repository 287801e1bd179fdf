"""Data -> trained, exported, quantised, evaluated scratch detector with its model card.

    python -m models.training --data ../shared/datasets/metal-tags --out models/scratch-detector

Reproducible: a fixed seed for the split and for training. Not run in CI
(it needs PyTorch and ultralytics: see requirements/training.txt); `tox -e
training` runs a one-epoch smoke test of this very pipeline.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import math
import os
import platform
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import yaml

from .dataset import load_coco, split_by_photograph, write_yolo_dataset
from .evaluate import evaluate
from .quantize import quantize
from .train import TrainSettings, export_onnx, train

SERVING_THRESHOLDS = {"confidence": 0.25, "iou": 0.45}
INT8_RECIPE = (
    "static QDQ, U8S8, per-channel weights, MinMax calibration on 100 training photos; "
    "detection head decoding kept in float"
)


def input_hw(imgsz: int, width: int, height: int) -> tuple[int, int]:
    """A stride-32 input with the photos' aspect ratio: less letterbox padding, less compute."""
    if width >= height:
        return math.ceil(imgsz * height / width / 32) * 32, imgsz
    return imgsz, math.ceil(imgsz * width / height / 32) * 32


def reproducing_command(argv: list[str]) -> str:
    """The command that reproduces these files: --weights (reuse a finished run of the same
    settings) and --work (scratch space) do not change the result, so they are left out."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--weights", "--work"):
            skip = True
            continue
        if arg.startswith(("--weights=", "--work=")):
            continue
        kept.append(arg)
    return "python -m models.training " + " ".join(shlex.quote(a) for a in kept)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.training", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="COCO data set: annotations.json + images/")
    p.add_argument("--out", type=Path, required=True, help="where the ONNX files and model.yaml go")
    p.add_argument("--work", type=Path, default=Path("runs/training"), help="scratch space")
    p.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    p.add_argument("--imgsz", type=int, default=TrainSettings.imgsz)
    p.add_argument("--seed", type=int, default=TrainSettings.seed)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--limit", type=int, default=0, help="use only this many photos (smoke test)")
    p.add_argument("--weights", type=Path, help="skip training: export and evaluate these weights")
    args = p.parse_args(argv)

    samples, names = load_coco(args.data)
    if args.limit:
        samples = samples[: args.limit]
    train_set, val_set = split_by_photograph(samples, args.val_fraction, args.seed)
    settings = TrainSettings(epochs=args.epochs, imgsz=args.imgsz, seed=args.seed)
    data_yaml = write_yolo_dataset(train_set, val_set, names, args.work / "dataset")
    weights = args.weights or train(data_yaml, args.work, settings)

    hw = input_hw(args.imgsz, samples[0].width, samples[0].height)
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(weights, args.out / "model-fp32.onnx", hw)
    int8 = quantize(fp32, args.out / "model-int8.onnx", [s.path for s in train_set[:100]], args.work / "quant")

    variants = []
    for name, path, how in (
        ("fp32", fp32, "none"),
        ("int8", int8, INT8_RECIPE),
    ):
        scores = evaluate(path, val_set)
        print(f"{name}: {scores}", file=sys.stderr)
        variants.append(
            {
                "name": name,
                "file": path.name,
                "sha256": sha256(path),
                "bytes": path.stat().st_size,
                "quantization": how,
                "validation": asdict(scores),
            }
        )
    command = reproducing_command(argv if argv is not None else sys.argv[1:])
    card = {
        "name": "scratch-detector",
        "task": "object detection: scratches on engraved metal tags",
        "format": "YOLOv8 ONNX: input images (1,3,H,W) RGB 0..1 letterboxed with 114; output (1, 4+nc, N)",
        "input": {"height": hw[0], "width": hw[1]},
        "classes": names,
        "serving_thresholds": SERVING_THRESHOLDS,
        "validation_figures": (
            f"the {len(val_set)} images ({sum(len(s.boxes) for s in val_set)} scratches) of the validation split "
            "that the checkpoint (ultralytics' best.pt) was chosen on: optimistic for photographs the model has "
            "never seen; python -m models.training.crossval gives an honest estimate of the recipe"
        ),
        "variants": variants,
        "training": {
            "command": command,
            **asdict(settings),
            "pretrained": False,
            "checkpoint": "ultralytics' best.pt: highest fitness (0.9 mAP50-95 + 0.1 mAP50) on the validation split",
            "data": {
                "source": "metal-tags (COCO, MIT-0), split by photograph",
                "train_images": len(train_set),
                "val_images": len(val_set),
                "val_boxes": sum(len(s.boxes) for s in val_set),
            },
        },
        "evaluation": {
            "map50": "all-point interpolated AP at IoU 0.5, confidence >= 0.001, NMS IoU 0.6",
            "precision_recall": "at the serving thresholds, matches at IoU 0.5",
            "latency": "median bare session.run on a prepared tensor, threads as stated",
            "machine": f"{os.cpu_count()} x {cpu_model()}, Python {platform.python_version()}",
            "date": datetime.date.today().isoformat(),
        },
    }
    (args.out / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False, width=100))
    print(f"wrote {args.out / 'model.yaml'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
