"""A tiny cross-validation (2 folds, 1 epoch, 64 px) of the real pipeline: folds, resume, summary.

Run with `tox -e training`; the figures are meaningless, what is checked is that every
held-out photo is predicted by a model that never trained on its photograph, that a done
fold is not retrained, and that another recipe is not mixed into a work folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ultralytics = pytest.importorskip("ultralytics", reason="the training env (tox -e training) has ultralytics")

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "metal-tags"
TINY = ["--data", str(DATA), "--folds", "2", "--epochs", "1", "--imgsz", "64", "--batch", "2", "--workers", "0"]


def photograph(name: str) -> str:
    """Which photograph a file is, independently of the code under test: the data set's names are
    <photograph>-cropped-<corner>.jpg, or <photograph>.<ext> for an uncropped original."""
    stem = Path(name).stem
    return stem[: stem.index("-cropped")] if "-cropped" in stem else stem


def grouped_data(folder: Path) -> Path:
    """tests/data/metal-tags plus two more files of its first photograph (another crop and the
    uncropped original, as a labelling export names them): without files of one photograph to
    keep together, the disjointness below holds for any split and cannot fail."""
    coco = json.loads((DATA / "annotations.json").read_text())
    (folder / "images").mkdir(parents=True)
    for p in (DATA / "images").iterdir():
        shutil.copyfile(p, folder / "images" / p.name)
    first = coco["images"][0]
    base = first["file_name"].split("-cropped")[0]
    next_id = max(i["id"] for i in coco["images"]) + 1
    next_ann = max(a["id"] for a in coco["annotations"]) + 1
    for k, name in enumerate((f"{base}-cropped-left-top.jpg", f"{base}.jpg")):
        shutil.copyfile(DATA / "images" / first["file_name"], folder / "images" / name)
        coco["images"].append({**first, "id": next_id + k, "file_name": name})
        for a in [a for a in coco["annotations"] if a["image_id"] == first["id"]]:
            coco["annotations"].append({**a, "id": next_ann, "image_id": next_id + k})
            next_ann += 1
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def test_two_folds_out_of_fold_and_resumable(tmp_path, monkeypatch, capsys):
    from models.training.crossval import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "cv"
    data = grouped_data(tmp_path / "data")
    assert main([*TINY, "--data", str(data), "--work", str(work)]) == 0  # the later --data wins
    summary = json.loads((work / "cv.json").read_text())
    assert summary["folds_done"] == [0, 1]
    tested = [json.loads((work / f"fold-{i}" / "result.json").read_text())["test_images"] for i in (0, 1)]
    all_photos = sorted(p.name for p in (data / "images").iterdir())
    assert len({photograph(n) for n in all_photos}) < len(all_photos)  # some files share a photograph
    assert sorted(tested[0] + tested[1]) == all_photos  # every photo predicted exactly once
    for i in (0, 1):
        trained_on = {p.name for p in (work / f"fold-{i}" / "dataset" / "images" / "train").iterdir()}
        assert {photograph(n) for n in trained_on}.isdisjoint({photograph(n) for n in tested[i]})
    for variant in ("fp32", "int8"):
        v = summary["variants"][variant]
        assert len(v["folds"]) == 2 and set(v["map50"]) == {"mean", "sd", "min", "max"}
        assert 0.05 <= v["chosen_threshold"]["threshold"] <= 1
    out = capsys.readouterr().out
    assert "threshold to ship (F1 optimum, pooled out-of-fold)" in out

    stamps = [(work / f"fold-{i}" / "result.json").stat().st_mtime_ns for i in (0, 1)]
    assert main([*TINY, "--data", str(data), "--work", str(work)]) == 0
    assert [(work / f"fold-{i}" / "result.json").stat().st_mtime_ns for i in (0, 1)] == stamps
    assert "fold 0: done before, not retrained" in capsys.readouterr().err

    other = [a if a != "64" else "96" for a in TINY]  # another recipe into the same folder
    assert main([*other, "--data", str(data), "--work", str(work)]) == 2
    assert "from another recipe or split" in capsys.readouterr().err


def test_a_fold_cut_off_part_way_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    """A power cut after epoch 1 of 2: the same command continues at epoch 2, not from scratch."""
    from ultralytics.engine.trainer import BaseTrainer

    from models.training.crossval import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "cv"
    args = [*[a if a != "1" else "2" for a in TINY], "--work", str(work), "--only", "0"]
    save = BaseTrainer.save_model

    def save_then_cut(self):
        save(self)
        raise RuntimeError("power cut")

    monkeypatch.setattr(BaseTrainer, "save_model", save_then_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        main(args)
    weights = work / "fold-0" / "run" / "weights"
    assert (weights / "last.pt").exists() and not (weights / "finished").exists()
    epochs_saved = []

    def count_then_save(self):
        epochs_saved.append(self.epoch)
        save(self)

    monkeypatch.setattr(BaseTrainer, "save_model", count_then_save)
    assert main(args) == 0
    assert epochs_saved == [1]  # only the second epoch (0-based 1) was trained again
    assert (weights / "finished").exists() and (work / "fold-0" / "result.json").exists()
    assert json.loads((work / "cv.json").read_text())["folds_done"] == [0]


def _flat(model):
    import torch

    return torch.cat([p.detach().float().flatten() for p in model.parameters()])


def test_a_restart_continues_from_the_first_cycle_of_the_recipe_without_it(tmp_path, monkeypatch, capsys):
    """--then-epochs with --first-cycles: the first cycle is reused, not retrained, and the restart
    starts from its weights (ultralytics drops a loaded checkpoint's weights if told pretrained=False)."""
    import torch
    from ultralytics.utils import callbacks

    from models.training.crossval import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    first, restart = tmp_path / "cv", tmp_path / "cv-then"
    assert main([*TINY, "--work", str(first), "--only", "0"]) == 0
    first_last = first / "fold-0" / "run" / "weights" / "last.pt"
    trained_at = first_last.stat().st_mtime_ns

    started_from = []
    on_start = callbacks.default_callbacks["on_train_start"]
    monkeypatch.setitem(
        callbacks.default_callbacks, "on_train_start", [*on_start, lambda t: started_from.append(_flat(t.model))]
    )
    assert main([*TINY, "--then-epochs", "1", "--first-cycles", str(first), "--work", str(restart), "--only", "0"]) == 0
    assert first_last.stat().st_mtime_ns == trained_at  # reused, not trained again
    assert not (restart / "fold-0" / "run").exists() and len(started_from) == 1  # one run: the restart
    first_weights = _flat(torch.load(first_last, map_location="cpu", weights_only=False)["model"])
    assert torch.equal(started_from[0], first_weights)  # the restart began at the first cycle's last weights
    result = json.loads((restart / "fold-0" / "result.json").read_text())
    assert result["first_cycle"] == str(first_last)
    assert result["settings"]["then_epochs"] == 1
    assert "then_epochs" not in json.loads((first / "cv.json").read_text())["settings"]  # earlier keys unchanged

    other = [a if a != "64" else "96" for a in TINY]  # first cycles of another recipe: refused
    args = [*other, "--then-epochs", "1", "--first-cycles", str(first), "--work", str(tmp_path / "x"), "--only", "0"]
    capsys.readouterr()
    assert main(args) == 2
    assert "not of this recipe without --then-epochs" in capsys.readouterr().err


def test_rescoring_at_the_same_settings_gives_crossvals_figures_and_another_size_is_exported(tmp_path, monkeypatch):
    """rescore: the folds' own weights, scored again; at crossval's own settings, its own figures."""
    import onnx

    from models.training import crossval, rescore

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "cv"
    data = grouped_data(tmp_path / "data")
    assert crossval.main([*TINY, "--data", str(data), "--work", str(work)]) == 0
    base = ["--cv", str(work / "cv.json"), "--data", str(data)]
    assert rescore.main([*base, "--out", str(tmp_path / "same")]) == 0
    original, same = (json.loads(p.read_text()) for p in (work / "cv.json", tmp_path / "same" / "cv.json"))
    assert same["variants"] == original["variants"]
    # an ensemble of each fold's model with itself is that model: the average is a mean, not a sum
    averaged = ["--average-with", str(work / "cv.json"), "--out", str(tmp_path / "avg")]
    assert rescore.main([*base, *averaged]) == 0
    assert json.loads((tmp_path / "avg" / "cv.json").read_text())["variants"] == original["variants"]
    other_folds = tmp_path / "other-folds.json"  # the same fold models, claimed to be of other folds
    other_folds.write_text(json.dumps({**original, "fold_seed": original["fold_seed"] + 1}))
    assert rescore.main([*base, "--average-with", str(other_folds), "--out", str(tmp_path / "x")]) == 2

    assert rescore.main([*base, "--input-size", "96", "--out", str(tmp_path / "96")]) == 0
    for i in (0, 1):
        graph = onnx.load(str(tmp_path / "96" / f"fold-{i}" / "model-int8.onnx")).graph
        assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim][3] == 96
    rescored = json.loads((tmp_path / "96" / "cv.json").read_text())
    assert rescored["input_size"] == 96 and len(rescored["variants"]["int8"]["folds"]) == 2

    other = tmp_path / "other"
    shutil.copytree(data, other)
    (other / "images" / sorted(p.name for p in (other / "images").iterdir())[0]).unlink()
    coco = json.loads((other / "annotations.json").read_text())
    missing = {p.name for p in (data / "images").iterdir()} - {p.name for p in (other / "images").iterdir()}
    gone = {i["id"] for i in coco["images"] if i["file_name"] in missing}
    coco["images"] = [i for i in coco["images"] if i["id"] not in gone]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in gone]
    (other / "annotations.json").write_text(json.dumps(coco))
    assert rescore.main(["--cv", str(work / "cv.json"), "--data", str(other), "--out", str(tmp_path / "x")]) == 2


