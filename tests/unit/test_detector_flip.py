"""Test-time flip (``Detector(flip=True)``, measured by ``rescore --flip``): the mirrored pass's
boxes are mapped back onto the photo, so the merged answer mirrors with the photo."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models/server"))

from defect_server.detector import Detector, Thresholds  # noqa: E402
from defect_server.image_input import DecodedImage  # noqa: E402

MODEL = ROOT / "models/scratch-detector/model-int8.onnx"
PHOTO = ROOT / "tests/data/metal-tags/images/image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"


def boxes(detector: Detector, pixels: np.ndarray) -> list[tuple[float, float, float, float]]:
    image = DecodedImage(pixels, pixels.shape[1], pixels.shape[0])
    found, _ = detector.detect(image, Thresholds(0.18, 0.45))
    return sorted((d.x, d.y, d.width, d.height) for d in found)


def test_a_flipped_photo_gets_the_mirror_of_its_answer():
    pixels = np.asarray(Image.open(PHOTO).convert("RGB"))
    width = pixels.shape[1]
    detector = Detector(MODEL.read_bytes(), threads=1, flip=True)
    plain = boxes(detector, pixels)
    mirrored = boxes(detector, np.ascontiguousarray(pixels[:, ::-1]))
    assert plain, "the photo with the most labelled scratches gets detections"
    back = sorted((width - x - w, y, w, h) for x, y, w, h in mirrored)
    assert len(back) == len(plain)
    assert np.allclose(np.array(back), np.array(plain), atol=0.6)  # the answer is rounded to 0.1 px


def test_without_flip_the_model_runs_once():
    detector = Detector(MODEL.read_bytes(), threads=1)
    tensor = np.full((1, 3, *detector.input_hw), 0.45, np.float32)
    flipped = Detector(MODEL.read_bytes(), threads=1, flip=True).run(tensor)
    assert flipped.shape[2] == 2 * detector.run(tensor).shape[2]
