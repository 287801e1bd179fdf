"""Build small ONNX models in the YOLOv8 output layout with known answers.

The graph's output is a constant (1, 4+nc, N) block of candidate boxes in
model-input pixels, made to depend on the input (plus 0 x its mean) so
onnxruntime really runs it. Tests then know exactly which detections a
correct decoder must report, for any input size and class count.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def yolo_output(candidates: list[tuple[float, float, float, float, int, float]], nc: int) -> np.ndarray:
    """Rows [cx, cy, w, h, scores...] from (cx, cy, w, h, class, score) tuples."""
    out = np.zeros((1, 4 + nc, len(candidates)), np.float32)
    for j, (cx, cy, w, h, cls, score) in enumerate(candidates):
        out[0, :4, j] = (cx, cy, w, h)
        out[0, 4 + cls, j] = score
    return out


def build(
    path: Path,
    input_hw: tuple[int, int] | None,
    names: list[str],
    candidates: list[tuple[float, float, float, float, int, float]],
    metadata_names: bool = True,
) -> str:
    """Write the model and return its sha256. ``input_hw=None`` makes H and W dynamic."""
    nc = len(names)
    const = yolo_output(candidates, nc)
    h, w = input_hw if input_hw else ("height", "width")
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(const.shape))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["boxes", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic_yolo",
        [images],
        [output],
        initializer=[
            numpy_helper.from_array(const, "boxes"),
            numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata_names:
        helper.set_model_props(model, {"names": repr(dict(enumerate(names)))})
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
