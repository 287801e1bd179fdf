"""Train a YOLOv8 detector from its yaml (no pretrained weights) and export it to ONNX.

ultralytics is imported lazily: the rest of the pipeline (quantisation,
evaluation, model card) runs without torch.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cli_values import (  # scripts/, on the path via models/training/__init__
    chance,
    learning_rate,
    non_negative_int,
    positive_int,
    zoom_range,
)


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
    # A warm restart: then this many more epochs from the first cycle's last weights, with a
    # fresh warm-up and learning-rate decay (a new ultralytics run). 0: one cycle.
    then_epochs: int = 0
    # The restart's training size (progressive resizing: the first cycle learns at imgsz, the
    # restart at this). 0: imgsz. The model is exported at the last cycle's size.
    then_imgsz: int = 0
    # Chance that a training photo is flipped upside down (ultralytics' flipud; it already
    # flips left-right half the time). Scratches run every way on a tag, so an upside-down
    # tag is still a plausible photo. 0: ultralytics' default, no vertical flips.
    flipud: float = 0.0
    # The restart's zoom range (ultralytics' scale: each photo is scaled by a random factor in
    # 1 +/- this). None: ultralytics' own (0.5), as in the first cycle. A smaller range keeps
    # the restart's scratches near the size the fixed camera sees; at 0.5 a 20 px scratch is
    # often shrunk to 10 px. Restart only, so it can start from a finished first cycle.
    then_scale: float | None = None
    # The restart's last epochs without mosaic (ultralytics' close_mosaic): the photos the
    # detector is scored on are single tags, never mosaics. None: ultralytics' own (10).
    then_close_mosaic: int | None = None
    # The restart's initial learning rate, with its optimiser (AdamW unless then_optimizer says
    # otherwise: what ultralytics' 'auto' picks for a run this short, under 10,000 iterations,
    # at 0.002 * 5 / (4 + classes) = 0.002 for our one class; engine/trainer.py,
    # build_optimizer). None: the optimiser's own rate in RESTART_OPTIMIZERS.
    then_lr0: float | None = None
    # The restart's optimiser (a key of RESTART_OPTIMIZERS), with its own rate, momentum and
    # bias warm-up unless --then-lr0 sets the rate. None: 'auto' (AdamW for a run this short).
    then_optimizer: str | None = None
    # The restart's copy-paste (ultralytics' copy_paste, its 'flip' mode): this fraction of a
    # training mosaic's scratches is pasted again, with the photo around them, at the mirrored
    # place, where it overlaps no other scratch. More scratches per photo, each on real metal.
    # The restart then trains on the data set with its boxes as outlines (with_box_outlines),
    # since ultralytics pastes only objects with an outline. None: no copy-paste (its own 0).
    then_copy_paste: float | None = None

    def recorded(self) -> dict:
        """The settings as cards, summaries and recipe keys record them.

        A setting added after runs were recorded is left out at its default, so the summaries,
        folds and card of earlier recipes keep their keys and still match.
        """
        settings = asdict(self)
        for later in ("then_epochs", "then_imgsz", "flipud"):
            if not settings[later]:
                del settings[later]
        for restart_only in RESTART_ONLY:
            if settings[restart_only] is None:
                del settings[restart_only]
        return settings

    def first_cycle(self) -> TrainSettings:
        """The recipe without its restart: what a finished first cycle was trained with."""
        return replace(self, then_epochs=0, then_imgsz=0, **dict.fromkeys(RESTART_ONLY))

    def restart_overrides(self) -> dict:
        """The ultralytics arguments the restart alone is trained with ({}: ultralytics' own)."""
        overrides: dict = {}
        if self.then_scale is not None:
            overrides["scale"] = self.then_scale
        if self.then_close_mosaic is not None:
            overrides["close_mosaic"] = self.then_close_mosaic
        if self.then_lr0 is not None or self.then_optimizer is not None:
            name = self.then_optimizer or "AdamW"
            rate, momentum, bias_warmup = RESTART_OPTIMIZERS[name]
            rate = self.then_lr0 if self.then_lr0 is not None else rate
            overrides.update(optimizer=name, lr0=rate, momentum=momentum, warmup_bias_lr=bias_warmup)
        if self.then_copy_paste is not None:
            overrides["copy_paste"] = self.then_copy_paste
        return overrides

    @property
    def restart_imgsz(self) -> int:
        return self.then_imgsz or self.imgsz

    @property
    def export_imgsz(self) -> int:
        """The size the last cycle trained at: the exported input is sized from it."""
        return self.restart_imgsz if self.then_epochs else self.imgsz


# Restart-only settings: recorded only when set, so earlier recipes keep their keys.
RESTART_ONLY = ("then_scale", "then_close_mosaic", "then_lr0", "then_optimizer", "then_copy_paste")

# The restart's optimisers, each as ultralytics trains with it: (initial rate, momentum, the
# biases' starting rate in the warm-up). AdamW and MuSGD as 'auto' sets them for a run under and
# over 10,000 iterations (0.002 for our one class, 0.01; momentum 0.9; bias warm-up from 0:
# engine/trainer.py, build_optimizer, ultralytics 8.4.190); SGD as cfg/default.yaml trains COCO.
RESTART_OPTIMIZERS: dict[str, tuple[float, float, float]] = {
    "AdamW": (0.002, 0.9, 0.0),
    "SGD": (0.01, 0.937, 0.1),
    "MuSGD": (0.01, 0.9, 0.0),
}


def restart_optimizer(text: str) -> str:
    """--then-optimizer: one of RESTART_OPTIMIZERS, in any case (as ultralytics takes them)."""
    names = {name.lower(): name for name in RESTART_OPTIMIZERS}
    if text.strip().lower() not in names:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: one of {', '.join(RESTART_OPTIMIZERS)}")
    return names[text.strip().lower()]


def image_size(text: str) -> int:
    """--imgsz: YOLOv8's stride is 32, and the exported input is a multiple of it."""
    value = positive_int(text)
    if value % 32 or value > 4096:
        raise argparse.ArgumentTypeError(f"{text!r}: a multiple of 32, at most 4096 (e.g. 256, 384, 640)")
    return value


def then_image_size(text: str) -> int:
    """--then-imgsz: 0 (the restart trains at --imgsz) or a size as --imgsz takes it."""
    return 0 if text.strip() == "0" else image_size(text)


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
    "then_epochs": non_negative_int,
    "then_imgsz": then_image_size,
    "flipud": chance,
    "then_scale": zoom_range,
    "then_close_mosaic": non_negative_int,
    "then_lr0": learning_rate,
    "then_optimizer": restart_optimizer,
    "then_copy_paste": chance,
}
RECIPE_OPTIONS = tuple(RECIPE_TYPES)


