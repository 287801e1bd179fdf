"""Data -> trained, exported, quantised scratch detector with its model card.

    python -m models.training --data ../shared/datasets/metal-tags --out models/scratch-detector \\
        --cv models/training/results/cv-yolov8n-e130-384-k3.json

The shipped model is trained on *every* photo, for a fixed number of epochs, keeping the
last weights: nothing about it is chosen on a validation split, so no figure measured on
its own training photos is worth printing. Its figures are those of the same recipe
cross-validated by photograph (``python -m models.training.crossval``), read from ``--cv``
after checking that the summary is of exactly this recipe and these photos. The serving
confidence threshold is the one that cross-validation reported at.

Reproducible: fixed seeds, deterministic training. Not run in CI (it needs PyTorch and
ultralytics: see requirements/training.txt); `tox -e training` runs a one-epoch smoke test.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path

import yaml
from cli_values import non_negative_int  # scripts/, on the path via models/training/__init__

from .crossval import SERVED_IOU, read_summary, recipe_key, started_under_another_recipe
from .dataset import DatasetError, load_coco, write_yolo_dataset, yolo_dataset_differs
from .evaluate import SERVED, bare_latency_ms, load_detector
from .quantize import RECIPE as INT8_RECIPE
from .quantize import quantize
from .train import (
    TrainSettings,
    add_recipe_options,
    export_onnx,
    finished_weights,
    first_cycle_differs,
    folder_problem,
    input_hw,
    recipe_from,
    train,
)

DEFAULT_CONFIDENCE = SERVED[0]  # without a cross-validation to choose one: what the site serves now


class CardError(ValueError):
    """A --cv summary that does not describe the model being trained."""


REUSE_OPTIONS = ("--weights", "--fp32", "--work", "--first-cycle")


def reproducing_command(argv: list[str]) -> str:
    """The command that reproduces these files: --weights, --fp32 and --first-cycle (reuse a
    finished run, export or first cycle of the same settings) and --work (scratch space) do not
    change the result, so they are left out."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in REUSE_OPTIONS:
            skip = True
            continue
        if arg.startswith(tuple(f"{o}=" for o in REUSE_OPTIONS)):
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


def read_cross_validation(path: Path, settings: TrainSettings, samples) -> dict:
    """The --cv summary, refused unless it cross-validated exactly this recipe on these photos."""
    cv = read_summary(path)
    if cv.get("settings") != settings.recorded():
        raise CardError(f"--cv {path}: cross-validated {cv.get('settings')}, not this recipe {settings.recorded()}")
    if cv["key"] != recipe_key(settings.recorded(), cv["folds"], cv["fold_seed"], samples):
        raise CardError(f"--cv {path}: cross-validated other photos than --data")
    return cv


def cross_validated(cv: dict, variant: str) -> dict:
    """One variant's cross-validated figures at the serving threshold: mean and spread over folds."""
    v = cv["variants"][variant]
    at = v[f"at_{cv['threshold']:g}"]
    nested = v["at_threshold_chosen_without_the_fold"]
    return {
        "map50": v["map50"],
        **{k: at[k] for k in ("precision", "recall", "f1")},
        "f1_threshold_chosen_without_the_fold": nested["f1"],
    }


def card_cross_validation(cv: dict, cv_path: Path) -> dict:
    return {
        "what": (
            f"{cv['folds']}-fold cross-validation by photograph of this exact recipe: each fold's model is trained "
            "on the other folds' photos for the same fixed epochs, its last weights exported and quantised as here, "
            "and scored on its own held-out photos through the server's decode; mean, sample sd, min and max "
            "over folds"
        ),
        "command": cv["command"],
        "summary": str(cv_path),
        "folds": cv["folds"],
        "fold_seed": cv["fold_seed"],
        "threshold": cv["threshold"],
        "threshold_rule": cv["threshold_rule"],
        "train_seconds_per_fold": cv["train_seconds"],
    }


