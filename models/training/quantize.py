"""Static QDQ int8 quantisation (U8S8, per-channel, 7-bit weights), calibrated on real training photos.

Dynamic quantisation leaves convolutions' activations in float and makes
conv nets slower on CPU; static QDQ lets onnxruntime run int8 kernels.
The detection head's box/score decoding (DFL, sigmoid, concat) stays in
float: box coordinates and class scores share one output tensor whose
ranges differ by orders of magnitude, and one int8 scale for both ruins
either the boxes or the scores.

Weights are 7-bit (``reduce_range``). On x86 CPUs without VNNI (AVX2 only: this machine's
AMD EPYC, the t2.medium reference box's Xeons) onnxruntime multiplies uint8 activations by
int8 weights with VPMADDUBSW, whose pairwise sums saturate at int16: with full 8-bit weights
the shipped model found "scratches" on clean photos and its precision on the data set fell
from 0.945 to 0.256 on this CPU, while the same graph run as plain arithmetic (graph
optimisations off, what a VNNI CPU computes) stayed at fp32's. With 7-bit weights a pair's
sum, 2 x 255 x 64, fits int16 on every CPU. onnxruntime's quantisation guide says the same:
"Reduce-range will quantize the weights to 7-bits. It is designed for the U8S8 format on
AVX2 and AVX512 (non-VNNI) machines to mitigate saturation issues" (microsoft/onnxruntime,
docs/performance/model-optimizations/quantization.md). U8U8, the other way out, kept full
fidelity but ran no faster than fp32 here (README, "The scratch detector").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from defect_server.yolo import letterbox  # noqa: E402

CALIBRATION_PHOTOS = 100  # the first photos of the training set
RECIPE = (
    f"static QDQ, U8S8 with 7-bit weights (reduce_range: no saturation on CPUs without VNNI), per-channel, "
    f"MinMax calibration on {CALIBRATION_PHOTOS} training photos; detection head decoding kept in float"
)


class PhotoReader(CalibrationDataReader):
    """Feeds letterboxed training photos, prepared exactly as the server prepares them."""

    def __init__(self, photos: list[Path], input_name: str, input_hw: tuple[int, int]) -> None:
        self._items = iter(photos)
        self.input_name, self.input_hw = input_name, input_hw

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self._items, None)
        if path is None:
            return None
        tensor, _ = letterbox(np.asarray(Image.open(path).convert("RGB")), self.input_hw)
        return {self.input_name: tensor}


def head_nodes_to_keep_float(model: onnx.ModelProto) -> list[str]:
    """Every node after the last convolution of each head branch: the decoding part of Detect."""
    nodes = model.graph.node
    head = [n for n in nodes if "/model.22/" in n.name or n.name.startswith("/model.22")]
    if not head:  # not an ultralytics YOLOv8 graph: keep the final non-conv tail in float
        last_conv = max((i for i, n in enumerate(nodes) if n.op_type == "Conv"), default=-1)
        return [n.name for n in nodes[last_conv + 1 :]]
    return [n.name for n in head if n.op_type != "Conv" or "/dfl/" in n.name]


def quantize(
    fp32: Path,
    out: Path,
    calibration: list[Path],
    work: Path,
    weight_type: QuantType = QuantType.QInt8,
    per_channel: bool = True,
    reduce_range: bool = True,
) -> Path:
    """``fp32`` quantised to ``out``, calibrated on the first CALIBRATION_PHOTOS of ``calibration``.

    The defaults are the shipped ``RECIPE``; the others are for comparing recipes (int8_recipes.py).
    """
    work.mkdir(parents=True, exist_ok=True)
    prepared = work / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False)
    model = onnx.load(str(prepared))
    inp = model.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    reader = PhotoReader(calibration[:CALIBRATION_PHOTOS], inp.name, (dims[2], dims[3]))
    quantize_static(
        str(prepared),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=weight_type,
        per_channel=per_channel,
        reduce_range=reduce_range,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=head_nodes_to_keep_float(model),
    )
    # quantize_static drops the exporter's metadata (class names, imgsz): carry it over.
    quantized = onnx.load(str(out))
    original = onnx.load(str(fp32))
    onnx.helper.set_model_props(quantized, {p.key: p.value for p in original.metadata_props})
    onnx.save(quantized, str(out))
    return out
