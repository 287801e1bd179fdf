"""A finished cross-validation scored again at other serving settings, without retraining.

    python -m models.training.rescore --cv runs/cv-e130-384-k3/cv.json \\
        --data ../shared/datasets/metal-tags --input-size 448 --out runs/rescore-448

Two levers act after training: the input size the weights are exported at (more pixels on a
short scratch, more compute per photo) and the served NMS IoU. Each fold's last weights are
exported at ``--input-size`` (needs PyTorch) and quantised with the shipped int8 recipe on
that fold's training photos; without it, the fold's own ONNX files are used. Every fold is
then scored on its own held-out photos, at the cross-validation's threshold, and summarised
as crossval summarises. Nothing is chosen on the held-out photos: a lever is kept only if a
user would pick it for all folds at once. ``--flip`` (test-time mirroring) and
``--average-with`` (an ensemble with another crossval's fold models of the same folds) price
levers that would cost the served model twice its compute. ``--soup-with`` (other restarts of
the same first cycles, their weights averaged with these fold by fold: ``soup.py``) costs one
model's compute.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli_values import probability  # scripts/, on the path via models/training/__init__

from .crossval import SERVED_IOU, VARIANTS, predictions_of, read_summary, recipe_key, summarise, table
from .dataset import DatasetError, Sample, folds_by_photograph, load_coco
from .evaluate import truth_boxes
from .soup import restarted_from, soup_weights
from .train import TrainSettings


def fold_weights(fold_dir: Path, settings: dict) -> Path:
    """The weights the fold's models were exported from: its restart's, if the recipe has one."""
    from .train import finished_weights

    run = fold_dir / ("run-then" if settings.get("then_epochs") else "run")
    weights = finished_weights(run)
    if weights is None:
        raise DatasetError(f"{run}: no finished training run (its weights are what is exported again)")
    return weights


def rescore_fold(
    index: int,
    work: Path,
    train_set: list[Sample],
    test_set: list[Sample],
    settings: dict,
    size,
    out: Path,
    iou,
    flip: bool = False,
    partner: Path | None = None,
    soup: tuple[tuple[Path, dict], ...] = (),
) -> dict:
    """One fold's predictions at the new settings, in crossval's result layout. ``soup``: other
    crossvals' work folders and settings, whose fold weights are averaged with this one's."""
    fold_dir = work / f"fold-{index}"
    if size or soup:
        from .quantize import quantize
        from .train import export_onnx, input_hw

        weights = fold_weights(fold_dir, settings)
        if soup:
            ingredients = [weights, *(fold_weights(w / f"fold-{index}", s) for w, s in soup)]
            weights = soup_weights(ingredients, out / "soup.pt")
        size = size or TrainSettings(**settings).export_imgsz
        hw = input_hw(size, train_set[0].width, train_set[0].height)
        fp32 = export_onnx(weights, out / "model-fp32.onnx", hw)
        int8 = quantize(fp32, out / "model-int8.onnx", [s.path for s in train_set], out / "quant")
        models = {"fp32": fp32, "int8": int8}
    else:
        models = {v: fold_dir / f"model-{v}.onnx" for v in VARIANTS}
    also = {v: (partner / f"fold-{index}" / f"model-{v}.onnx",) if partner else () for v in VARIANTS}
    return {
        "fold": index,
        "test_images": [s.path.name for s in test_set],
        "predictions": {v: predictions_of(models[v], test_set, iou, flip, also[v]) for v in VARIANTS},
    }


def same_folds(option: str, path: Path, other: dict, cv: dict, samples: list[Sample]) -> None:
    """Refuse (DatasetError, one line naming ``option``) another finished crossval (``other``,
    read from ``path``) whose folds hold other photos than ``cv``'s."""
    if (other["folds"], other["fold_seed"]) != (cv["folds"], cv["fold_seed"]):
        raise DatasetError(
            f"{option} {path}: {other['folds']} folds of fold seed {other['fold_seed']}, "
            f"not the {cv['folds']} of fold seed {cv['fold_seed']} of --cv: its folds hold other photos"
        )
    if recipe_key(other["settings"], other["folds"], other["fold_seed"], samples) != other["key"]:
        raise DatasetError(f"{option} {path}: cross-validated on other photos than --data")


def averaging_partner(path: Path, other: dict, cv: dict, samples: list[Sample]) -> Path:
    """--average-with: another finished crossval (``other``, read from ``path``) of the same photos
    and folds, whose fold models are averaged with these; its work folder. One line
    (DatasetError) otherwise."""
    same_folds("--average-with", path, other, cv, samples)
    missing = [
        str(m)
        for i in range(cv["folds"])
        for v in VARIANTS
        if not (m := path.parent / f"fold-{i}" / f"model-{v}.onnx").is_file()
    ]
    if missing:
        raise DatasetError(f"--average-with {path}: fold models missing: {', '.join(missing)}")
    return path.parent


