"""The shadow comparison: Wilson's interval, pairing two models' answers, the record and its report.

What a user notices: the agreement and its interval the report prints, which way a verdict
flipped, which detections one model alone found, and that a crash mid-write costs no figure.
"""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from support.cli_contract import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from inspection.shadow import compare  # noqa: E402
from inspection.shadow_record import (  # noqa: E402
    DEFECT_TO_OK,
    OK_TO_DEFECT,
    Record,
    read,
    summarize,
    wilson,
)

STABLE, SHADOW, OTHER = "a" * 64, "b" * 64, "c" * 64
THRESHOLD = 0.18


def det(x: float, y: float, w: float, h: float, conf: float, label: str = "scratch") -> dict:
    return {"label": label, "confidence": conf, "box": {"x": x, "y": y, "width": w, "height": h}}


def entry(rid: str, stable: list[dict], shadow: list[dict], shadow_sha: str = SHADOW, ms=(20.0, 10.0)) -> dict:
    """A record line as the watcher writes it (inspection.shadow.Shadow._entry)."""
    c = compare(stable, shadow, THRESHOLD)
    side = lambda sha, d, dets, lat: {"sha256": sha, "defect": d, "detections": dets, "latency_ms": lat}  # noqa: E731
    return {
        "schema": "shadow-comparison/1", "status": "compared", "image": f"{rid}.jpg", "result_id": rid,
        "photo_sha256": "0" * 64, "threshold": THRESHOLD, "agree": c["agree"],
        "stable": side(STABLE, c["stable_defect"], stable, ms[0]),
        "shadow": side(shadow_sha, c["shadow_defect"], shadow, ms[1]),
        "matched": c["matched"], "stable_only": c["stable_only"], "shadow_only": c["shadow_only"],
    }  # fmt: skip


# --- Wilson ------------------------------------------------------------------------------


def test_wilson_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17: 81/263 -> 0.2553-0.3662; and the textbook 95/100.
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson(95, 100)
    assert (round(low, 4), round(high, 4)) == (0.8882, 0.9785)


def test_wilson_at_the_ends_and_with_no_photo():
    assert wilson(0, 0) == (0.0, 1.0)  # nothing seen: nothing known
    low, high = wilson(10, 10)
    assert high == 1.0 and 0.72 < low < 0.73  # all agree on 10 photos is not "100 %, done"
    assert wilson(0, 10)[0] == 0.0


