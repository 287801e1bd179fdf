"""The model card states what the shipped ONNX files really are."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import onnxruntime as ort
import pytest
import yaml

CARD_DIR = Path(__file__).resolve().parents[2] / "models" / "scratch-detector"
CARD = yaml.safe_load((CARD_DIR / "model.yaml").read_text())
VARIANTS = {v["name"]: v for v in CARD["variants"]}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_card_matches_the_file(name):
    variant = VARIANTS[name]
    path = CARD_DIR / variant["file"]
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == variant["sha256"]
    assert len(data) == variant["bytes"]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape == [1, 3, CARD["input"]["height"], CARD["input"]["width"]]
    (out,) = session.get_outputs()
    assert out.shape[1] == 4 + len(CARD["classes"])
    names = ast.literal_eval(session.get_modelmeta().custom_metadata_map["names"])
    assert [names[k] for k in sorted(names)] == CARD["classes"]


def test_card_reports_every_metric_for_every_variant():
    for variant in VARIANTS.values():
        scores = variant["validation"]
        for key in ("map50", "precision", "recall", "latency_ms_p50", "threads"):
            assert isinstance(scores[key], (int, float)) and scores[key] >= 0, (variant["name"], key)
    assert CARD["training"]["pretrained"] is False
    assert "split by photograph" in CARD["training"]["data"]["source"]


def test_the_validation_figures_say_what_they_are():
    """The validation split chose the checkpoint: the card must not pass its figures off as unseen data."""
    n = CARD["training"]["data"]["val_images"]
    assert CARD["validation_figures"].startswith(f"the {n} images ({CARD['training']['data']['val_boxes']} scratches)")
    assert "chosen on" in CARD["validation_figures"] and "optimistic" in CARD["validation_figures"]


def test_held_out_figures_are_consistent_and_in_the_readme():
    """The external measurement on unseen photographs: F1 agrees with P and R, and the README quotes it."""
    held_out = CARD["held_out"]
    assert held_out["images"] > 0 and held_out["labelled_scratches"] > 0 and "never saw" in held_out["source"]
    assert {r["variant"] for r in held_out["results"]} == set(VARIANTS)
    readme = (CARD_DIR.parents[1] / "README.md").read_text()
    section = readme[readme.index("## The scratch detector") :].split("\n## ", 1)[0]
    for r in held_out["results"]:
        if "precision" in r:
            p, rc = r["precision"], r["recall"]
            assert abs(2 * p * rc / (p + rc) - r["f1"]) < 0.006, r
        for key in ("precision", "recall", "map50"):
            if key in r:
                assert f"{r[key]:.3f}" in section, (r, key)


def test_int8_is_static_qdq():
    import onnx

    model = onnx.load(str(CARD_DIR / VARIANTS["int8"]["file"]))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "DynamicQuantizeLinear" not in ops