def soup_ingredient(path: Path, other: dict, cv: dict, cv_path: Path, samples: list[Sample]) -> tuple[Path, dict]:
    """--soup-with: another finished crossval (``other``, read from ``path``) whose every fold
    restarted from the very first-cycle weights ``cv``'s fold did (weights averaged across other
    starting points need not make a model); its work folder and settings. One line
    (DatasetError) otherwise."""
    same_folds("--soup-with", path, other, cv, samples)
    for name, summary in ((path, other), (cv_path, cv)):
        if not summary["settings"].get("then_epochs"):
            raise DatasetError(f"--soup-with: {name} has no restart (--then-epochs); a soup averages restarts")
    for i in range(cv["folds"]):
        ours, theirs = (p.parent / f"fold-{i}" / "run-then" for p in (cv_path, path))
        if restarted_from(ours) != restarted_from(theirs):
            raise DatasetError(
                f"--soup-with {path}: fold {i} restarted from {restarted_from(theirs)}, "
                f"not from {restarted_from(ours)} as --cv's did; only restarts of one first cycle are averaged"
            )
    return path.parent, other["settings"]


def main(argv: list[str] | None = None) -> int:
    from .train import folder_problem, image_size

    p = argparse.ArgumentParser(prog="python -m models.training.rescore", description=__doc__.splitlines()[0])
    p.add_argument("--cv", type=Path, required=True, help="the cv.json of a finished crossval run (its --work)")
    p.add_argument("--data", type=Path, required=True, help="the photos it was cross-validated on")
    p.add_argument("--out", type=Path, required=True, help="where the re-exported models and the summary go")
    p.add_argument("--input-size", type=image_size, help="export each fold's weights at this size (longer side)")
    p.add_argument("--nms-iou", type=probability, default=SERVED_IOU, help=f"served NMS IoU (default {SERVED_IOU})")
    p.add_argument(
        "--flip",
        action="store_true",
        help="test-time augmentation: also run each photo mirrored and merge both passes' boxes by NMS",
    )
    p.add_argument(
        "--average-with",
        type=Path,
        metavar="CV",
        help="an ensemble: another crossval's cv.json of the same photos and folds, whose fold models' "
        "raw outputs are averaged with these before the decode (e.g. the first cycle of a restart)",
    )
    p.add_argument(
        "--soup-with",
        type=Path,
        nargs="+",
        default=[],
        metavar="CV",
        help="a model soup: other crossvals' cv.json whose folds restarted from the same first cycles "
        "as --cv's; each fold's restart weights are averaged with theirs, then exported and quantised",
    )
    args = p.parse_args(argv)
    try:
        folder_problem(args.out, "--out")
        if args.average_with and args.input_size:
            raise DatasetError("--average-with: the folds' own models only, not with --input-size")
        if args.average_with and args.soup_with:
            raise DatasetError("--average-with: the folds' own models only, not with --soup-with")
        cv = read_summary(args.cv)
        other = read_summary(args.average_with, "--average-with") if args.average_with else None
        ingredients = [(path, read_summary(path, "--soup-with")) for path in args.soup_with]
        samples, _ = load_coco(args.data)
        if recipe_key(cv["settings"], cv["folds"], cv["fold_seed"], samples) != cv["key"]:
            raise DatasetError(f"--data {args.data}: not the photos {args.cv} was cross-validated on")
        partner = averaging_partner(args.average_with, other, cv, samples) if other else None
        soup = tuple(soup_ingredient(path, summary, cv, args.cv, samples) for path, summary in ingredients)
        folds = folds_by_photograph(samples, cv["folds"], cv["fold_seed"])
        work = args.cv.parent
        results = []
        for i, test_set in enumerate(folds):
            train_set = [s for j, f in enumerate(folds) if j != i for s in f]
            out = args.out / f"fold-{i}"
            out.mkdir(parents=True, exist_ok=True)
            print(f"fold {i}: scoring {len(test_set)} held-out photos", file=sys.stderr)
            size, iou = args.input_size, args.nms_iou
            settings, flip = cv["settings"], args.flip
            results.append(rescore_fold(i, work, train_set, test_set, settings, size, out, iou, flip, partner, soup))
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    truths = {s.path.name: truth_boxes(s) for s in samples}
    summary = {
        "rescored": str(args.cv),
        "command": "python -m models.training.rescore " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": cv["settings"],
        "input_size": args.input_size or TrainSettings(**cv["settings"]).export_imgsz,
        "nms_iou": args.nms_iou,
        "flip": args.flip,
        "average_with": str(args.average_with) if args.average_with else None,
        "soup_with": [str(path) for path in args.soup_with],
        "threshold": cv["threshold"],
        **summarise(results, truths, cv["threshold"]),
    }
    (args.out / "cv.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary, summary["command"]))
    print(f"wrote {args.out / 'cv.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
