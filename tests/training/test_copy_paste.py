"""The restart's copy-paste (--then-copy-paste) in real ultralytics: what it pastes, and that it
reaches the restart alone.

ultralytics pastes only objects that have an outline (data/augment.py, CopyPaste.__call__), so a
box-only data set trains exactly as without copy-paste; the restart therefore trains on a copy
whose boxes are outlines. These tests would fail if ultralytics dropped a detection label's
outline, or if the setting silently did nothing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

ultralytics = pytest.importorskip("ultralytics", reason="the training env (tox -e training) has ultralytics")

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "metal-tags"
TINY = ["--data", str(DATA), "--folds", "2", "--epochs", "1", "--imgsz", "64", "--batch", "2", "--workers", "0"]


def scratches_trained_on(data_yaml: Path, copy_paste: float, mosaics: int = 24) -> int:
    """How many labelled scratches ultralytics' training pipeline hands the model in ``mosaics`` samples."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    cfg = get_cfg(overrides={"copy_paste": copy_paste, "imgsz": 128, "workers": 0})
    data = check_det_dataset(str(data_yaml))
    dataset = build_yolo_dataset(cfg, data["train"], 2, data, mode="train")
    random.seed(0)
    np.random.seed(0)
    return sum(len(dataset[i % len(dataset)]["cls"]) for i in range(mosaics))


def test_copy_paste_adds_scratches_only_to_the_outlined_copy(tmp_path, monkeypatch):
    from models.training.dataset import load_coco, with_box_outlines, write_yolo_dataset

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    samples, names = load_coco(DATA)
    plain = write_yolo_dataset(samples, samples[:2], names, tmp_path / "plain")
    outlined = with_box_outlines(plain, tmp_path / "outlined")
    assert scratches_trained_on(plain, 1.0) == scratches_trained_on(plain, 0.0)  # boxes alone: nothing pasted
    without, pasted = scratches_trained_on(outlined, 0.0), scratches_trained_on(outlined, 1.0)
    assert pasted > without > 0


def test_the_restart_trains_with_copy_paste_on_the_outlined_copy_and_the_first_cycle_without(
    tmp_path, monkeypatch, capsys
):
    from models.training.crossval import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    plain = tmp_path / "cv"
    assert main([*TINY, "--work", str(plain), "--only", "0"]) == 0
    work = tmp_path / "cv-cp"
    restart = ["--then-epochs", "1", "--then-copy-paste", "0.5", "--first-cycles", str(plain)]
    assert main([*TINY, *restart, "--work", str(work), "--only", "0"]) == 0
    first = yaml.safe_load((plain / "fold-0" / "run" / "args.yaml").read_text())
    then = yaml.safe_load((work / "fold-0" / "run-then" / "args.yaml").read_text())
    assert first["copy_paste"] == 0.0 and then["copy_paste"] == 0.5
    assert Path(then["data"]).parent.name == "dataset-outlined"
    labels = (work / "fold-0" / "dataset-outlined" / "labels" / "train").glob("*.txt")
    assert {len(line.split()) for f in labels for line in f.read_text().splitlines()} == {9}
    assert json.loads((work / "fold-0" / "result.json").read_text())["settings"]["then_copy_paste"] == 0.5
    capsys.readouterr()
