"""COCO metal-tag annotations -> an ultralytics YOLO data set, split by photograph.

Several images are crops of one photograph (``...-cropped-left-top.jpg``);
splitting by image would leak a photograph into both train and validation
and inflate the validation mAP, so the split is made on the photograph id.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

CROP_MARK = "-cropped"


class DatasetError(ValueError):
    """A labelled-photo folder that cannot be used, said in words naming the file and what is wrong."""


@dataclass(frozen=True)
class Box:
    """A box in original-image pixels: left, top, width, height."""

    left: float
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class Sample:
    """One labelled photo."""

    path: Path
    width: int
    height: int
    boxes: tuple[Box, ...]

    @property
    def photograph(self) -> str:
        """The id of the photograph this image was cropped from."""
        return Path(self.path.name).stem.split(CROP_MARK)[0]  # X.jpg and X-cropped-*.jpg: one photograph


def load_coco(data_dir: Path) -> tuple[list[Sample], list[str]]:
    """Read ``annotations.json`` and return the samples and class names (by category id order).

    Everything is checked before any photo is used, so a bad folder is one clear error, not a
    stack trace half-way through an evaluation.
    """
    path = data_dir / "annotations.json"
    if not data_dir.is_dir():
        raise DatasetError(f"--data {data_dir}: no such folder")
    if not path.is_file():
        raise DatasetError(f"{path}: missing; --data must be a folder with annotations.json (COCO) and images/")
    try:
        coco = json.loads(path.read_text())
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        images, annotations = coco["images"], coco.get("annotations", [])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not COCO annotations ({exc.__class__.__name__}: {exc})") from None
    if len(categories) != 1:
        raise DatasetError(f"{path}: expected one category (scratch), found {len(categories)}")
    if not images:
        raise DatasetError(f"{path}: lists no images")
    class_index = {c["id"]: i for i, c in enumerate(categories)}
    boxes: dict[int, list[Box]] = {}
    try:
        for ann in annotations:
            if class_index.get(ann["category_id"]) != 0:
                continue
            boxes.setdefault(ann["image_id"], []).append(Box(*map(float, ann["bbox"])))
        samples = [
            Sample(
                path=data_dir / "images" / img["file_name"],
                width=int(img["width"]),
                height=int(img["height"]),
                boxes=tuple(boxes.get(img["id"], ())),
            )
            for img in images
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: an image or annotation lacks a field or has a bad value: {exc!r}") from None
    missing = [s.path.name for s in samples if not s.path.is_file()]
    if missing:
        raise DatasetError(f"{data_dir / 'images'}: {len(missing)} listed photo(s) missing, e.g. {missing[0]}")
    return samples, [c["name"] for c in categories]


def split_by_photograph(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Deterministic split that keeps every crop of a photograph on one side."""
    photographs = sorted({s.photograph for s in samples})
    random.Random(seed).shuffle(photographs)
    n_val = max(1, round(len(photographs) * val_fraction))
    val_photos = set(photographs[:n_val])
    train = [s for s in samples if s.photograph not in val_photos]
    val = [s for s in samples if s.photograph in val_photos]
    return train, val


def folds_by_photograph(samples: list[Sample], k: int, seed: int) -> list[list[Sample]]:
    """K folds for cross-validation, every crop of a photograph in the same fold.

    Photographs are shuffled with ``seed`` and each goes to the fold with the fewest images
    so far (ties: the lowest fold), which keeps the folds within one photograph's crops of
    each other in size. Deterministic for one seed and one list of samples.
    """
    by_photo: dict[str, list[Sample]] = {}
    for s in samples:
        by_photo.setdefault(s.photograph, []).append(s)
    if not 2 <= k <= len(by_photo):
        raise ValueError(f"--folds {k}: needs 2 to {len(by_photo)} (the number of photographs)")
    photographs = sorted(by_photo)
    random.Random(seed).shuffle(photographs)
    folds: list[list[Sample]] = [[] for _ in range(k)]
    for photo in photographs:
        smallest = min(range(k), key=lambda i: (len(folds[i]), i))
        folds[smallest] += by_photo[photo]
    return folds


