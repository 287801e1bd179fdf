"""Train a YOLOv8 detector from its yaml (no pretrained weights) and export it to ONNX.

ultralytics is imported lazily: the rest of the pipeline (quantisation,
evaluation, model card) runs without torch.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


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


def train(data_yaml: Path, work_dir: Path, settings: TrainSettings) -> Path:
    """Train from scratch and return the path of the best checkpoint."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

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
        verbose=False,
    )
    return work_dir / "run" / "weights" / "best.pt"


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
