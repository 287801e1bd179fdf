"""Scoring (matching, P/R/F1, AP, threshold choice), folds by photograph, and the evaluate CLI's errors.

No PyTorch, no onnxruntime: this is what a plant PC runs to score its endpoint.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from models.training.dataset import Box, Sample, folds_by_photograph
from models.training.scoring import average_precision, f1_optimal_threshold, match, recall_by_length, score

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "tests" / "data" / "metal-tags"
SCRATCH = np.array([[10.0, 10.0, 50.0, 30.0]])


def det(conf: float, x1: float, y1: float, x2: float, y2: float):
    return conf, np.array([x1, y1, x2, y2])


# --- scoring ---------------------------------------------------------------------------


def test_a_second_detection_of_one_scratch_is_a_false_alarm():
    matches = match([det(0.6, 11, 10, 50, 30), det(0.9, 10, 10, 50, 30)], SCRATCH)
    assert matches == [(0.9, True), (0.6, False)]


def test_a_box_overlapping_less_than_half_is_a_miss_and_a_false_alarm():
    figures = score([[det(0.9, 30, 10, 70, 30)]], [SCRATCH], 0.25)  # IoU 20/60 = 0.33
    assert (figures.true_positives, figures.false_positives, figures.missed) == (0, 1, 1)
    assert figures.precision == 0 and figures.recall == 0 and figures.f1 == 0


def test_figures_at_a_threshold_and_map_over_everything():
    truths = [SCRATCH, np.array([[0.0, 0, 20, 20], [100, 100, 140, 120]]), np.zeros((0, 4))]
    found = [
        [det(0.9, 10, 10, 50, 30)],  # hit
        [det(0.8, 0, 0, 20, 20), det(0.1, 100, 100, 140, 120)],  # hit; a hit below the threshold
        [det(0.5, 5, 5, 25, 25)],  # a false alarm on a clean photo
    ]
    f = score(found, truths, 0.25)
    assert (f.images, f.labelled, f.true_positives, f.false_positives) == (3, 3, 2, 1)
    assert (f.precision, f.recall, f.f1) == (round(2 / 3, 4), round(2 / 3, 4), round(2 / 3, 4))
    # ranked: hit, hit, false alarm, hit -> AP = 1/3*1 + 1/3*1 + 1/3*(3/4)
    assert f.map50 == round(1 / 3 + 1 / 3 + 0.25, 4)


def test_per_photo_a_tag_is_flagged_by_any_report_and_one_box_round_two_scratches_covers_both():
    two = np.array([[10.0, 10, 50, 20], [10, 25, 50, 35]])  # two parallel scratches
    truths = [two, SCRATCH, np.zeros((0, 4)), np.zeros((0, 4)), SCRATCH]
    found = [
        [det(0.9, 8, 8, 52, 37)],  # one box round both: IoU 0.31 with each, so two misses
        [det(0.1, 10, 10, 50, 30)],  # only below the threshold: not flagged
        [det(0.6, 0, 0, 5, 5)],  # a clean photo flagged
        [],
        [det(0.9, 10, 10, 50, 30)],  # found
    ]
    f = score(found, truths, 0.25)
    assert (f.true_positives, f.missed, f.false_positives) == (1, 3, 2)
    assert (f.photos_with_scratches, f.flagged) == (3, 2)
    assert (f.clean_photos, f.clean_flagged) == (2, 1)
    assert f.missed_covered == 2  # the two scratches inside the one box; the unflagged one is not covered


def test_a_box_covering_under_half_of_a_missed_scratch_does_not_cover_it():
    f = score([[det(0.9, 30, 10, 70, 30)]], [SCRATCH], 0.25)  # 20 of the scratch's 40 px width: exactly half
    assert f.missed_covered == 1
    f = score([[det(0.9, 31, 10, 70, 30)]], [SCRATCH], 0.25)  # 19 of 40
    assert f.missed_covered == 0


def test_recall_by_the_scratchs_longer_side():
    truths = [np.array([[0.0, 0, 30, 10], [0, 50, 10, 130], [100, 0, 300, 40]])]  # 30, 80 and 200 px long
    found = [[det(0.9, 0, 0, 30, 10), det(0.9, 100, 0, 300, 40), det(0.1, 0, 50, 10, 130)]]
    bands = recall_by_length(found, truths, 0.25)
    assert [(b["longer_side_px"], b["labelled"], b["found"]) for b in bands] == [
        ("0-60", 1, 1),
        ("60-120", 1, 0),
        (">=120", 1, 1),
    ]
    assert [b["recall"] for b in recall_by_length([[]], [np.zeros((0, 4))], 0.25)] == [None, None, None]


def test_perfect_detections_have_ap_one_and_none_have_ap_zero():
    assert average_precision([(0.9, True), (0.8, True)], 2) == 1.0
    assert average_precision([], 2) == 0.0
    assert score([[]], [SCRATCH], 0.25).precision == 1.0  # claimed nothing, so nothing wrongly


def test_the_f1_optimal_threshold_drops_the_false_alarms_above_the_misses():
    truths = [np.array([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])]
    found = [[det(0.9, 0, 0, 10, 10), det(0.7, 20, 20, 30, 30), det(0.3, 60, 60, 70, 70), det(0.2, 40, 40, 50, 50)]]
    # at 0.7: P 1, R 2/3, F1 0.8; at 0.2: P 3/4, R 1, F1 0.857 -> 0.2
    assert f1_optimal_threshold(found, truths) == pytest.approx(0.2)
    found[0].append(det(0.15, 80, 80, 90, 90))
    found[0].append(det(0.12, 85, 80, 95, 90))
    assert f1_optimal_threshold(found, truths) == pytest.approx(0.2)  # lower adds only false alarms


# --- folds -------------------------------------------------------------------------------


def photo_set(n_photos: int = 48) -> list[Sample]:
    crops = ("left-top", "left-bottom", "right-top", "right-bottom")
    out = []
    for p in range(n_photos):
        for c in crops[: 3 if p % 11 == 0 else 4]:
            out.append(Sample(Path(f"image-{p:03d}-cropped-{c}.jpg"), 450, 300, (Box(1, 1, 5, 5),)))
    return out


def test_every_photograph_is_in_exactly_one_fold_with_all_its_crops():
    samples = photo_set()
    folds = folds_by_photograph(samples, 5, seed=0)
    assert sorted(s.path.name for f in folds for s in f) == sorted(s.path.name for s in samples)
    where = {}
    for i, fold in enumerate(folds):
        for s in fold:
            assert where.setdefault(s.photograph, i) == i, f"{s.photograph} split across folds"
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 4, sizes


# Real names of the data set (../shared/datasets/metal-tags), grouped by hand: which files are
# one photograph is written here, not computed by the code under test. The uncropped X.jpg
# beside its crops is how a labelling export names the original.
PHOTOGRAPHS = {
    "image-2020-04-22-10-15-03-04": [
        "image-2020-04-22-10-15-03-04-cropped-left-bottom.jpg",
        "image-2020-04-22-10-15-03-04-cropped-left-top.jpg",
        "image-2020-04-22-10-15-03-04-cropped-right-bottom.jpg",
        "image-2020-04-22-10-15-03-04.jpg",
    ],
    "image-2020-04-22-10-51-51-85": [
        "image-2020-04-22-10-51-51-85-cropped-left-bottom.jpg",
        "image-2020-04-22-10-51-51-85-cropped-right-top.jpg",
        "image-2020-04-22-10-51-51-85.JPG",
    ],
    "image-2020-04-22-10-52-17-28": ["image-2020-04-22-10-52-17-28-cropped-left-top.jpg"],
    "image-2020-04-22-10-52-30-17": [
        "image-2020-04-22-10-52-30-17.png",
        "image-2020-04-22-10-52-30-17-cropped-right-bottom.jpg",
    ],
}


def test_the_crops_and_the_uncropped_original_of_a_photograph_are_never_split():
    samples = [Sample(Path(n), 450, 300, ()) for names in PHOTOGRAPHS.values() for n in names]
    for seed in range(10):
        for k in (2, 3, 4):
            folds = folds_by_photograph(samples, k, seed)
            fold_of = {s.path.name: i for i, fold in enumerate(folds) for s in fold}
            for photograph, names in PHOTOGRAPHS.items():
                assert len({fold_of[n] for n in names}) == 1, (photograph, seed, k, fold_of)


def test_folds_are_reproducible_and_the_seed_changes_them():
    samples = photo_set()
    names = lambda folds: [[s.path.name for s in f] for f in folds]  # noqa: E731
    assert names(folds_by_photograph(samples, 5, 0)) == names(folds_by_photograph(samples, 5, 0))
    assert names(folds_by_photograph(samples, 5, 0)) != names(folds_by_photograph(samples, 5, 1))


def test_more_folds_than_photographs_is_refused():
    with pytest.raises(ValueError, match="--folds 9: needs 2 to 2"):
        folds_by_photograph(photo_set(2), 9, 0)


@pytest.mark.parametrize(
    "text, words",
    [
        ("f1:fp16", "--threshold f1:fp16: the variant is one of fp32, int8"),
        ("high", "--threshold high: expected a number or f1:fp32 / f1:int8"),
        ("1.5", "--threshold 1.5: must be between 0 and 1"),
    ],
)
def test_a_threshold_to_ship_that_means_nothing_is_refused_before_any_training(text, words, capsys):
    from models.training.crossval import main

    assert main(["--data", "no-such-folder", "--threshold", text]) == 2
    assert capsys.readouterr().err.strip() == f"error: {words}"


# --- the evaluate CLI, without onnxruntime, Pillow, PyYAML or PyTorch ------------------

# Importing any of these fails in the child: the endpoint form must not need them.
BLOCK = "import sys\nfor m in ('torch', 'onnxruntime', 'PIL', 'yaml', 'ultralytics'): sys.modules[m] = None\n"


def evaluate_cli(*args: str) -> subprocess.CompletedProcess:
    code = BLOCK + "import runpy\nrunpy.run_module('models.training.evaluate', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_clear_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for w in words:
        assert w in result.stderr, result.stderr


@pytest.mark.parametrize(
    "url, words",
    [
        ("node:31380/model/scratch/api/v0.1/predictions", ["must be http(s)://"]),
        ("ftp://node/model/scratch/api/v0.1/predictions", ["must be http(s)://"]),
        ("http://node:31380/model/scratch", ["must end in /api/v0.1/predictions"]),
    ],
)
def test_a_bad_url_is_refused_before_anything_is_sent(url, words):
    assert_clear_error(evaluate_cli("--url", url, "--data", str(PHOTOS)), "--url", *words)


def test_an_unreachable_endpoint_is_named_with_the_reason():
    url = f"http://127.0.0.1:{closed_port()}/model/scratch/api/v0.1/predictions"
    assert_clear_error(evaluate_cli("--url", url, "--data", str(PHOTOS)), f"cannot reach {url}", "refused")


@pytest.fixture
def wrong_service():
    """Something on the port that is not a model: a 404 page for everything."""

    class NotAModel(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.dumps({"status": {"code": 404, "info": "no route /model/dents/", "reason": "NOT_FOUND"}})
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotAModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_error_answer_is_reported_in_the_servers_words(wrong_service):
    url = wrong_service + "/model/dents/api/v0.1/predictions"
    result = evaluate_cli("--url", url, "--data", str(PHOTOS))
    assert_clear_error(result, "answered 404", "no route /model/dents/")


def test_a_folder_without_annotations_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    url = "http://127.0.0.1:1/model/scratch/api/v0.1/predictions"
    assert_clear_error(evaluate_cli("--url", url, "--data", str(tmp_path)), "annotations.json: missing")
    assert_clear_error(evaluate_cli("--url", url, "--data", str(tmp_path / "nope")), "no such folder")


def test_annotations_naming_missing_photos_are_a_clear_error(tmp_path):
    coco = json.loads((PHOTOS / "annotations.json").read_text())
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    url = "http://127.0.0.1:1/model/scratch/api/v0.1/predictions"
    assert_clear_error(evaluate_cli("--url", url, "--data", str(tmp_path)), "4 listed photo(s) missing")
    (tmp_path / "annotations.json").write_text("{not json")
    assert_clear_error(evaluate_cli("--url", url, "--data", str(tmp_path)), "not COCO annotations")


@pytest.fixture
def rolling_model():
    """Answers in the server's shape (models/server/openapi.yaml), from two model versions in turn
    (a roll under way), with a label the photos do not use."""
    answers = []

    class Rolling(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            sha = ("a" if len(answers) % 2 == 0 else "b") * 64
            answers.append(sha)
            box = {"x": 1.0, "y": 1.0, "width": 10.0, "height": 10.0}
            body = {
                "jsonData": {
                    "detections": [{"label": "dent", "confidence": 0.9, "box": box}],
                    "model": {"name": "scratch", "version": sha[:12], "sha256": sha},
                    "image": {"width": 450, "height": 300},
                    "inference_ms": 1.0,
                }
            }
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Rolling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/model/scratch/api/v0.1/predictions"
    server.shutdown()


def test_a_roll_during_the_run_and_unscored_labels_are_said(rolling_model, tmp_path):
    result = evaluate_cli("--url", rolling_model, "--data", str(PHOTOS), "--json", str(tmp_path / "f.json"))
    assert result.returncode == 1, result.stderr
    assert "more than one model answered" in result.stderr
    assert "also returned labels ['dent'], not scored" in result.stderr
    figures = json.loads((tmp_path / "f.json").read_text())
    assert [m["sha256"][0] for m in figures["served_by"]] == ["a", "b"]
    assert figures["true_positives"] == figures["false_positives"] == 0 and figures["labelled"] == 10


def test_the_recorded_crossval_command_leaves_out_what_does_not_change_the_figures():
    """--only (which folds run now) and --first-cycles (reused first cycles of the same recipe) are
    not the recipe: the recorded command, run from a clean clone, trains everything."""
    from models.training.crossval import reproducing_command

    argv = ["--data", "d", "--only", "1", "--then-epochs", "70", "--first-cycles", "runs/a", "--only=2"]
    command = reproducing_command([*argv, "--first-cycles=runs/b", "--work", "w"])
    assert command == "python -m models.training.crossval --data d --then-epochs 70 --work w"
