"""An ensemble for evaluation (``rescore --average-with``): models' raw outputs averaged anchor
by anchor, then the server's own decode. Checked on the shipped fp32 and int8 twins."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models/server"))

from defect_server.detector import Detector, Thresholds  # noqa: E402
from defect_server.image_input import DecodedImage  # noqa: E402
from models.training.dataset import DatasetError  # noqa: E402
from models.training.evaluate import AveragedDetector  # noqa: E402

MODELS = ROOT / "models/scratch-detector"
PHOTO = ROOT / "tests/data/metal-tags/images/image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"


def answer(detector, pixels: np.ndarray, threshold: float = 0.18) -> list[tuple[float, ...]]:
    found, _ = detector.detect(DecodedImage(pixels, pixels.shape[1], pixels.shape[0]), Thresholds(threshold, 0.45))
    return sorted((d.confidence, d.x, d.y, d.width, d.height) for d in found)


@pytest.fixture(scope="module")
def twins() -> tuple[Detector, Detector]:
    return tuple(Detector((MODELS / f"model-{v}.onnx").read_bytes(), threads=1) for v in ("fp32", "int8"))


def test_a_model_averaged_with_itself_answers_as_the_model(twins):
    fp32, _ = twins
    pixels = np.asarray(Image.open(PHOTO).convert("RGB"))
    alone = answer(fp32, pixels)
    assert alone, "the photo with the most labelled scratches gets detections"
    assert answer(AveragedDetector([fp32, fp32]), pixels) == alone


def test_the_ensembles_scores_lie_between_its_members(twins):
    fp32, int8 = twins
    tensor = np.random.default_rng(0).random((1, 3, *fp32.input_hw), dtype=np.float32)
    a, b, both = fp32.run(tensor), int8.run(tensor), AveragedDetector([fp32, int8]).run(tensor)
    assert both.shape == a.shape  # one column per anchor, as one model gives: one decode
    assert np.all(both >= np.minimum(a, b) - 1e-5) and np.all(both <= np.maximum(a, b) + 1e-5)
    assert not np.allclose(both, a) and not np.allclose(both, b)


def test_models_of_other_input_sizes_are_not_averaged(twins):
    fp32, _ = twins
    other = SimpleNamespace(input_hw=(320, 448), names=fp32.names)
    with pytest.raises(DatasetError, match="input size"):
        AveragedDetector([fp32, other])