def test_a_restart_at_another_size_trains_and_exports_at_that_size(tmp_path, monkeypatch):
    """--then-imgsz: the first cycle learns at --imgsz, the restart at the larger size, and the
    fold's models take the restart's size as input (what they are scored and served at)."""
    import onnxruntime as ort
    from ultralytics.utils import callbacks

    from models.training.crossval import main
    from models.training.train import input_hw

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    sizes = []
    on_start = callbacks.default_callbacks["on_train_start"]
    monkeypatch.setitem(
        callbacks.default_callbacks, "on_train_start", [*on_start, lambda t: sizes.append(t.args.imgsz)]
    )
    work = tmp_path / "cv"
    assert main([*TINY, "--then-epochs", "1", "--then-imgsz", "96", "--work", str(work), "--only", "0"]) == 0
    assert sizes == [64, 96]
    result = json.loads((work / "fold-0" / "result.json").read_text())
    assert result["settings"]["then_imgsz"] == 96
    photo = json.loads((DATA / "annotations.json").read_text())["images"][0]
    for variant in ("fp32", "int8"):
        shape = ort.InferenceSession(str(work / "fold-0" / f"model-{variant}.onnx")).get_inputs()[0].shape
        assert tuple(shape[2:]) == input_hw(96, photo["width"], photo["height"])


