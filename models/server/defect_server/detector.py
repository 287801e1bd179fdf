"""An onnxruntime session for a YOLOv8 detection model, and what it needs to be read right.

Everything the server needs to know about a model (input size, class names)
is read from the model itself, so a user can bring any YOLOv8 export.
"""

from __future__ import annotations

import ast
import os
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .errors import ModelRejected
from .image_input import DecodedImage
from .yolo import Detection, decode, letterbox

# The server's own defaults, for a graph that gives no thresholds (server-image run-check, a
# hand-written SeldonDeployment): the model card's serving thresholds
# (models/scratch-detector/model.yaml), which tests/unit/test_model_card.py holds them to.
DEFAULT_CONFIDENCE = 0.18
DEFAULT_IOU = 0.45


@dataclass(frozen=True)
class Thresholds:
    confidence: float = DEFAULT_CONFIDENCE
    iou: float = DEFAULT_IOU


def usable_cpus() -> int:
    """CPUs this process may really use: affinity, capped by a cgroup v2 CPU quota.

    onnxruntime sizes its pool from the host's cores, which oversubscribes a
    pod whose limit is lower than the node's core count.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_threads(workers: int) -> int:
    """Threads per worker so that workers x threads <= usable CPUs."""
    return max(1, usable_cpus() // max(1, workers))


class Detector:
    """A verified model, loaded and warmed up."""

    def __init__(self, model_bytes: bytes, threads: int, input_size: int = 0, flip: bool = False) -> None:
        # flip: test-time augmentation, the model also run on the mirrored image (twice the
        # compute); measured with `python -m models.training.rescore --flip`, not served.
        self.flip = flip
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # The pool's threads spin between runs by default, burning the cores the HTTP server,
        # the other workers and (here) the client need; a server is not a tight loop.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelRejected(f"not a loadable ONNX model: {str(exc).splitlines()[0]}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelRejected(
                "not a YOLOv8 detection model: expected one input (1,3,H,W), got "
                + ", ".join(f"{i.name}{i.shape}" for i in inputs)
            )
        self.input_name = inputs[0].name
        self.input_hw = _input_hw(inputs[0].shape, self._metadata(), input_size)
        self.names = self._class_names()
        self._warm_up()

    def _metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _class_names(self) -> list[str]:
        nc = self._output_classes()
        raw = self._metadata().get("names")
        names: list[str] = []
        if raw:
            try:
                parsed = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                parsed = None
            if isinstance(parsed, dict):
                names = [str(parsed[k]) for k in sorted(parsed)]
            elif isinstance(parsed, list):
                names = [str(n) for n in parsed]
        if len(names) != nc:
            names = [f"class{i}" for i in range(nc)]
        return names

    def _output_classes(self) -> int:
        outputs = self.session.get_outputs()
        shape = outputs[0].shape
        if len(outputs) != 1 or len(shape) != 3 or not isinstance(shape[1], int) or shape[1] < 5:
            raise ModelRejected(f"not a YOLOv8 detection model: output must be (1, 4+classes, N), got {shape}")
        return shape[1] - 4

    def _warm_up(self) -> None:
        """Run once so 'ready' means the graph really executes on this CPU."""
        h, w = self.input_hw
        out = self.session.run(None, {self.input_name: np.full((1, 3, h, w), 0.45, np.float32)})[0]
        if out.ndim != 3 or out.shape[1] != 4 + len(self.names):
            raise ModelRejected(f"model output has shape {list(out.shape)}, not (1, 4+classes, N)")

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """The bare onnxruntime call on a prepared (1,3,H,W) tensor.

        With ``flip``, the mirrored tensor's candidates (x mirrored back) are appended to the
        plain ones, so one decode and NMS merges both passes.
        """
        output = self.session.run(None, {self.input_name: tensor})[0]
        if not self.flip:
            return output
        mirrored = self.session.run(None, {self.input_name: np.ascontiguousarray(tensor[..., ::-1])})[0]
        mirrored[:, 0, :] = tensor.shape[3] - mirrored[:, 0, :]  # centre x, in input pixels
        return np.concatenate([output, mirrored], axis=2)

    def detect(self, image: DecodedImage, thresholds: Thresholds) -> tuple[list[Detection], float]:
        """Letterbox, run, decode; returns detections and the milliseconds spent in the model."""
        tensor, box = letterbox(image.pixels, self.input_hw)
        start = time.perf_counter()
        output = self.run(tensor)
        inference_ms = (time.perf_counter() - start) * 1000.0
        h, w = image.pixels.shape[:2]
        detections = decode(
            output,
            self.names,
            box,
            decoded_size=(w, h),
            original_size=(image.original_width, image.original_height),
            confidence_threshold=thresholds.confidence,
            iou_threshold=thresholds.iou,
        )
        return detections, inference_ms


def _input_hw(shape: list, metadata: dict[str, str], input_size: int) -> tuple[int, int]:
    """(H, W) from a static input shape; for a dynamic one, from input_size or the export's imgsz."""
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        if input_size and input_size != max(h, w):
            raise ModelRejected(
                f"input_size {input_size} does not match the model's fixed input {h}x{w}; "
                "set input_size to 0 to use the model's own size"
            )
        return h, w
    if input_size:
        return input_size, input_size
    try:
        imgsz = ast.literal_eval(metadata.get("imgsz", ""))
        return int(imgsz[0]), int(imgsz[1])
    except (ValueError, SyntaxError, TypeError, IndexError):
        return 640, 640
