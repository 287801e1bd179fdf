"""YOLOv8 ONNX contract: letterbox in, (1, 4+nc, N) out, boxes back in original pixels.

Pure numpy and Pillow, so training evaluation and the server share one
implementation of what "a detection" means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PAD_VALUE = 114
MIN_BOX_PX = 0.1  # boxes are answered to 0.1 px: anything thinner would read as 0


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed in the model input: scale, then offset."""

    scale: float  # model-input pixels per decoded-image pixel
    pad_x: float
    pad_y: float


@dataclass(frozen=True)
class Detection:
    """One detection in original-image pixels."""

    label: str
    confidence: float
    x: float
    y: float
    width: float
    height: float

    def to_json(self) -> dict:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "box": {
                "x": round(self.x, 1),
                "y": round(self.y, 1),
                "width": round(self.width, 1),
                "height": round(self.height, 1),
            },
        }


def letterbox(pixels: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio, pad centrally with grey 114, return a (1,3,H,W) float32 tensor."""
    in_h, in_w = input_hw
    h, w = pixels.shape[:2]
    scale = min(in_h / h, in_w / w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) != (w, h):
        resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.BILINEAR))
    else:
        resized = pixels
    pad_x, pad_y = (in_w - new_w) / 2, (in_h - new_h) / 2
    left, top = int(round(pad_x - 0.1)), int(round(pad_y - 0.1))
    canvas = np.full((in_h, in_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    tensor = canvas.transpose(2, 0, 1)[np.newaxis].astype(np.float32)
    tensor *= 1.0 / 255.0
    return tensor, Letterbox(scale=scale, pad_x=left, pad_y=top)


def decode(
    output: np.ndarray,
    names: list[str],
    box: Letterbox,
    decoded_size: tuple[int, int],
    original_size: tuple[int, int],
    confidence_threshold: float,
    iou_threshold: float,
    max_detections: int = 300,
) -> list[Detection]:
    """Turn a raw (1, 4+nc, N) output into detections in original-image pixels.

    ``decoded_size`` is the (w, h) the image was letterboxed from, which is
    smaller than ``original_size`` when the JPEG was decoded in draft mode.
    """
    preds = output[0]
    nc = preds.shape[0] - 4
    if nc < 1:
        raise ValueError(f"model output has {preds.shape[0]} rows; YOLOv8 needs 4 + classes")
    scores_all = preds[4:]
    classes = scores_all.argmax(axis=0)
    scores = scores_all[classes, np.arange(preds.shape[1])]
    keep = scores >= confidence_threshold
    if not keep.any():
        return []
    cx, cy, bw, bh = preds[:4, keep]
    scores, classes = scores[keep], classes[keep]
    x1 = cx - bw / 2
    y1 = cy - bh / 2
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)
    order = _nms_per_class(boxes, scores, classes, iou_threshold)[:max_detections]
    dw, dh = decoded_size
    ow, oh = original_size
    sx, sy = ow / dw, oh / dh
    out = []
    for i in order:
        bx1, by1, bx2, by2 = boxes[i]
        bx1 = np.clip((bx1 - box.pad_x) / box.scale, 0, dw) * sx
        bx2 = np.clip((bx2 - box.pad_x) / box.scale, 0, dw) * sx
        by1 = np.clip((by1 - box.pad_y) / box.scale, 0, dh) * sy
        by2 = np.clip((by2 - box.pad_y) / box.scale, 0, dh) * sy
        if bx2 - bx1 < MIN_BOX_PX or by2 - by1 < MIN_BOX_PX:
            continue  # clipped away, or smaller than the precision the answer is given in
        cls = int(classes[i])
        label = names[cls] if cls < len(names) else str(cls)
        out.append(Detection(label, float(scores[i]), float(bx1), float(by1), float(bx2 - bx1), float(by2 - by1)))
    return out


def _nms_per_class(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS; offsetting boxes by class keeps classes from suppressing each other."""
    offset = boxes + (classes.astype(np.float32) * 100_000.0)[:, None]
    order = scores.argsort()[::-1]
    areas = (offset[:, 2] - offset[:, 0]) * (offset[:, 3] - offset[:, 1])
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(offset[i, 0], offset[rest, 0])
        yy1 = np.maximum(offset[i, 1], offset[rest, 1])
        xx2 = np.minimum(offset[i, 2], offset[rest, 2])
        yy2 = np.minimum(offset[i, 3], offset[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return keep