def test_vertical_flips_reach_both_cycles_and_are_part_of_the_recipe(tmp_path, monkeypatch, capsys):
    """--flipud: the photos each cycle trains on go through ultralytics' vertical flip at that
    chance, the fold records it, and a first cycle trained without it is not this recipe's."""
    from ultralytics.utils import callbacks

    from models.training.crossval import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)

    def vertical_flip_chance(trainer) -> float | None:
        steps = trainer.train_loader.dataset.transforms.transforms
        found = [s.p for s in steps if type(s).__name__ == "RandomFlip" and s.direction == "vertical"]
        return found[0] if found else None

    chances = []
    on_start = callbacks.default_callbacks["on_train_start"]
    monkeypatch.setitem(
        callbacks.default_callbacks, "on_train_start", [*on_start, lambda t: chances.append(vertical_flip_chance(t))]
    )
    work = tmp_path / "cv-flipud"
    assert main([*TINY, "--flipud", "1", "--then-epochs", "1", "--work", str(work), "--only", "0"]) == 0
    assert chances == [1.0, 1.0]  # the first cycle and the restart
    assert json.loads((work / "fold-0" / "result.json").read_text())["settings"]["flipud"] == 1.0

    plain = tmp_path / "cv"
    assert main([*TINY, "--work", str(plain), "--only", "0"]) == 0
    assert chances[-1] == 0.0
    capsys.readouterr()
    args = [*TINY, "--flipud", "1", "--then-epochs", "1", "--first-cycles", str(plain), "--work", str(tmp_path / "x")]
    assert main([*args, "--only", "0"]) == 2
    assert "not of this recipe without --then-epochs" in capsys.readouterr().err