def _yolo_label_lines(sample: Sample) -> list[str]:
    lines = []
    for b in sample.boxes:
        cx = (b.left + b.width / 2) / sample.width
        cy = (b.top + b.height / 2) / sample.height
        lines.append(f"0 {cx:.6f} {cy:.6f} {b.width / sample.width:.6f} {b.height / sample.height:.6f}")
    return lines


def yolo_dataset_differs(out_dir: Path, train: list[Sample]) -> str | None:
    """How the training split in ``out_dir`` (as write_yolo_dataset laid it out) differs from
    ``train``'s photos and labels, or None: what a reused training run was trained on."""
    labels = out_dir / "labels" / "train"
    have = {p.stem: p.read_text() for p in labels.glob("*.txt")} if labels.is_dir() else {}
    want = {s.path.stem: "\n".join(_yolo_label_lines(s)) for s in train}
    if have == want:
        return None
    other = sorted(set(have) ^ set(want)) or sorted(k for k in want if have[k] != want[k])
    return f"{len(have)} photos in {labels}, {len(want)} here; first difference: {other[0]}"


def write_yolo_dataset(train: list[Sample], val: list[Sample], names: list[str], out_dir: Path) -> Path:
    """Lay the split out the way ultralytics expects and return the data yaml path."""
    import yaml  # here: scoring an endpoint on a plant PC needs load_coco, not PyYAML

    for split, samples in (("train", train), ("val", val)):
        img_dir = out_dir / "images" / split
        lbl_dir = out_dir / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for s in samples:
            shutil.copy2(s.path, img_dir / s.path.name)
            (lbl_dir / f"{s.path.stem}.txt").write_text("\n".join(_yolo_label_lines(s)))
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(
        yaml.safe_dump(
            {
                "path": str(out_dir.resolve()),
                "train": "images/train",
                "val": "images/val",
                "names": dict(enumerate(names)),
            }
        )
    )
    return data_yaml


def box_outline_line(line: str) -> str:
    """A YOLO box line ``c cx cy w h`` as the same box's outline, a four-corner polygon.

    ultralytics keeps a detection label's polygon as the object's segment and takes its box
    from the polygon's extent, so the box is unchanged; copy-paste (its ``copy_paste``) pastes
    only objects that have a segment (data/augment.py, CopyPaste.__call__, 8.4.190).
    """
    cls, cx, cy, w, h = line.split()
    left, top, right, bottom = (
        float(cx) - float(w) / 2,
        float(cy) - float(h) / 2,
        float(cx) + float(w) / 2,
        float(cy) + float(h) / 2,
    )
    corners = (left, top, right, top, right, bottom, left, bottom)
    return " ".join([cls, *(f"{min(max(v, 0.0), 1.0):.6f}" for v in corners)])


def with_box_outlines(data_yaml: Path, out_dir: Path) -> Path:
    """A copy of the YOLO data set at ``data_yaml`` whose labels are box outlines; its data yaml path.

    The photos are hard links (a copy where the file system refuses one), so the copy costs
    only its label files. Rewritten every time: the labels follow the data set they copy.
    """
    import yaml

    spec = yaml.safe_load(data_yaml.read_text())
    source = Path(spec["path"])
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for photo in sorted((source / "images").rglob("*")):
        if photo.is_file():
            target = out_dir / photo.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.hardlink_to(photo)
            except OSError:
                shutil.copy2(photo, target)
    for labels in sorted((source / "labels").rglob("*.txt")):
        target = out_dir / labels.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = [box_outline_line(line) for line in labels.read_text().splitlines() if line.strip()]
        target.write_text("\n".join(lines))
    outlined = out_dir / "data.yaml"
    outlined.write_text(yaml.safe_dump({**spec, "path": str(out_dir.resolve())}))
    return outlined
