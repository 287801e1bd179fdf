"""The YOLOv8 decode: boxes mapped back to original pixels, NMS per class, degenerate boxes dropped."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models" / "server"))

from defect_server.yolo import Letterbox, decode, letterbox  # noqa: E402


def output(*candidates):
    out = np.zeros((1, 5, len(candidates)), np.float32)
    for j, (cx, cy, w, h, score) in enumerate(candidates):
        out[0, :, j] = (cx, cy, w, h, score)
    return out


def test_a_box_thinner_than_the_answers_precision_is_dropped():
    # A 14x1 image letterboxed into 384x256: the box maps back to under 0.1 px high.
    _, box = letterbox(np.zeros((1, 14, 3), np.uint8), (256, 384))
    dets = decode(output((192, 128, 100, 2, 0.9)), ["scratch"], box, (14, 1), (14, 1), 0.25, 0.45)
    assert dets == []


def test_letterbox_pads_centrally_and_decode_undoes_it():
    tensor, box = letterbox(np.zeros((300, 300, 3), np.uint8), (256, 384))
    assert tensor.shape == (1, 3, 256, 384) and box == Letterbox(scale=256 / 300, pad_x=64, pad_y=0)
    assert np.allclose(tensor[0, :, :, :64], 114 / 255) and np.allclose(tensor[0, :, :, 64:320], 0)
    (det,) = decode(output((192, 128, 64, 32, 0.8)), ["scratch"], box, (300, 300), (300, 300), 0.25, 0.45)
    assert (round(det.x, 3), round(det.y, 3), round(det.width, 3), round(det.height, 3)) == (112.5, 131.25, 75.0, 37.5)


def test_draft_decoded_images_map_to_original_pixels():
    # A 1800x1200 JPEG decoded at 1/4 (450x300): boxes are reported in 1800x1200 pixels.
    _, box = letterbox(np.zeros((300, 450, 3), np.uint8), (256, 384))
    (det,) = decode(output((192, 128, 38.4, 25.6, 0.9)), ["scratch"], box, (450, 300), (1800, 1200), 0.25, 0.45)
    assert (round(det.width), round(det.height)) == (180, 120)


def test_nms_keeps_the_best_of_overlapping_boxes():
    dets = decode(
        output((100, 100, 40, 40, 0.9), (102, 101, 40, 40, 0.8), (300, 100, 40, 40, 0.7)),
        ["scratch"],
        Letterbox(1.0, 0, 0),
        (384, 256),
        (384, 256),
        0.25,
        0.45,
    )
    assert [round(d.confidence, 2) for d in dets] == [0.9, 0.7]
