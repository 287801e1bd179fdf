"""models.training.int8_recipes on the project's labelled photos: it tells saturation from quantisation error."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VNNI = bool({"avx512_vnni", "avx_vnni"} & set(Path("/proc/cpuinfo").read_text().split()))


def test_seven_bit_recipes_compute_what_their_arithmetic_says(tmp_path, capsys):
    from models.training.int8_recipes import RECIPES, main

    out = tmp_path / "recipes.json"
    fp32 = ROOT / "models/scratch-detector/model-fp32.onnx"
    assert (
        main(
            [
                "--fp32",
                str(fp32),
                "--data",
                str(ROOT / "tests/data/metal-tags"),
                "--work",
                str(tmp_path),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    recipes = json.loads(out.read_text())["recipes"]
    assert set(recipes) == {"fp32", *(r.name for r in RECIPES)}
    for recipe in RECIPES:
        got = recipes[recipe.name]
        gap = max(abs(got["kernels"][k] - got["arithmetic"][k]) for k in ("map50", "precision", "recall"))
        if recipe.reduce_range:  # exact products: at most one borderline detection of ten rounds the other way
            assert gap <= 0.1, (recipe.name, got)
            assert got["class_score_gap"] <= 0.05, (recipe.name, got)
        elif recipe.weight_type == "QInt8" and not VNNI:  # 8-bit U8S8 without VNNI: the kernels saturate
            assert got["class_score_gap"] > 0.2, got
    printed = capsys.readouterr().out
    assert "u8s8-per-channel-7bit (shipped)" in printed and "vs fp32" in printed
