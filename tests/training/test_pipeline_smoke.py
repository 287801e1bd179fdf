"""One tiny epoch of the real training pipeline on the test photos: train, export, quantise, card.

Run with `tox -e training` (needs PyTorch and ultralytics); the numbers are meaningless,
what is checked is that every stage runs and the card describes the files it wrote.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

ultralytics = pytest.importorskip("ultralytics", reason="the training env (tox -e training) has ultralytics")

ROOT = Path(__file__).resolve().parents[2]


def test_one_epoch_end_to_end(tmp_path, monkeypatch):
    from models.training.__main__ import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = main(
        ["--data", str(ROOT / "tests/data/metal-tags"), "--out", str(out), "--work", str(tmp_path / "work"),
         "--epochs", "1", "--imgsz", "64", "--val-fraction", "0.25"]
    )  # fmt: skip
    assert code == 0
    card = yaml.safe_load((out / "model.yaml").read_text())
    assert card["input"] == {"height": 64, "width": 64}
    assert card["training"]["epochs"] == 1 and card["training"]["pretrained"] is False
    for variant in card["variants"]:
        data = (out / variant["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == variant["sha256"]
    assert os.path.getsize(out / "model-int8.onnx") < os.path.getsize(out / "model-fp32.onnx")