def test_the_restarts_zoom_range_reaches_the_restart_only_and_reuses_a_plain_first_cycle(tmp_path, monkeypatch, capsys):
    """--then-scale: the restart's photos are zoomed within 1 +/- that range while its first
    cycle keeps ultralytics' own 0.5, so a finished first cycle of the recipe without it is
    reused, and the fold records it."""
    from ultralytics.utils import callbacks

    from models.training.crossval import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)

    def steps(transform):
        """Every step of a pipeline, into the Compose nested in it (the mosaic and its affine)."""
        yield transform
        for inner in getattr(transform, "transforms", None) or []:
            yield from steps(inner)

    def zoom_range(trainer) -> float:
        pipeline = trainer.train_loader.dataset.transforms
        found = {s.scale for s in steps(pipeline) if type(s).__name__ == "RandomPerspective"}
        assert len(found) == 1
        return found.pop()

    ranges = []
    on_start = callbacks.default_callbacks["on_train_start"]
    monkeypatch.setitem(
        callbacks.default_callbacks, "on_train_start", [*on_start, lambda t: ranges.append(zoom_range(t))]
    )
    plain = tmp_path / "cv"
    assert main([*TINY, "--work", str(plain), "--only", "0"]) == 0
    assert ranges == [0.5]
    work = tmp_path / "cv-then-scale"
    restart = ["--then-epochs", "1", "--then-scale", "0.2", "--first-cycles", str(plain)]
    assert main([*TINY, *restart, "--work", str(work), "--only", "0"]) == 0
    assert ranges == [0.5, 0.2]  # only the restart trained here, at its own range
    assert json.loads((work / "fold-0" / "result.json").read_text())["settings"]["then_scale"] == 0.2
    capsys.readouterr()


def test_the_restarts_mosaic_and_learning_rate_reach_the_restart_only(tmp_path, monkeypatch, capsys):
    """--then-close-mosaic and --then-lr0: the restart turns mosaic off for its last N epochs and
    starts AdamW at the rate given, while the first cycle keeps ultralytics' own (mosaic off for
    the last 10, 'auto' choosing AdamW at 0.002 for one class), so a plain first cycle is reused."""
    from ultralytics.utils import callbacks

    from models.training.crossval import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    seen = []

    def trained_with(trainer) -> None:
        rates = {round(g["initial_lr"], 6) for g in trainer.optimizer.param_groups}
        seen.append((trainer.args.close_mosaic, type(trainer.optimizer).__name__, rates))

    on_start = callbacks.default_callbacks["on_train_start"]
    monkeypatch.setitem(callbacks.default_callbacks, "on_train_start", [*on_start, trained_with])
    plain = tmp_path / "cv"
    assert main([*TINY, "--work", str(plain), "--only", "0"]) == 0
    assert seen == [(10, "AdamW", {0.002})]
    work = tmp_path / "cv-then"
    restart = ["--then-epochs", "2", "--then-close-mosaic", "1", "--then-lr0", "0.0005", "--first-cycles", str(plain)]
    assert main([*TINY, *restart, "--work", str(work), "--only", "0"]) == 0
    assert seen[1:] == [(1, "AdamW", {0.0005})]  # only the restart trained here, with its own
    settings = json.loads((work / "fold-0" / "result.json").read_text())["settings"]
    assert (settings["then_close_mosaic"], settings["then_lr0"]) == (1, 0.0005)
    capsys.readouterr()


def test_the_restarts_optimiser_reaches_the_restart_only(tmp_path, monkeypatch, capsys):
    """--then-optimizer SGD: the restart trains with torch's SGD at ultralytics' 0.01 and momentum
    0.937 (Nesterov), while the first cycle keeps 'auto's AdamW, so a plain first cycle is reused."""
    from ultralytics.utils import callbacks

    from models.training.crossval import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    seen = []

    def trained_with(trainer) -> None:
        groups = trainer.optimizer.param_groups
        seen.append(
            (
                type(trainer.optimizer).__name__,
                {round(g["initial_lr"], 6) for g in groups},
                {g.get("momentum", g.get("betas", (None,))[0]) for g in groups},
            )
        )

    on_start = callbacks.default_callbacks["on_train_start"]
    monkeypatch.setitem(callbacks.default_callbacks, "on_train_start", [*on_start, trained_with])
    plain = tmp_path / "cv"
    assert main([*TINY, "--work", str(plain), "--only", "0"]) == 0
    work = tmp_path / "cv-sgd"
    restart = ["--then-epochs", "2", "--then-optimizer", "sgd", "--first-cycles", str(plain)]
    assert main([*TINY, *restart, "--work", str(work), "--only", "0"]) == 0
    assert seen == [("AdamW", {0.002}, {0.9}), ("SGD", {0.01}, {0.937})]
    assert json.loads((work / "fold-0" / "result.json").read_text())["settings"]["then_optimizer"] == "SGD"
    capsys.readouterr()
