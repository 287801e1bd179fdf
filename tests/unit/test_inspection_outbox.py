"""The outbox of predict --watch: order, durability across a restart, its bounds and their log lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from inspection.outbox import Outbox  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def payload(image: str, size: int = 100) -> bytes:
    body = json.dumps({"image": image, "pad": ""}).encode()
    return json.dumps({"image": image, "pad": "x" * (size - len(body))}).encode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_box(folder: Path, clock: Clock, lines: list[str], max_bytes: int = 10_000, max_age_s: float = 3600) -> Outbox:
    return Outbox(folder, max_bytes, max_age_s, lines.append, clock)


def images(box: Outbox) -> list[str]:
    return [json.loads(e.payload())["image"] for e in box.pending()]


def test_order_survives_a_restart_and_continues(tmp_path, clock):
    lines: list[str] = []
    box = open_box(tmp_path, clock, lines)
    for i in range(12):  # more than 9: the order must not be a string sort of unpadded numbers
        assert box.put(f"r{i}", payload(f"p{i}.jpg"))
    box.remove(box.pending()[0])
    reopened = open_box(tmp_path, clock, lines)
    assert images(reopened) == [f"p{i}.jpg" for i in range(1, 12)]
    reopened.put("r12", payload("p12.jpg"))
    assert images(open_box(tmp_path, clock, lines))[-1] == "p12.jpg"
    assert lines == []


def test_the_same_result_id_is_queued_once(tmp_path, clock):
    box = open_box(tmp_path, clock, [])
    assert box.put("same", payload("a.jpg"))
    assert not box.put("same", payload("a.jpg"))
    assert len(box) == 1 and len(list(tmp_path.iterdir())) == 1


def test_a_write_cut_short_is_never_read_as_a_result(tmp_path, clock):
    box = open_box(tmp_path, clock, [])
    box.put("r1", payload("a.jpg"))
    (tmp_path / ".tmp-000000000002-1-r2.json").write_bytes(b'{"image": "b.j')  # killed before the rename
    reopened = open_box(tmp_path, clock, [])
    assert images(reopened) == ["a.jpg"]
    assert sorted(p.name.startswith(".tmp-") for p in tmp_path.iterdir()) == [False]


def test_files_hold_exactly_the_payload(tmp_path, clock):
    box = open_box(tmp_path, clock, [])
    box.put("r1", payload("a.jpg"))
    assert box.pending()[0].payload() == payload("a.jpg")


def test_full_outbox_drops_the_oldest_and_says_so(tmp_path, clock):
    lines: list[str] = []
    box = open_box(tmp_path, clock, lines, max_bytes=350)
    for i in range(3):
        box.put(f"r{i}", payload(f"p{i}.jpg"))
    assert lines == []
    box.put("r3", payload("p3.jpg"))  # 400 > 350: p0 goes
    assert images(box) == ["p1.jpg", "p2.jpg", "p3.jpg"]
    assert box.dropped == 1
    assert lines == ["outbox: DROPPED result r0 of p0.jpg (outbox full (350 bytes)); it was never published"]
    assert len(list(tmp_path.iterdir())) == 3


def test_old_results_are_dropped_with_a_line(tmp_path, clock):
    lines: list[str] = []
    box = open_box(tmp_path, clock, lines, max_age_s=60)
    box.put("old", payload("old.jpg"))
    clock.now += 45
    box.put("new", payload("new.jpg"))
    clock.now += 30  # old: 75 s, new: 30 s
    assert images(box) == ["new.jpg"]
    assert lines == ["outbox: DROPPED result old of old.jpg (older than 60 s); it was never published"]
    clock.now += 1000
    assert images(open_box(tmp_path, clock, lines, max_age_s=60)) == []  # the age survives a restart too


def test_removing_twice_or_after_a_drop_is_harmless(tmp_path, clock):
    box = open_box(tmp_path, clock, [], max_bytes=150)
    box.put("r0", payload("p0.jpg"))
    first = box.pending()[0]
    box.put("r1", payload("p1.jpg"))  # drops r0 while it may be in flight
    box.remove(first)
    box.remove(first)
    assert images(box) == ["p1.jpg"]
