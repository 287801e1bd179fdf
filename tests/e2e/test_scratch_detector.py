"""The shipped scratch detector, served by the real wrapper at its card's threshold, on real photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from conftest import photos, shipped_threshold, shipped_variant, start

PHOTOS = photos()
WITH_SCRATCHES = [p for p in PHOTOS if p.boxes]
CLEAN = [p for p in PHOTOS if not p.boxes]
THRESHOLD = shipped_threshold()


def iou(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module", params=["int8", "fp32"])
def server(request, tmp_path_factory):
    path, sha = shipped_variant(request.param)
    s = start(
        tmp_path_factory.mktemp(request.param),
        model_uri=path.as_uri(),
        model_sha256=sha,
        confidence_threshold=THRESHOLD,
    )
    s.wait_ready()
    yield s
    s.stop()


def detect(server, photo) -> list[dict]:
    resp = requests.post(
        server.url + "/api/v0.1/predictions",
        data=json.dumps({"binData": photo.b64}),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["jsonData"]["detections"]


def test_scratches_on_real_photos_are_found_where_they_are(server):
    found = total = 0
    for photo in WITH_SCRATCHES:
        boxes = [(d["box"]["x"], d["box"]["y"], d["box"]["width"], d["box"]["height"]) for d in detect(server, photo)]
        assert boxes, f"no scratch found on {photo.path.name}"
        for truth in photo.boxes:
            total += 1
            found += any(iou(truth, b) >= 0.5 for b in boxes)
    assert found / total >= 0.6, f"only {found} of {total} labelled scratches found"


def test_a_photo_without_scratches_finds_none(server):
    """Both variants, on any x86 CPU: int8's 7-bit weights cannot saturate without VNNI (quantize.py)."""
    for photo in CLEAN:
        assert detect(server, photo) == []


def test_every_detection_is_a_scratch_inside_the_image(server):
    for photo in WITH_SCRATCHES:
        for d in detect(server, photo):
            assert d["label"] == "scratch" and THRESHOLD <= d["confidence"] <= 1
            box = np.array([d["box"]["x"], d["box"]["y"], d["box"]["width"], d["box"]["height"]])
            assert (box >= 0).all() and box[0] + box[2] <= 450.01 and box[1] + box[3] <= 300.01