@given(n=st.integers(1, 100_000), data=st.data())
def test_wilson_contains_the_estimate_and_narrows_with_more_photos(n, data):
    k = data.draw(st.integers(0, n))
    low, high = wilson(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    low4, high4 = wilson(4 * k, 4 * n)
    assert high4 - low4 < high - low


# --- pairing two answers -----------------------------------------------------------------


def test_matched_detections_and_what_each_model_alone_found():
    stable = [det(10, 10, 60, 20, 0.9), det(300, 100, 40, 40, 0.4)]
    shadow = [det(12, 11, 60, 20, 0.7), det(100, 200, 10, 10, 0.3)]
    c = compare(stable, shadow, THRESHOLD)
    assert c["agree"] and c["stable_defect"] and c["shadow_defect"]
    assert [(m["stable"]["confidence"], m["shadow"]["confidence"]) for m in c["matched"]] == [(0.9, 0.7)]
    assert [d["confidence"] for d in c["stable_only"]] == [0.4]
    assert [d["confidence"] for d in c["shadow_only"]] == [0.3]


def test_boxes_below_iou_half_or_of_another_class_do_not_match():
    stable = [det(0, 0, 100, 100, 0.9)]
    assert compare(stable, [det(50, 0, 100, 100, 0.9)], THRESHOLD)["matched"] == []  # IoU 1/3
    c = compare(stable, [det(0, 0, 100, 100, 0.9, label="dent")], THRESHOLD)
    assert c["matched"] == [] and len(c["stable_only"]) == len(c["shadow_only"]) == 1


def test_the_verdict_is_at_the_line_threshold():
    faint = [det(0, 0, 50, 50, 0.1)]
    c = compare([det(0, 0, 50, 50, 0.5)], faint, THRESHOLD)
    assert (c["stable_defect"], c["shadow_defect"], c["agree"]) == (True, False, False)
    assert len(c["matched"]) == 1  # the same scratch, found below the threshold: a flip, not a miss
    assert compare([], [], THRESHOLD)["agree"]


# --- the record --------------------------------------------------------------------------


def test_the_record_survives_a_torn_line_and_counts_a_photo_once(tmp_path):
    record = Record(tmp_path)
    record.append(entry("p1", [det(0, 0, 50, 50, 0.9)], [det(0, 0, 50, 50, 0.8)]))
    record.append(entry("p2", [det(0, 0, 50, 50, 0.9)], []))
    record.append(entry("p2", [det(0, 0, 50, 50, 0.9)], []))  # compared again after a crash
    with open(record.path, "ab") as f:
        f.write(b'{"schema": "shadow-comparison/1", "status": "comp')  # the crash mid-write
    s = summarize(read(tmp_path))
    assert (s.compared, s.agreements, s.flips[DEFECT_TO_OK]) == (2, 1, 1)
    Record(tmp_path).append(entry("p3", [], [det(0, 0, 50, 50, 0.9)]))  # the next run appends after it
    assert summarize(read(tmp_path)).flips[OK_TO_DEFECT] == 1


def test_figures_are_for_one_shadow_and_never_mix_models(tmp_path):
    record = Record(tmp_path)
    record.append(entry("old", [det(0, 0, 50, 50, 0.9)], [], shadow_sha=OTHER))
    record.append(entry("p1", [det(0, 0, 50, 50, 0.9)], [det(0, 0, 50, 50, 0.9)]))
    s = summarize(read(tmp_path))
    assert (s.shadow_sha256, s.compared, s.agreements, s.other_pairs) == (SHADOW, 1, 1, 1)
    assert summarize(read(tmp_path), OTHER).agreements == 0


def test_summary_per_class_size_latency_and_worst(tmp_path):
    record = Record(tmp_path)
    big, small = det(0, 0, 200, 100, 0.9), det(300, 300, 10, 10, 0.5, label="dent")
    record.append(entry("agree", [big, small], [det(2, 0, 200, 100, 0.8)], ms=(30.0, 10.0)))
    record.append(entry("flip", [big], [], ms=(50.0, 12.0)))
    record.append(entry("same", [], [], ms=(40.0, 11.0)))
    s = summarize(read(tmp_path)).as_json()
    assert s["detections"]["by_class"] == {
        "scratch": {"both": 1, "stable_only": 1, "shadow_only": 0},
        "dent": {"both": 0, "stable_only": 1, "shadow_only": 0},
    }
    assert s["detections"]["by_size"]["small"]["stable_only"] == 1
    assert s["latency_ms"]["stable"]["p50"] == 40.0 and s["latency_ms"]["shadow"]["p50"] == 11.0
    assert [w["image"] for w in s["worst"]] == ["flip.jpg", "agree.jpg"]  # the flip first; "same" is no worse
    assert s["agreement"] == round(2 / 3, 4) and s["agreement_ci95"][0] < 2 / 3 < s["agreement_ci95"][1]


# --- scripts/shadow-report ---------------------------------------------------------------

REPORT = ROOT / "scripts" / "shadow-report"


def test_the_report_prints_agreement_ci_and_flips_and_json(tmp_path):
    record = Record(tmp_path)
    for i in range(19):
        record.append(entry(f"p{i}", [det(0, 0, 50, 50, 0.9)], [det(0, 0, 50, 50, 0.9)]))
    record.append(entry("p19", [det(0, 0, 50, 50, 0.9)], []))
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, str(REPORT), "scratch", "--record", str(tmp_path), *a], capture_output=True, text=True
    )
    out = run()
    assert out.returncode == 0, out.stderr
    low, high = wilson(19, 20)
    assert f"agreement              95.0 %   95 % CI (Wilson) {100 * low:.1f} % - {100 * high:.1f} %" in out.stdout
    assert "stable DEFECT, shadow ok   1" in out.stdout and "p19.jpg" in out.stdout
    js = json.loads(run("--json").stdout)
    assert (js["photos_compared"], js["agreements"], js["flips"][DEFECT_TO_OK]) == (20, 19, 1)


def test_the_report_of_an_empty_record_says_so(tmp_path):
    out = subprocess.run([sys.executable, str(REPORT), "scratch", "--record", str(tmp_path)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 1 and out.stderr.strip() == f"shadow-report: no photo compared yet in {tmp_path}"


# Bad arguments and bad records: tests/unit/test_cli_bad_input.py (scripts/shadow-report).
