"""Train a YOLOv8 detector from its yaml (no pretrained weights) and export it to ONNX.

ultralytics is imported lazily: the rest of the pipeline (quantisation,
evaluation, model card) runs without torch.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cli_values import non_negative_int, positive_int  # scripts/, on the path via models/training/__init__


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained weights; recorded in the model card."""

    arch: str = "yolov8n.yaml"
    epochs: int = 130
    imgsz: int = 384
    batch: int = 16
    seed: int = 0
    workers: int = 2
    patience: int = 0  # 0: never stop early, so a run is reproducible end to end


def image_size(text: str) -> int:
    """--imgsz: YOLOv8's stride is 32, and the exported input is a multiple of it."""
    value = positive_int(text)
    if value % 32 or value > 4096:
        raise argparse.ArgumentTypeError(f"{text!r}: a multiple of 32, at most 4096 (e.g. 256, 384, 640)")
    return value


def arch_yaml(text: str) -> str:
    """--arch: an ultralytics model yaml such as yolov8n.yaml (trained from scratch, no weights)."""
    if not text.endswith((".yaml", ".yml")) or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text[:60]!r}: a model yaml such as yolov8n.yaml")
    return text


RECIPE_TYPES = {
    "arch": arch_yaml,
    "epochs": positive_int,
    "imgsz": image_size,
    "batch": positive_int,
    "seed": non_negative_int,
    "workers": non_negative_int,
}
RECIPE_OPTIONS = tuple(RECIPE_TYPES)


def add_recipe_options(parser: argparse.ArgumentParser) -> None:
    """The recipe's options, defined once: cross-validation and the shipped training take the same ones."""
    defaults = TrainSettings()
    for name, kind in RECIPE_TYPES.items():
        parser.add_argument(f"--{name}", type=kind, default=getattr(defaults, name))


def folder_problem(path: Path, option: str) -> None:
    """A folder the command writes into: refused (DatasetError, exit 2) when it is a file."""
    from .dataset import DatasetError

    if path.exists() and not path.is_dir():
        raise DatasetError(f"{option} {path}: is a file, not a folder")


def recipe_from(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(**{name: getattr(args, name) for name in RECIPE_OPTIONS})


def train(
    data_yaml: Path,
    work_dir: Path,
    settings: TrainSettings,
    checkpoint: str = "best",
    validate: bool = True,
    resume: bool = False,
) -> Path:
    """Train from scratch and return the path of the chosen checkpoint.

    ``checkpoint="last"`` with ``validate=False`` is cross-validation's form: a fixed epoch
    count and the last weights, so no validation figure picks anything (ultralytics then
    validates once, after the last epoch, for its log only). With ``resume``, a run
    interrupted part-way (a last.pt and no ``finished`` mark) continues from its last epoch.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    weights = work_dir / "run" / "weights"
    if resume and (weights / "last.pt").exists() and not (weights / "finished").exists():
        YOLO(str(weights / "last.pt")).train(resume=True)
        (weights / "finished").touch()
        return weights / f"{checkpoint}.pt"
    model = YOLO(settings.arch)
    model.train(
        data=str(data_yaml),
        epochs=settings.epochs,
        imgsz=settings.imgsz,
        batch=settings.batch,
        seed=settings.seed,
        deterministic=True,
        workers=settings.workers,
        patience=settings.patience or settings.epochs,
        pretrained=False,
        amp=False,
        plots=False,
        device="cpu",
        project=str(work_dir.resolve()),
        name="run",
        exist_ok=True,
        cache="ram",
        val=validate,
        verbose=False,
    )
    (weights / "finished").touch()
    return weights / f"{checkpoint}.pt"


def input_hw(imgsz: int, width: int, height: int) -> tuple[int, int]:
    """A stride-32 input with the photos' aspect ratio: less letterbox padding, less compute."""
    if width >= height:
        return math.ceil(imgsz * height / width / 32) * 32, imgsz
    return imgsz, math.ceil(imgsz * width / height / 32) * 32


def export_onnx(weights: Path, out_path: Path, input_hw: tuple[int, int]) -> Path:
    """Export to ONNX in the YOLOv8 output layout at a fixed (H, W).

    A rectangular input that fits the 3:2 photos wastes less compute on
    letterbox padding than a square one; the server reads H, W from the model.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    exported = YOLO(str(weights)).export(format="onnx", imgsz=list(input_hw), opset=17, simplify=True, dynamic=False)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exported, out_path)
    return out_path