def add_recipe_options(parser: argparse.ArgumentParser) -> None:
    """The recipe's options, defined once: cross-validation and the shipped training take the same ones."""
    defaults = TrainSettings()
    for name, kind in RECIPE_TYPES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=getattr(defaults, name))


def folder_problem(path: Path, option: str) -> None:
    """A folder the command writes into: refused (DatasetError, exit 2) when it is a file."""
    from .dataset import DatasetError

    if path.exists() and not path.is_dir():
        raise DatasetError(f"{option} {path}: is a file, not a folder")


def recipe_from(args: argparse.Namespace) -> TrainSettings:
    """The recipe the options give; DatasetError (exit 2) for a setting that means nothing alone."""
    from .dataset import DatasetError

    settings = TrainSettings(**{name: getattr(args, name) for name in RECIPE_OPTIONS})
    if settings.then_imgsz and not settings.then_epochs:
        raise DatasetError("--then-imgsz: only with --then-epochs (it is the restart's training size)")
    if settings.then_scale is not None and not settings.then_epochs:
        raise DatasetError("--then-scale: only with --then-epochs (it is the restart's zoom range)")
    if settings.then_close_mosaic is not None and not settings.then_epochs:
        raise DatasetError("--then-close-mosaic: only with --then-epochs (the restart's last epochs without mosaic)")
    if (settings.then_close_mosaic or 0) > settings.then_epochs:
        raise DatasetError(
            f"--then-close-mosaic {settings.then_close_mosaic}: at most --then-epochs ({settings.then_epochs})"
        )
    if settings.then_lr0 is not None and not settings.then_epochs:
        raise DatasetError("--then-lr0: only with --then-epochs (it is the restart's learning rate)")
    if settings.then_optimizer is not None and not settings.then_epochs:
        raise DatasetError("--then-optimizer: only with --then-epochs (it is the restart's optimiser)")
    if settings.then_copy_paste is not None and not settings.then_epochs:
        raise DatasetError("--then-copy-paste: only with --then-epochs (it is the restart's copy-paste)")
    return settings


