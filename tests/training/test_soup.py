"""A model soup (``soup.py``, measured by ``rescore --soup-with``): restarts of one first cycle,
their weights averaged into one model that exports and serves like any other.

Run with `tox -e training` (real ultralytics and torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ultralytics = pytest.importorskip("ultralytics", reason="the training env (tox -e training) has ultralytics")

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "metal-tags"
TINY = ["--data", str(DATA), "--folds", "2", "--epochs", "1", "--imgsz", "64", "--batch", "2", "--workers", "0"]


def checkpoint(path: Path, scale: str = "n", shift: float = 0.0) -> Path:
    """An ultralytics checkpoint as training leaves it (float16 network under 'model', no EMA),
    of a fresh one-class YOLOv8 whose floating-point tensors are moved by ``shift``."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    net = DetectionModel(f"yolov8{scale}.yaml", nc=1, verbose=False)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t += shift
    torch.save({"model": net.half(), "ema": None, "train_args": {}}, path)
    return path


def test_a_soup_is_the_mean_of_its_ingredients_and_loads_as_a_model(tmp_path):
    import torch
    from ultralytics import YOLO

    from models.training.soup import soup_weights

    a, b = checkpoint(tmp_path / "a.pt", shift=0.0), checkpoint(tmp_path / "b.pt", shift=0.5)
    out = soup_weights([a, b], tmp_path / "soup.pt")
    states = [torch.load(p, map_location="cpu", weights_only=False)["model"].float().state_dict() for p in (a, b, out)]
    floats = [k for k, v in states[0].items() if v.is_floating_point()]
    assert floats and all(torch.allclose(states[2][k], states[0][k] + 0.25, atol=2e-3) for k in floats)
    counters = [k for k, v in states[0].items() if not v.is_floating_point()]
    assert all(torch.equal(states[2][k], states[0][k]) for k in counters)  # batch counters: not averaged
    assert YOLO(str(out)).model.yaml["nc"] == 1  # what export_onnx loads


def test_weights_of_another_architecture_or_a_soup_of_one_are_refused(tmp_path):
    from models.training.dataset import DatasetError
    from models.training.soup import soup_weights

    n, s = checkpoint(tmp_path / "n.pt"), checkpoint(tmp_path / "s.pt", scale="s")
    with pytest.raises(DatasetError, match="not the architecture"):
        soup_weights([n, s], tmp_path / "soup.pt")
    with pytest.raises(DatasetError, match="at least two"):
        soup_weights([n], tmp_path / "soup.pt")
    assert not (tmp_path / "soup.pt").exists()


def test_rescore_soups_restarts_of_one_first_cycle_and_refuses_others(tmp_path, monkeypatch, capsys):
    """Two restarts of the same first cycles soup into one model per fold; a soup of a restart with
    itself is that restart (its own figures); a restart of other first cycles, or a crossval
    without a restart, is refused with one line."""
    import onnx

    from models.training import crossval, rescore

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "cv"
    assert crossval.main([*TINY, "--work", str(first)]) == 0
    restart = ["--then-epochs", "1", "--first-cycles", str(first)]
    assert crossval.main([*TINY, *restart, "--work", str(tmp_path / "a")]) == 0
    assert crossval.main([*TINY, *restart, "--then-lr0", "0.01", "--work", str(tmp_path / "b")]) == 0
    base = ["--cv", str(tmp_path / "a" / "cv.json"), "--data", str(DATA)]

    assert rescore.main([*base, "--soup-with", str(tmp_path / "b" / "cv.json"), "--out", str(tmp_path / "ab")]) == 0
    souped = json.loads((tmp_path / "ab" / "cv.json").read_text())
    assert souped["soup_with"] == [str(tmp_path / "b" / "cv.json")] and len(souped["variants"]["int8"]["folds"]) == 2
    for i in (0, 1):
        graph = onnx.load(str(tmp_path / "ab" / f"fold-{i}" / "model-int8.onnx")).graph
        assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim][2:] == [64, 64]

    assert rescore.main([*base, "--soup-with", str(tmp_path / "a" / "cv.json"), "--out", str(tmp_path / "aa")]) == 0
    own = json.loads((tmp_path / "a" / "cv.json").read_text())["variants"]["fp32"]
    assert json.loads((tmp_path / "aa" / "cv.json").read_text())["variants"]["fp32"] == own

    capsys.readouterr()
    assert crossval.main([*TINY, "--then-epochs", "1", "--work", str(tmp_path / "own-first")]) == 0
    capsys.readouterr()
    other_start = ["--soup-with", str(tmp_path / "own-first" / "cv.json"), "--out", str(tmp_path / "x")]
    assert rescore.main([*base, *other_start]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--soup-with" in err and "restarted from" in err
    assert rescore.main([*base, "--soup-with", str(first / "cv.json"), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no restart" in err
