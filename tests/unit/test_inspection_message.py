"""predict --watch: the message's shape, result_id, defect/relabel decisions, broker URLs, drop folder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from inspection import message  # noqa: E402
from inspection.broker import BrokerURL  # noqa: E402
from inspection.drop_folder import DropFolder  # noqa: E402

ANSWER = {
    "detections": [
        {"label": "scratch", "confidence": 0.5, "box": {"x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0}},
        {"label": "scratch", "confidence": 0.3, "box": {"x": 5.0, "y": 6.0, "width": 7.0, "height": 8.0}},
    ],
    "model": {"name": "scratch", "version": "99c458ebd75a", "sha256": "99c458eb" + "0" * 56},
    "image": {"width": 450, "height": 300},
    "inference_ms": 20.5,
}


def det(conf: float) -> dict:
    return {"label": "scratch", "confidence": conf, "box": {"x": 0, "y": 0, "width": 1, "height": 1}}


def test_result_id_is_stable_and_tells_photos_apart():
    rid = message.result_id("a.jpg", b"bytes")
    assert rid == message.result_id("a.jpg", b"bytes")  # a retry, a restart
    assert len(rid) == 32 and int(rid, 16) >= 0
    assert rid != message.result_id("b.jpg", b"bytes")  # a black frame twice
    assert rid != message.result_id("a.jpg", b"other")  # a camera counter that wrapped


def test_inspected_message_carries_what_the_line_needs():
    msg = message.inspected(rid="r", image="a.jpg", captured_at=0.0, inspected_at=1.5, answer=ANSWER, threshold=0.5)
    assert json.loads(json.dumps(msg)) == msg
    assert msg["image"] == "a.jpg" and msg["result_id"] == "r" and msg["status"] == "inspected"
    assert msg["model"] == ANSWER["model"]
    assert msg["detections"] == ANSWER["detections"]
    assert msg["captured_at"] == "1970-01-01T00:00:00.000Z" and msg["inspected_at"] == "1970-01-01T00:00:01.500Z"
    assert msg["defect"] is True  # 0.5 is AT the threshold


@pytest.mark.parametrize("confs, defect", [([], False), ([0.49], False), ([0.2, 0.5], True), ([0.99], True)])
def test_defect_means_any_detection_at_or_above_the_threshold(confs, defect):
    assert message.is_defect([det(c) for c in confs], 0.5) is defect


@pytest.mark.parametrize(
    "confs, why",
    [
        ([], "nothing found"),
        ([0.3], "best detection 0.30 in the uncertain band 0.25-0.5"),
        ([0.3, 0.9], None),  # the best one is sure
        ([0.5], None),  # the band is [low, high)
        ([0.25], "best detection 0.25 in the uncertain band 0.25-0.5"),
    ],
)
def test_relabel_band(confs, why):
    assert message.needs_relabel([det(c) for c in confs], message.Band.parse("0.25-0.5")) == why


@pytest.mark.parametrize("text", ["0.5", "a-b", "0.5-0.2", "0.1-1.5", "-0.1-0.3"])
def test_bad_band_is_refused(text):
    with pytest.raises(ValueError, match="--uncertain"):
        message.Band.parse(text)


def test_failed_message_says_the_part_was_not_inspected():
    msg = message.failed(rid="r", image="a.jpg", captured_at=0, inspected_at=0, model_name="scratch", reason="HTTP 400")
    assert msg["status"] == "failed" and msg["defect"] is None and msg["detections"] is None
    assert msg["error"] == "HTTP 400" and msg["model"]["name"] == "scratch"


def test_broker_url():
    expected = BrokerURL("10.0.0.5", 1884, "line/3/results", False)
    assert BrokerURL.parse("mqtt://10.0.0.5:1884/line/3/results") == expected
    assert BrokerURL.parse("mqtts://broker.plant/results") == BrokerURL("broker.plant", 8883, "results", True)
    assert BrokerURL.parse("mqtt://b/results").port == 1883


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://b:1883/t", "expected mqtt://host:1883/topic"),
        ("b:1883/t", "expected mqtt://host:1883/topic"),
        ("mqtt://:1883/t", "no usable broker host"),
        ("mqtt://b:1883", "no topic"),
        ("mqtt://b:1883/", "no topic"),
        ("mqtt://b:99999/t", "port must be a number"),
        ("mqtt://b:x/t", "port must be a number"),
        ("mqtt://b/line/#", "wildcard"),
        ("mqtt://u:p@b/t", "--mqtt-user"),
    ],
)
def test_bad_broker_url_names_the_problem(url, words):
    with pytest.raises(ValueError, match="--mqtt") as err:
        BrokerURL.parse(url)
    assert words in str(err.value)


def test_drop_folder_takes_only_complete_photos_oldest_first(tmp_path):
    drop = DropFolder(tmp_path)
    (tmp_path / "b.jpg").write_bytes(b"b")
    os.utime(tmp_path / "b.jpg", (1, 1))
    (tmp_path / "a.png").write_bytes(b"a")
    os.utime(tmp_path / "a.png", (2, 2))
    for name in [".a.jpg", "c.jpg.part", "d.jpg.tmp", "~e.jpg", "notes.txt", "empty.jpg"]:
        (tmp_path / name).write_bytes(b"" if name == "empty.jpg" else b"x")
    (tmp_path / "sub.jpg").mkdir()
    assert drop.ready() == []  # seen once: maybe still being written
    assert drop.ready() == [tmp_path / "b.jpg", tmp_path / "a.png"]
    with open(tmp_path / "b.jpg", "ab") as f:  # grows: not ready until it is stable again
        f.write(b"more")
    assert drop.ready() == [tmp_path / "a.png"]
    assert tmp_path / "b.jpg" in drop.ready()


def test_a_deferred_photo_comes_back_after_its_delay(tmp_path, monkeypatch):
    """A photo whose result or move the disk refused is tried again later, not forgotten."""
    import inspection.drop_folder as drop_folder

    now = [1000.0]
    monkeypatch.setattr(drop_folder.time, "monotonic", lambda: now[0])
    drop = DropFolder(tmp_path)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"a")
    drop.ready()
    assert drop.ready() == [photo]
    drop.defer(photo, 2.0)
    assert drop.ready() == []
    now[0] += 2.0
    assert drop.ready() == [photo]
