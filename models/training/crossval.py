"""K-fold cross-validation of a training recipe, by photograph, scored through the server's decode.

    python -m models.training.crossval --data ../shared/datasets/metal-tags --folds 5 --epochs 130 \\
        --work runs/cv-130

For each fold: train on the other folds for a fixed number of epochs and keep the last
weights (nothing about a fold's model is chosen on its own photos), export to ONNX and
quantise to int8 as the shipped pipeline does, and record every detection on the held-out
photos through defect_server's decode. A fold already done is not retrained, and a fold cut
off part-way resumes from its last epoch, so a long run can span sessions: run the same
command again. A fold done under another int8 recipe (models/training/quantize.py) is
quantised and scored again from its own fp32 export, without retraining.

The summary: per fold and mean +- spread (sample standard deviation over folds) of mAP@0.5
over all detections and P/R/F1 at the shipped threshold; the threshold a recipe should ship
with, chosen as the F1 optimum on the pooled out-of-fold predictions; and, so that choice is
itself scored honestly, each fold's P/R/F1 at the threshold chosen on the *other* folds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from cli_values import non_negative_int, positive_int  # scripts/, on the path via models/training/__init__

from .dataset import DatasetError, Sample, folds_by_photograph, load_coco, write_yolo_dataset
from .evaluate import SERVED
from .scoring import Detection, f1_optimal_threshold, recall_by_length, score

SHIPPED_THRESHOLD, SERVED_IOU = SERVED  # what the site serves now (the model card's): the default to report at
MAP_THRESHOLDS = (0.001, 0.6)
VARIANTS = ("fp32", "int8")
RESULT = "result.json"


def recipe_key(settings: dict, folds: int, fold_seed: int, data: list[Sample]) -> str:
    """What makes two runs comparable: recipe, split and photos. Stored with every fold."""
    photos = sorted(f"{s.path.name}:{len(s.boxes)}" for s in data)
    blob = json.dumps({"settings": settings, "folds": folds, "fold_seed": fold_seed, "photos": photos}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _as_json(found: list[list[Detection]]) -> list[list[list[float]]]:
    return [[[round(c, 5), *(round(float(v), 2) for v in box)] for c, box in photo] for photo in found]


def _from_json(found: list[list[list[float]]]) -> list[list[Detection]]:
    return [[(d[0], np.array(d[1:5])) for d in photo] for photo in found]


RECIPE_STAMP = "recipe-key"


def started_under_another_recipe(fold_dir: Path, key: str) -> str | None:
    """Why this fold must not be (re)started here, or None; stamps the fold with ``key`` otherwise.

    A fold cut off part-way resumes from its checkpoint, which carries the arguments it was
    started with (ultralytics' resume): under a changed recipe that would train one recipe and
    record it as another. Each fold folder is stamped with its recipe key before training.
    """
    stamp = fold_dir / RECIPE_STAMP
    if stamp.is_file():
        started = stamp.read_text().strip()
        if started != key:
            return (
                f"{fold_dir} was started with another recipe or split (key {started}, now {key}); "
                "its checkpoint would resume the old one: use another --work, or the old arguments"
            )
        return None
    if (fold_dir / "run").exists():
        return f"{fold_dir} holds a training run of an unknown recipe: use another --work"
    fold_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key + "\n")
    return None


def predictions_of(
    model: Path,
    test_set: list[Sample],
    served_iou: float = SERVED_IOU,
    flip: bool = False,
    average_with: tuple[Path, ...] = (),
) -> dict:
    """One variant's detections on the held-out photos: at the served NMS, and at mAP's.

    With ``average_with``, those models' raw outputs are averaged with this one's, anchor by
    anchor, before the one decode (an ensemble; evaluation only, not served).
    """
    from .evaluate import AveragedDetector, load_detector, offline_predictions

    det = load_detector(model, flip=flip)
    if average_with:
        det = AveragedDetector([det, *(load_detector(m, flip=flip) for m in average_with)])
    return {
        "served_nms": _as_json(offline_predictions(det, test_set, MAP_THRESHOLDS[0], served_iou)),
        "map_nms": _as_json(offline_predictions(det, test_set, *MAP_THRESHOLDS)),
    }


def quantize_fold(train_set: list[Sample], work: Path) -> Path:
    """The fold's int8 model, quantised from its fp32 export as the shipped one is (calibrated on training photos)."""
    from .quantize import quantize

    return quantize(work / "model-fp32.onnx", work / "model-int8.onnx", [s.path for s in train_set], work / "quant")


def finished_first_cycle(first_cycles: Path, index: int, key: str) -> Path:
    """Fold ``index``'s finished first cycle in another crossval --work, checked to be of ``key``.

    A recipe with a restart (``--then-epochs``) trains its first cycle exactly as the recipe
    without it does, on the same folds: that run's last weights are reused, not trained again.
    """
    fold_dir = first_cycles / f"fold-{index}"
    stamp = fold_dir / RECIPE_STAMP
    if not stamp.is_file() or stamp.read_text().strip() != key:
        raise DatasetError(
            f"--first-cycles {first_cycles}: fold {index} is not of this recipe without --then-epochs on "
            f"these folds and photos (key {key})"
        )
    from .train import finished_weights

    weights = finished_weights(fold_dir / "run")
    if weights is None:
        raise DatasetError(f"--first-cycles {first_cycles}: fold {index} has not finished training")
    return weights


def run_fold(
    index: int,
    train_set: list[Sample],
    test_set: list[Sample],
    names: list[str],
    settings,
    work: Path,
    key: str,
    first_cycle: Path | None = None,
) -> dict:
    """Train, export, quantise and predict one fold; the result is written to ``work/result.json``."""
    from .quantize import RECIPE
    from .train import export_onnx, input_hw, train

    started = time.monotonic()
    # ultralytics validates once after the last epoch (its log only): give it a few training
    # photos, so nothing in the training process ever reads the held-out fold.
    data_yaml = write_yolo_dataset(train_set, train_set[:8], names, work / "dataset")
    weights = train(data_yaml, work, settings, checkpoint="last", validate=False, resume=True, first_cycle=first_cycle)
    trained = time.monotonic()
    hw = input_hw(settings.export_imgsz, train_set[0].width, train_set[0].height)
    fp32 = export_onnx(weights, work / "model-fp32.onnx", hw)
    int8 = quantize_fold(train_set, work)
    result = {
        "fold": index,
        "key": key,
        "settings": settings.recorded(),
        "quantization": RECIPE,
        "train_images": len(train_set),
        "test_images": [s.path.name for s in test_set],
        "train_seconds": round(trained - started, 1),
        **({"first_cycle": str(first_cycle)} if first_cycle else {}),
        "predictions": {
            name: predictions_of(path, test_set) for name, path in zip(VARIANTS, (fp32, int8), strict=True)
        },
    }
    (work / RESULT).write_text(json.dumps(result) + "\n")
    return result


def requantize_fold(result: dict, train_set: list[Sample], test_set: list[Sample], work: Path) -> dict:
    """A fold done under another int8 recipe: quantised again from its own fp32 export, not retrained.

    The quantisation is applied after training, so a changed recipe (7-bit weights, since the
    8-bit ones saturated on CPUs without VNNI) needs only the int8 model made and scored again.
    """
    from .quantize import RECIPE

    result = {**result, "quantization": RECIPE}
    result["predictions"] = {**result["predictions"], "int8": predictions_of(quantize_fold(train_set, work), test_set)}
    (work / RESULT).write_text(json.dumps(result) + "\n")
    return result


def fold_figures(result: dict, truths: list[np.ndarray], variant: str, threshold: float) -> dict:
    p = result["predictions"][variant]
    at = score(_from_json(p["served_nms"]), truths, threshold)
    everything = score(_from_json(p["map_nms"]), truths, MAP_THRESHOLDS[0])
    return {**asdict(at), "map50": everything.map50}


def spread(values: list[float]) -> dict:
    """Mean and sample standard deviation over folds, and the range."""
    return {
        "mean": round(statistics.fmean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarise(results: list[dict], truths_by_name: dict[str, np.ndarray], threshold: float = SHIPPED_THRESHOLD) -> dict:
    """Per-fold figures at ``threshold``, mean and spread, and the threshold chosen on out-of-fold predictions."""
    summary: dict = {"variants": {}}
    for variant in VARIANTS:
        per_fold_found, per_fold_truth = [], []
        for r in results:
            per_fold_found.append(_from_json(r["predictions"][variant]["served_nms"]))
            per_fold_truth.append([truths_by_name[n] for n in r["test_images"]])
        pooled_found = [f for fold in per_fold_found for f in fold]
        pooled_truth = [t for fold in per_fold_truth for t in fold]
        chosen = f1_optimal_threshold(pooled_found, pooled_truth)
        folds = []
        for i, r in enumerate(results):
            truths = per_fold_truth[i]
            shipped = fold_figures(r, truths, variant, threshold)
            # The threshold-choosing procedure, scored honestly: chosen without this fold.
            others_found = [f for j, fold in enumerate(per_fold_found) if j != i for f in fold]
            others_truth = [t for j, fold in enumerate(per_fold_truth) if j != i for t in fold]
            nested = f1_optimal_threshold(others_found, others_truth) if len(results) > 1 else chosen
            at_nested = score(per_fold_found[i], truths, nested)
            folds.append(
                {
                    "fold": r["fold"],
                    "images": len(truths),
                    "shipped_threshold": shipped,
                    "threshold_chosen_without_this_fold": round(nested, 4),
                    "at_that_threshold": asdict(at_nested),
                }
            )

        summary["variants"][variant] = {
            "folds": folds,
            "map50": spread([f["shipped_threshold"]["map50"] for f in folds]),
            f"at_{threshold:g}": {
                k: spread([f["shipped_threshold"][k] for f in folds]) for k in ("precision", "recall", "f1")
            },
            "at_threshold_chosen_without_the_fold": {
                k: spread([f["at_that_threshold"][k] for f in folds]) for k in ("precision", "recall", "f1")
            },
            "chosen_threshold": {
                "rule": "F1 optimum (>= 0.05) on the pooled out-of-fold predictions of all folds",
                "threshold": round(chosen, 4),
                "pooled": asdict(score(pooled_found, pooled_truth, chosen)),
            },
            # Every fold's held-out photos together, at the reported threshold: per photo (a tag
            # flagged or not) and by the scratch's length.
            "pooled_at_threshold": asdict(score(pooled_found, pooled_truth, threshold)),
            "recall_by_scratch_length": recall_by_length(pooled_found, pooled_truth, threshold),
            "pooled_by_threshold": {
                f"{t:g}": asdict(score(pooled_found, pooled_truth, t)) for t in (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
            },
        }
    return summary


def table(summary: dict, command: str) -> str:
    lines = [f"cross-validation by photograph: {command}", ""]
    t = f"{summary['threshold']:g}"
    for variant, v in summary["variants"].items():
        lines.append(f"{variant}: fold  images  mAP@0.5   P@{t}   R@{t}  F1@{t}   thr*   P@thr*  R@thr* F1@thr*")
        for f in v["folds"]:
            s, n = f["shipped_threshold"], f["at_that_threshold"]
            lines.append(
                f"      {f['fold']:>4}  {f['images']:>6}  {s['map50']:7.3f}  {s['precision']:6.3f}  "
                f"{s['recall']:6.3f}  {s['f1']:6.3f}  {f['threshold_chosen_without_this_fold']:5.3f}  "
                f"{n['precision']:6.3f}  {n['recall']:6.3f}  {n['f1']:6.3f}"
            )
        a, b, m = v[f"at_{t}"], v["at_threshold_chosen_without_the_fold"], v["map50"]
        lines.append(
            f"      mean±sd       {m['mean']:.3f}±{m['sd']:.3f} "
            f"P {a['precision']['mean']:.3f}±{a['precision']['sd']:.3f} R {a['recall']['mean']:.3f}±"
            f"{a['recall']['sd']:.3f} F1 {a['f1']['mean']:.3f}±{a['f1']['sd']:.3f} | thr*: P "
            f"{b['precision']['mean']:.3f} R {b['recall']['mean']:.3f} F1 {b['f1']['mean']:.3f}±{b['f1']['sd']:.3f}"
        )
        c = v["chosen_threshold"]
        lines.append(
            f"      threshold to ship (F1 optimum, pooled out-of-fold): {c['threshold']:.3f} -> pooled P "
            f"{c['pooled']['precision']:.3f} R {c['pooled']['recall']:.3f} F1 {c['pooled']['f1']:.3f}"
        )
        lines.append(f"      pooled at {t}: {photo_line(v['pooled_at_threshold'])}")
        bands = ", ".join(
            f"{b['longer_side_px']} px {b['found']}/{b['labelled']}" for b in v["recall_by_scratch_length"]
        )
        lines.append(f"      scratches found by longer side: {bands}")
        lines.append("")
    lines.append("thr*: the F1-optimal threshold chosen on the other folds' out-of-fold predictions")
    return "\n".join(lines)


def photo_line(f: dict) -> str:
    """Per photo, as a line that rejects a tag on any report sees it (a Figures dict)."""
    missed = f["labelled"] - f["true_positives"]
    return (
        f"photos with a scratch flagged {f['flagged']}/{f['photos_with_scratches']}, clean photos flagged "
        f"{f['clean_flagged']}/{f['clean_photos']}; missed scratches at least half inside a reported box "
        f"{f['missed_covered']}/{missed}"
    )


def threshold_rule(text: str) -> float | str:
    """``--threshold``: a number in (0, 1), or ``f1:<variant>`` (the variant whose F1 optimum to ship)."""
    if text.startswith("f1:"):
        if text[3:] not in VARIANTS:
            raise ValueError(f"--threshold {text}: the variant is one of {', '.join(VARIANTS)}")
        return text[3:]
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--threshold {text}: expected a number or f1:fp32 / f1:int8") from None
    if not 0 < value < 1:
        raise ValueError(f"--threshold {text}: must be between 0 and 1")
    return value


def read_summary(path: Path, option: str = "--cv") -> dict:
    """A finished crossval summary (the cv.json in its --work), read for ``--cv``: refused with one
    line (DatasetError, naming ``option``) when it is unreadable, not a summary, or has folds missing."""
    try:
        cv = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{option} {path}: cannot read it as a crossval summary ({exc})") from exc
    needed = {"settings", "key", "folds", "fold_seed", "folds_done", "threshold"}
    if not isinstance(cv, dict) or not needed <= cv.keys():
        raise DatasetError(f"{option} {path}: not a crossval summary (cv.json written by models.training.crossval)")
    if len(cv["folds_done"]) != cv["folds"]:
        raise DatasetError(f"{option} {path}: only folds {cv['folds_done']} of {cv['folds']} are done")
    return cv


NOT_THE_RECIPE = ("--only", "--first-cycles")


def reproducing_command(argv: list[str]) -> str:
    """The command for the whole run: --only picks which folds run now and --first-cycles reuses
    finished first cycles of the same recipe; neither changes what is computed, so both are left out
    (from a clean clone, the command trains the first cycles too)."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith(tuple(f"{o}=" for o in NOT_THE_RECIPE)):
            skip = False
            continue
        if arg in NOT_THE_RECIPE:
            skip = True
            continue
        kept.append(arg)
    return "python -m models.training.crossval " + " ".join(kept)


def main(argv: list[str] | None = None) -> int:
    from .train import add_recipe_options, folder_problem, recipe_from

    p = argparse.ArgumentParser(prog="python -m models.training.crossval", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="COCO data set: annotations.json + images/")
    p.add_argument("--work", type=Path, default=Path("runs/cv"), help="folds, weights and results (resumable)")
    p.add_argument("--folds", type=positive_int, default=5)
    p.add_argument("--fold-seed", type=non_negative_int, default=0, help="seed of the photograph-to-fold assignment")
    p.add_argument(
        "--only", type=non_negative_int, action="append", help="run only this fold (repeatable); summary of done ones"
    )
    add_recipe_options(p)
    p.add_argument(
        "--first-cycles",
        type=Path,
        help="with --then-epochs: a finished crossval --work of this recipe without the restart (same folds and "
        "photos), whose folds' last weights the restart starts from instead of training them again",
    )
    p.add_argument("--limit", type=non_negative_int, default=0, help="use only this many photos (smoke test)")
    p.add_argument(
        "--threshold",
        default=str(SHIPPED_THRESHOLD),
        metavar="T|f1:VARIANT",
        help="the serving confidence threshold to report P/R/F1 at: a number, or f1:fp32 / f1:int8 for that "
        "variant's F1 optimum on the pooled out-of-fold predictions, rounded down to 0.01 (summary only)",
    )
    args = p.parse_args(argv)
    try:
        rule = threshold_rule(args.threshold)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    try:
        folder_problem(args.work, "--work")
        if any(i >= args.folds for i in args.only or ()):
            raise DatasetError(f"--only {max(args.only)}: folds are numbered 0 to {args.folds - 1}")
        samples, names = load_coco(args.data)
        if args.limit:
            samples = samples[: args.limit]
        folds = folds_by_photograph(samples, args.folds, args.fold_seed)
        if args.first_cycles is not None and not args.then_epochs:
            raise DatasetError("--first-cycles: only with --then-epochs (it is where the restart starts from)")
        settings = recipe_from(args)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    key = recipe_key(settings.recorded(), args.folds, args.fold_seed, samples)
    command = reproducing_command(argv if argv is not None else sys.argv[1:])
    results = []
    for i, test_set in enumerate(folds):
        fold_dir = args.work / f"fold-{i}"
        done = fold_dir / RESULT
        if done.exists():
            result = json.loads(done.read_text())
            if result["key"] != key:
                print(f"error: {done} is from another recipe or split; use another --work", file=sys.stderr)
                return 2
            print(f"fold {i}: done before, not retrained", file=sys.stderr)
            from .quantize import RECIPE

            if result.get("quantization") != RECIPE:
                print(f"fold {i}: quantised by another int8 recipe: quantising its fp32 model again", file=sys.stderr)
                train_set = [s for j, f in enumerate(folds) if j != i for s in f]
                result = requantize_fold(result, train_set, test_set, fold_dir)
        elif args.only and i not in args.only:
            continue
        else:
            mixed = started_under_another_recipe(fold_dir, key)
            if mixed:
                print(f"error: {mixed}", file=sys.stderr)
                return 2
            first_cycle = None
            if args.first_cycles is not None:
                first_key = recipe_key(settings.first_cycle().recorded(), args.folds, args.fold_seed, samples)
                try:
                    first_cycle = finished_first_cycle(args.first_cycles, i, first_key)
                except DatasetError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
            train_set = [s for j, f in enumerate(folds) if j != i for s in f]
            print(f"fold {i}: training on {len(train_set)} photos, testing on {len(test_set)}", file=sys.stderr)
            result = run_fold(i, train_set, test_set, names, settings, fold_dir, key, first_cycle)
        results.append(result)
    if not results:
        print("no fold done yet", file=sys.stderr)
        return 1
    truths = {
        s.path.name: np.array([[b.left, b.top, b.left + b.width, b.top + b.height] for b in s.boxes]).reshape(-1, 4)
        for s in samples
    }
    if isinstance(rule, str):  # the F1 optimum of that variant, rounded down (a little more recall)
        optimum = summarise(results, truths)["variants"][rule]["chosen_threshold"]["threshold"]
        threshold = math.floor(round(optimum * 100, 6)) / 100  # round first: 0.29 * 100 is 28.999...
        how = f"the F1 optimum of {rule} on the pooled out-of-fold predictions ({optimum}), rounded down to 0.01"
    else:
        threshold, how = rule, "given with --threshold"
    summary = {
        "command": command,
        "key": key,
        "settings": settings.recorded(),
        "folds": args.folds,
        "fold_seed": args.fold_seed,
        "threshold": threshold,
        "threshold_rule": how,
        "folds_done": [r["fold"] for r in results],
        "train_seconds": [r["train_seconds"] for r in results],
        **summarise(results, truths, threshold),
    }
    (args.work / "cv.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary, command))
    if len(results) < args.folds:
        print(f"\n{len(results)} of {args.folds} folds done: run the same command again to finish", file=sys.stderr)
    print(f"wrote {args.work / 'cv.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