def reused_first_cycle_problem(args: argparse.Namespace, settings: TrainSettings, samples) -> None:
    """--first-cycle: refused (DatasetError) unless it is this recipe's first cycle on these photos."""
    option = f"--first-cycle {args.first_cycle}"
    if not settings.then_epochs:
        raise DatasetError(f"{option}: only with --then-epochs (it is where the restart starts from)")
    if args.weights is not None or args.fp32 is not None:
        raise DatasetError(f"{option}: not with --weights or --fp32 (they skip training)")
    differs = first_cycle_differs(args.first_cycle, settings)
    if differs is None:
        photos = yolo_dataset_differs(args.first_cycle.parent / "dataset", samples)
        differs = photos and f"{args.first_cycle}: trained on other photos ({photos})"
    if differs:
        raise DatasetError(f"{option}: not this recipe's first cycle: {differs}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.training", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="COCO data set: annotations.json + images/")
    p.add_argument("--out", type=Path, required=True, help="where the ONNX files and model.yaml go")
    p.add_argument("--cv", type=Path, help="the crossval summary (cv.json) of this recipe: the card's figures")
    p.add_argument("--work", type=Path, default=Path("runs/training"), help="scratch space")
    add_recipe_options(p)
    p.add_argument("--limit", type=non_negative_int, default=0, help="use only this many photos (smoke test)")
    p.add_argument("--weights", type=Path, help="skip training: export these weights (a finished run of this recipe)")
    p.add_argument(
        "--fp32",
        type=Path,
        help="skip training and export: quantise this fp32 ONNX export of this recipe (e.g. the shipped one, "
        "to apply a new int8 recipe) and write the card",
    )
    p.add_argument(
        "--first-cycle",
        type=Path,
        help="with --then-epochs: a finished first cycle of this recipe (the run/ folder in the --work of an "
        "earlier training on these photos), which the restart starts from instead of training it again",
    )
    args = p.parse_args(argv)

    try:
        settings = recipe_from(args)
        folder_problem(args.out, "--out")
        folder_problem(args.work, "--work")
        for option, given in (("--weights", args.weights), ("--fp32", args.fp32)):
            if given is not None and not given.is_file():
                raise DatasetError(f"{option} {given}: no such file")
        if args.weights is not None and args.fp32 is not None:
            raise DatasetError("--weights and --fp32: give one (--fp32 is already exported from weights)")
        samples, names = load_coco(args.data)
        if args.limit:
            samples = samples[: args.limit]
        cv = read_cross_validation(args.cv, settings, samples) if args.cv else None
        if args.first_cycle is not None:
            reused_first_cycle_problem(args, settings, samples)
    except (DatasetError, CardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    hw = input_hw(settings.export_imgsz, samples[0].width, samples[0].height)
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = args.out / "model-fp32.onnx"
    if args.fp32 is not None:
        if args.fp32.resolve() != fp32.resolve():
            shutil.copyfile(args.fp32, fp32)
    else:
        mixed = started_under_another_recipe(args.work, recipe_key(settings.recorded(), 0, 0, samples))
        if mixed:
            print(f"error: --work {mixed}", file=sys.stderr)
            return 2
        # ultralytics validates once after the last epoch (its log only): a few training photos.
        data_yaml = write_yolo_dataset(samples, samples[:8], names, args.work / "dataset")
        first = finished_weights(args.first_cycle) if args.first_cycle else None
        weights = args.weights or train(
            data_yaml, args.work, settings, checkpoint="last", validate=False, resume=True, first_cycle=first
        )
        export_onnx(weights, fp32, hw)
    int8 = quantize(fp32, args.out / "model-int8.onnx", [s.path for s in samples], args.work / "quant")

    variants = []
    for name, path, how in (("fp32", fp32, "none"), ("int8", int8, INT8_RECIPE)):
        variant = {
            "name": name,
            "file": path.name,
            "sha256": sha256(path),
            "bytes": path.stat().st_size,
            "quantization": how,
            "latency_ms_p50": round(bare_latency_ms(load_detector(path, threads=2)), 2),
            "threads": 2,
        }
        if cv:
            variant["cross_validated"] = cross_validated(cv, name)
        print(f"{name}: {variant}", file=sys.stderr)
        variants.append(variant)
    card = {
        "name": "scratch-detector",
        "task": "object detection: scratches on engraved metal tags",
        "format": "YOLOv8 ONNX: input images (1,3,H,W) RGB 0..1 letterboxed with 114; output (1, 4+nc, N)",
        "input": {"height": hw[0], "width": hw[1]},
        "classes": names,
        "serving_thresholds": {"confidence": cv["threshold"] if cv else DEFAULT_CONFIDENCE, "iou": SERVED_IOU},
        "cross_validation": card_cross_validation(cv, args.cv) if cv else "none: this recipe was not cross-validated",
        "variants": variants,
        "training": {
            "command": reproducing_command(argv if argv is not None else sys.argv[1:]),
            **settings.recorded(),
            "pretrained": False,
            "checkpoint": "the last epoch's weights: a fixed epoch count, nothing chosen on a validation split",
            "data": {
                "source": "metal-tags (COCO, MIT-0), every photo; cross-validated split by photograph",
                "train_images": len(samples),
                "train_boxes": sum(len(s.boxes) for s in samples),
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
