"""One tiny epoch of the real training pipeline on the test photos: train, export, quantise, card.

Run with `tox -e training` (needs PyTorch and ultralytics); the numbers are meaningless,
what is checked is that every stage runs, that the card describes the files it wrote, and
that it carries only a cross-validation of exactly the recipe it trained.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

ultralytics = pytest.importorskip("ultralytics", reason="the training env (tox -e training) has ultralytics")

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests/data/metal-tags"
RECIPE = ["--epochs", "1", "--imgsz", "64", "--batch", "2", "--workers", "0"]


def test_one_epoch_end_to_end_on_every_photo(tmp_path, monkeypatch):
    from models.training.__main__ import main
    from models.training.evaluate import SERVED

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["--data", str(DATA), "--out", str(out), "--work", str(tmp_path / "work"), *RECIPE]) == 0
    card = yaml.safe_load((out / "model.yaml").read_text())
    assert card["input"] == {"height": 64, "width": 64}
    assert card["training"]["epochs"] == 1 and card["training"]["pretrained"] is False
    assert card["training"]["data"]["train_images"] == len(list((DATA / "images").iterdir()))
    assert card["cross_validation"].startswith("none")
    assert card["serving_thresholds"]["confidence"] == SERVED[0]  # without --cv: what the site serves now
    for variant in card["variants"]:
        data = (out / variant["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == variant["sha256"]
        assert variant["latency_ms_p50"] > 0
    assert os.path.getsize(out / "model-int8.onnx") < os.path.getsize(out / "model-fp32.onnx")

    # --fp32: no training, no export; the same quantisation of the same export, and its card
    again = tmp_path / "again"
    argv = ["--data", str(DATA), "--out", str(again), "--fp32", str(out / "model-fp32.onnx"), *RECIPE]
    assert main([*argv, "--work", str(tmp_path / "work2")]) == 0
    shas = {v["name"]: v["sha256"] for v in yaml.safe_load((again / "model.yaml").read_text())["variants"]}
    assert shas == {v["name"]: v["sha256"] for v in card["variants"]}
    assert not (tmp_path / "work2" / "run").exists()  # nothing trained


def test_the_card_takes_its_figures_and_threshold_from_the_recipes_cross_validation(tmp_path, monkeypatch, capsys):
    from models.training.__main__ import main
    from models.training.crossval import main as crossval

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    cv = tmp_path / "cv"
    assert crossval(["--data", str(DATA), "--folds", "2", "--work", str(cv), "--threshold", "0.3", *RECIPE]) == 0
    summary = json.loads((cv / "cv.json").read_text())
    out = tmp_path / "out"
    args = ["--data", str(DATA), "--out", str(out), "--work", str(tmp_path / "work"), "--cv", str(cv / "cv.json")]
    assert main([*args, *RECIPE]) == 0
    card = yaml.safe_load((out / "model.yaml").read_text())
    assert card["serving_thresholds"]["confidence"] == 0.3
    assert card["cross_validation"]["folds"] == 2
    for variant in card["variants"]:
        assert variant["cross_validated"]["map50"] == summary["variants"][variant["name"]]["map50"]
        assert variant["cross_validated"]["f1"] == summary["variants"][variant["name"]]["at_0.3"]["f1"]

    other = [a if a != "64" else "96" for a in RECIPE]  # a recipe the summary did not cross-validate
    assert main([*args, *other]) == 2
    assert "not this recipe" in capsys.readouterr().err


def test_a_restart_cut_off_resumes_without_training_its_first_cycle_again(tmp_path, monkeypatch, capsys):
    """--then-epochs on every photo takes hours on a CPU: a power cut in the restart must cost
    only the restart's unfinished epochs, and another recipe must not resume from that --work."""
    from ultralytics.engine.trainer import BaseTrainer

    from models.training.__main__ import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    recipe = [a if a != "1" else "2" for a in RECIPE]  # 2 epochs, then 2 more
    argv = ["--data", str(DATA), "--out", str(tmp_path / "out"), "--work", str(work), *recipe, "--then-epochs", "2"]
    save = BaseTrainer.save_model
    saved = []

    def cut_in_the_restart(self):
        save(self)
        saved.append((Path(self.save_dir).name, self.epoch))
        if Path(self.save_dir).name == "run-then":
            raise RuntimeError("power cut")

    monkeypatch.setattr(BaseTrainer, "save_model", cut_in_the_restart)
    with pytest.raises(RuntimeError, match="power cut"):
        main(argv)
    assert saved == [("run", 0), ("run", 1), ("run-then", 0)]
    saved.clear()
    monkeypatch.setattr(
        BaseTrainer, "save_model", lambda self: (save(self), saved.append((Path(self.save_dir).name, self.epoch)))
    )
    assert main(argv) == 0
    assert saved == [("run-then", 1)]  # only the restart's second epoch
    card = yaml.safe_load((tmp_path / "out" / "model.yaml").read_text())
    assert (card["training"]["epochs"], card["training"]["then_epochs"]) == (2, 2)

    capsys.readouterr()
    other = [a if a != "64" else "96" for a in argv]
    assert main(other) == 2
    assert "another recipe" in capsys.readouterr().err


def test_a_restart_at_another_size_reuses_a_finished_first_cycle(tmp_path, monkeypatch, capsys):
    """--first-cycle: the shipped training's restart starts from an earlier training's finished
    first cycle of the same recipe and photos (checked against what ultralytics recorded), not
    trained again; the card's command leaves the option out. Another recipe's is refused."""
    from ultralytics.utils import callbacks

    from models.training.__main__ import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "first"
    argv = ["--data", str(DATA), "--out", str(tmp_path / "out1"), "--work", str(first), *RECIPE]
    assert main([*argv, "--then-epochs", "1"]) == 0  # a two-cycle training: its run/ is the first cycle
    sizes = []
    on_start = callbacks.default_callbacks["on_train_start"]
    monkeypatch.setitem(
        callbacks.default_callbacks, "on_train_start", [*on_start, lambda t: sizes.append(t.args.imgsz)]
    )
    out, work = tmp_path / "out2", tmp_path / "second"
    restart = ["--then-epochs", "1", "--then-imgsz", "96", "--first-cycle", str(first / "run")]
    assert main(["--data", str(DATA), "--out", str(out), "--work", str(work), *RECIPE, *restart]) == 0
    assert sizes == [96] and not (work / "run").exists()  # only the restart trained, at its size
    card = yaml.safe_load((out / "model.yaml").read_text())
    assert card["input"]["width"] == 96 and card["training"]["then_imgsz"] == 96
    assert "--first-cycle" not in card["training"]["command"] and "--then-imgsz 96" in card["training"]["command"]

    capsys.readouterr()
    other = ["--data", str(DATA), "--out", str(tmp_path / "o3"), "--work", str(tmp_path / "w3"), *RECIPE]
    other[other.index("--epochs") + 1] = "2"
    assert main([*other, *restart]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--first-cycle" in err[0] and "epochs 1 (this recipe: 2)" in err[0]