def finished_weights(run: Path, checkpoint: str = "last") -> Path | None:
    """A training run's checkpoint, if the run finished (its ``finished`` mark), else None."""
    weights = run / "weights"
    return weights / f"{checkpoint}.pt" if (weights / "finished").exists() else None


def first_cycle_differs(run: Path, settings: TrainSettings) -> str | None:
    """How the finished training run ``run`` differs from ``settings``' first cycle, or None.

    Read from the ``args.yaml`` ultralytics writes into every run: what it was really trained
    with, whatever recipe key its folder was stamped with.
    """
    import yaml

    if finished_weights(run) is None or not (run / "args.yaml").is_file():
        return f"{run}: not a finished training run (no weights/finished, or no args.yaml)"
    trained = yaml.safe_load((run / "args.yaml").read_text())
    first = settings.first_cycle()
    expected = {
        "model": first.arch,
        "epochs": first.epochs,
        "imgsz": first.imgsz,
        "batch": first.batch,
        "seed": first.seed,
        "workers": first.workers,
        "patience": first.patience or first.epochs,
        "flipud": first.flipud,
        "pretrained": False,
    }
    differ = [f"{k} {trained.get(k)!r} (this recipe: {v!r})" for k, v in expected.items() if trained.get(k) != v]
    return f"{run}: trained with " + ", ".join(differ) if differ else None


def train(
    data_yaml: Path,
    work_dir: Path,
    settings: TrainSettings,
    checkpoint: str = "best",
    validate: bool = True,
    resume: bool = False,
    first_cycle: Path | None = None,
) -> Path:
    """Train from scratch and return the path of the chosen checkpoint.

    ``checkpoint="last"`` with ``validate=False`` is cross-validation's form: a fixed epoch
    count and the last weights, so no validation figure picks anything (ultralytics then
    validates once, after the last epoch, for its log only). With ``resume``, a run
    interrupted part-way (a last.pt and no ``finished`` mark) continues from its last epoch, and
    a finished cycle is not trained again.
    With ``settings.then_epochs``, a second run (``run-then``) starts from the first one's
    last weights; ``first_cycle`` gives those weights from a finished run of
    ``settings.first_cycle()`` instead of training them again.
    """
    weights = first_cycle or _cycle(
        data_yaml, work_dir / "run", settings, settings.epochs, settings.imgsz, None, {}, validate, resume
    )
    if settings.then_epochs:
        if settings.then_copy_paste:
            from .dataset import with_box_outlines

            data_yaml = with_box_outlines(data_yaml, work_dir / "dataset-outlined")
        weights = _cycle(
            data_yaml,
            work_dir / "run-then",
            settings,
            settings.then_epochs,
            settings.restart_imgsz,
            weights,
            settings.restart_overrides(),
            validate,
            resume,
        )
    return weights.parent / f"{checkpoint}.pt"


def _cycle(
    data_yaml: Path,
    run: Path,
    settings: TrainSettings,
    epochs: int,
    imgsz: int,
    start: Path | None,
    overrides: dict,
    validate: bool,
    resume: bool,
) -> Path:
    """One ultralytics run of ``epochs`` at ``imgsz`` into ``run``: from the yaml (no weights), or from ``start``.

    ``overrides``: ultralytics arguments for this cycle alone (the restart's), {} for its own.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    weights = run / "weights"
    if resume and (weights / "finished").exists():  # a restart cut off: its first cycle is done
        return weights / "last.pt"
    if resume and (weights / "last.pt").exists() and not (weights / "finished").exists():
        YOLO(str(weights / "last.pt")).train(resume=True)
        (weights / "finished").touch()
        return weights / "last.pt"
    model = YOLO(str(start) if start else settings.arch)
    model.train(
        **overrides,
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        batch=settings.batch,
        seed=settings.seed,
        deterministic=True,
        flipud=settings.flipud,
        workers=settings.workers,
        patience=settings.patience or epochs,
        # ultralytics drops a loaded checkpoint's weights when pretrained is False
        # (engine/model.py, Model.train): a restart must say True.
        pretrained=start is not None,
        amp=False,
        plots=False,
        device="cpu",
        project=str(run.parent.resolve()),
        name=run.name,
        exist_ok=True,
        cache="ram",
        val=validate,
        verbose=False,
    )
    (weights / "finished").touch()
    return weights / "last.pt"


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
