"""`python -m models.training.evaluate --url` against the local site, before and after a roll.

The tool runs as a plant PC would run it (onnxruntime, Pillow, PyYAML and PyTorch made
unimportable), on the project's labelled photos, and its figures must equal what
models.training.evaluate computes offline through the server's own decode for the same
model file and photos: the served model's figures reproduce.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import pytest

from conftest import PHOTOS, shipped_variant
from models.training.dataset import load_coco
from models.training.evaluate import SERVED, offline_predictions, truth_boxes
from models.training.scoring import score
from support.server_process import ROOT
from support.site_process import SiteProcess

BLOCK = "import sys\nfor m in ('torch', 'onnxruntime', 'PIL', 'yaml', 'ultralytics'): sys.modules[m] = None\n"
FIELDS = ("images", "labelled", "true_positives", "false_positives", "precision", "recall", "f1", "map50")


def evaluate_cli(out, *args: str, block: str = BLOCK) -> tuple[subprocess.CompletedProcess, dict]:
    code = block + "import runpy\nrunpy.run_module('models.training.evaluate', run_name='__main__')"
    args = (*args, "--data", str(PHOTOS), "--json", str(out))
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(out.read_text())


def offline(variant: str, threshold: float = 0.0) -> dict:
    """The same model file on the same photos, through defect_server's decode in this process."""
    samples, _ = load_coco(PHOTOS)
    path, _ = shipped_variant(variant)
    found = offline_predictions(path, samples, *SERVED)
    return asdict(score(found, [truth_boxes(s) for s in samples], threshold))


@pytest.fixture(scope="module")
def site():
    s = SiteProcess([]).start()  # bundle.yaml as shipped: the int8 scratch detector at its card's threshold
    yield s
    s.stop()


def test_the_served_models_figures_reproduce_before_and_after_a_roll(site, tmp_path):
    url = site.url + "/model/scratch/api/v0.1/predictions"
    result, before = evaluate_cli(tmp_path / "before.json", "--url", url)
    int8_path, int8_sha = shipped_variant("int8")
    assert before["served_by"] == [{"name": "scratch", "sha256": int8_sha}]
    expected = offline("int8")
    assert {k: before[k] for k in FIELDS} == {k: expected[k] for k in FIELDS}
    assert before["labelled"] == 10 and before["true_positives"] > 0
    assert f"precision {before['precision']:.3f}" in result.stdout
    assert f"mAP@0.5 {before['map50']:.3f}" in result.stdout
    assert "its own confidence threshold" in result.stdout  # what the mAP is over, said

    # A stricter threshold from the same answers, and the ONNX file scored offline by the CLI.
    _, strict = evaluate_cli(tmp_path / "strict.json", "--url", url, "--min-confidence", "0.5")
    expected = offline("int8", 0.5)
    assert {k: strict[k] for k in FIELDS} == {k: expected[k] for k in FIELDS}
    _, file = evaluate_cli(tmp_path / "file.json", "--model", str(int8_path), block="")
    same = ("images", "labelled", "true_positives", "false_positives", "precision", "recall", "f1")
    assert {k: file[k] for k in same} == {k: before[k] for k in same}
    assert file["map50_over"].startswith("over all detections, confidence >= 0.001")

    fp32_path, fp32_sha = shipped_variant("fp32")
    site.reload(f"scratch.model-uri={fp32_path.as_uri()}", f"scratch.model-sha256={fp32_sha}")
    site.wait_for(lambda: any(line.startswith(f"ready: scratch sha {fp32_sha[:7]}") for line in site.out), 120)
    _, after = evaluate_cli(tmp_path / "after.json", "--url", url)
    assert after["served_by"] == [{"name": "scratch", "sha256": fp32_sha}]
    expected = offline("fp32")
    assert {k: after[k] for k in FIELDS} == {k: expected[k] for k in FIELDS}
