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


def test_int8_is_static_qdq():
    import onnx

    model = onnx.load(str(CARD_DIR / VARIANTS["int8"]["file"]))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "DynamicQuantizeLinear" not in ops
