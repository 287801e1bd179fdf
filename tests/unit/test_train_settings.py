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


def test_the_restarts_copy_paste_is_the_restarts_alone_and_recorded_only_when_set(tmp_path):
    """--then-copy-paste: ultralytics' copy_paste for the restart; the first cycle is the plain
    one, so its finished folds are reused, and earlier recipes keep their keys."""
    restart = TrainSettings(then_epochs=70, then_copy_paste=0.5)
    assert restart.restart_overrides() == {"copy_paste": 0.5}
    assert restart.recorded()["then_copy_paste"] == 0.5
    assert "then_copy_paste" not in TrainSettings(then_epochs=70).recorded()
    assert restart.first_cycle().recorded() == TrainSettings().recorded()
    assert first_cycle_differs(finished_run(tmp_path / "plain"), restart) is None


def test_a_box_outline_spans_exactly_its_box_and_stays_on_the_photo():
    """The outline's extent is the box ultralytics derives from it (segments2boxes): the labels
    the restart learns are the same boxes; a box touching the edge keeps its corners on the photo."""
    from models.training.dataset import box_outline_line

    cls, *corners = box_outline_line("0 0.450000 0.521667 0.077778 0.450000").split()
    xs, ys = [float(v) for v in corners[0::2]], [float(v) for v in corners[1::2]]
    assert cls == "0" and len(xs) == 4
    assert (min(xs), max(xs)) == pytest.approx((0.411111, 0.488889), abs=2e-6)
    assert (min(ys), max(ys)) == pytest.approx((0.296667, 0.746667), abs=2e-6)
    edge = [float(v) for v in box_outline_line("0 0.02 0.99 0.1 0.1").split()[1:]]
    assert min(edge) == 0.0 and max(edge) == 1.0


def test_the_outlined_copy_has_the_same_photos_and_one_outline_per_box(tmp_path):
    from models.training.dataset import Box, Sample, with_box_outlines, write_yolo_dataset

    photos = []
    for name, boxes in (("a", (Box(10, 20, 30, 40), Box(50, 5, 10, 10))), ("b", ())):
        path = tmp_path / "src" / f"{name}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"jpeg " + name.encode())
        photos.append(Sample(path, 100, 80, boxes))
    plain = write_yolo_dataset(photos, photos[:1], ["scratch"], tmp_path / "plain")
    outlined = with_box_outlines(plain, tmp_path / "outlined")
    spec = yaml.safe_load(outlined.read_text())
    assert Path(spec["path"]) == (tmp_path / "outlined").resolve() and spec["names"] == {0: "scratch"}
    for split in ("train", "val"):
        for photo in (tmp_path / "plain" / "images" / split).iterdir():
            assert (tmp_path / "outlined" / "images" / split / photo.name).read_bytes() == photo.read_bytes()
    lines = (tmp_path / "outlined" / "labels" / "train" / "a.txt").read_text().splitlines()
    assert [len(line.split()) for line in lines] == [9, 9]
    assert (tmp_path / "outlined" / "labels" / "train" / "b.txt").read_text() == ""
    assert with_box_outlines(plain, tmp_path / "outlined") == outlined  # rewritten, not refused
