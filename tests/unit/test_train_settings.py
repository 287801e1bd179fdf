"""What a recipe records and how a finished first cycle is checked against it (no torch needed).

The shipped training's `--first-cycle` reuses a folder only when the `args.yaml` ultralytics
wrote into it says it was trained as this recipe's first cycle; a setting missing from that
check would let a first cycle of another recipe in silently.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from models.training.train import TrainSettings, first_cycle_differs, restart_optimizer


def finished_run(folder: Path, **trained) -> Path:
    """A finished ultralytics run as it lies on disk: weights/finished and its args.yaml."""
    first = TrainSettings()
    args = {
        "model": first.arch,
        "epochs": first.epochs,
        "imgsz": first.imgsz,
        "batch": first.batch,
        "seed": first.seed,
        "workers": first.workers,
        "patience": first.epochs,
        "flipud": 0.0,  # ultralytics' default, written into every args.yaml
        "pretrained": False,
        **trained,
    }
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "finished").touch()
    (folder / "args.yaml").write_text(yaml.safe_dump(args))
    return folder


def test_earlier_recipes_keep_their_keys_and_a_set_flip_is_recorded():
    assert "flipud" not in TrainSettings().recorded()
    assert TrainSettings(flipud=0.5).recorded()["flipud"] == 0.5


def test_a_first_cycle_trained_with_other_vertical_flips_is_refused(tmp_path):
    plain = finished_run(tmp_path / "plain")
    flipped = finished_run(tmp_path / "flipped", flipud=0.5)
    assert first_cycle_differs(plain, TrainSettings()) is None
    assert first_cycle_differs(flipped, TrainSettings(flipud=0.5, then_epochs=70)) is None
    problem = first_cycle_differs(plain, TrainSettings(flipud=0.5, then_epochs=70))
    assert problem is not None and "flipud 0.0 (this recipe: 0.5)" in problem
    assert "flipud" in (first_cycle_differs(flipped, TrainSettings(then_epochs=70)) or "")


def test_the_restarts_zoom_range_is_recorded_only_when_set_and_is_not_the_first_cycles():
    assert "then_scale" not in TrainSettings().recorded()
    restart = TrainSettings(then_epochs=70, then_scale=0.25)
    assert restart.recorded()["then_scale"] == 0.25
    assert TrainSettings(then_epochs=70, then_scale=0.0).recorded()["then_scale"] == 0.0  # no zoom is a setting
    assert "then_scale" not in restart.first_cycle().recorded()


def test_a_restart_with_its_own_zoom_range_starts_from_the_plain_first_cycle(tmp_path):
    """The zoom range is the restart's alone: a first cycle trained at ultralytics' own scale is
    the first cycle of a recipe that narrows it in the restart."""
    plain = finished_run(tmp_path / "plain")
    assert first_cycle_differs(plain, TrainSettings(then_epochs=70, then_scale=0.25)) is None


def test_the_restarts_mosaic_and_learning_rate_are_recorded_only_when_set_and_are_not_the_first_cycles(tmp_path):
    assert not {"then_close_mosaic", "then_lr0"} & set(TrainSettings(then_epochs=70).recorded())
    restart = TrainSettings(then_epochs=70, then_close_mosaic=35, then_lr0=0.001)
    assert restart.recorded()["then_close_mosaic"] == 35 and restart.recorded()["then_lr0"] == 0.001
    assert TrainSettings(then_epochs=70, then_close_mosaic=0).recorded()["then_close_mosaic"] == 0  # mosaic to the end
    assert restart.first_cycle().recorded() == TrainSettings().recorded()
    assert first_cycle_differs(finished_run(tmp_path / "plain"), restart) is None  # a plain first cycle is reused


def test_the_restart_trains_with_its_own_settings_and_otherwise_with_ultralytics_own():
    """What reaches ultralytics for the restart: nothing for a plain recipe, so its runs match
    the recorded ones, and a learning rate only with what 'auto' sets beside it (AdamW,
    momentum 0.9, bias warm-up from 0), so that the rate is the one thing that differs."""
    assert TrainSettings(then_epochs=70).restart_overrides() == {}
    assert TrainSettings(then_epochs=70, then_scale=0.25, then_close_mosaic=35).restart_overrides() == {
        "scale": 0.25,
        "close_mosaic": 35,
    }
    assert TrainSettings(then_epochs=70, then_lr0=0.001).restart_overrides() == {
        "optimizer": "AdamW",
        "lr0": 0.001,
        "momentum": 0.9,
        "warmup_bias_lr": 0.0,
    }


def test_the_restarts_optimiser_trains_as_ultralytics_trains_with_it_and_takes_the_rate_given():
    """--then-optimizer: SGD with ultralytics' COCO recipe (0.01, momentum 0.937, biases warming
    up from 0.1), MuSGD as 'auto' sets it for long runs, and --then-lr0 replacing the rate alone;
    the first cycle is the plain one, so its finished folds are reused."""
    assert TrainSettings(then_epochs=70, then_optimizer="SGD").restart_overrides() == {
        "optimizer": "SGD",
        "lr0": 0.01,
        "momentum": 0.937,
        "warmup_bias_lr": 0.1,
    }
    assert TrainSettings(then_epochs=70, then_optimizer="MuSGD", then_lr0=0.005).restart_overrides() == {
        "optimizer": "MuSGD",
        "lr0": 0.005,
        "momentum": 0.9,
        "warmup_bias_lr": 0.0,
    }
    restart = TrainSettings(then_epochs=70, then_optimizer="SGD")
    assert restart.recorded()["then_optimizer"] == "SGD" and "then_optimizer" not in TrainSettings().recorded()
    assert restart.first_cycle().recorded() == TrainSettings().recorded()
    assert [restart_optimizer(name) for name in ("sgd", " MuSGD", "adamw")] == ["SGD", "MuSGD", "AdamW"]
    for wrong in ("Adam", "", "sgd2"):
        with pytest.raises(argparse.ArgumentTypeError, match="one of AdamW, SGD, MuSGD"):
            restart_optimizer(wrong)
