"""Turn the accepted request shapes into one RGB uint8 image, with limits checked before work.

Accepted: ``{"binData": <base64>}`` (or raw bytes over gRPC),
``{"jsonData": {"image": <base64>}}`` and ``{"data": {"ndarray": HxWx3}}``.
The pixel limit is checked from the image header, before any pixel is
decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import BadInput

ACCEPTED_FORMATS = ("JPEG", "PNG")


@dataclass(frozen=True)
class Limits:
    """Request limits; both are graph parameters of the SeldonDeployment."""

    max_pixels: int = 25_000_000
    max_bytes: int = 20 * 1024 * 1024


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image, possibly decoded at reduced size, and the size it really has."""

    pixels: np.ndarray  # (h, w, 3) uint8, RGB
    original_width: int
    original_height: int


def from_request(request: Any, limits: Limits, target_hw: tuple[int, int]) -> DecodedImage:
    """Find the image in a Seldon JSON request and decode it."""
    if not isinstance(request, dict):
        raise BadInput("request", f"must be a JSON object, got {_type_name(request)}")
    present = [k for k in ("binData", "jsonData", "data") if k in request]
    if not present:
        raise BadInput(
            "request",
            'no image: send {"binData": base64 JPEG/PNG}, {"jsonData": {"image": base64}} '
            'or {"data": {"ndarray": HxWx3 uint8}}',
        )
    if len(present) > 1:
        raise BadInput("request", f"send exactly one of binData, jsonData, data; got {present}")
    if "meta" in request:
        check_meta(request["meta"])
    key = present[0]
    if key == "binData":
        return decode_image_bytes(_b64("binData", request["binData"], limits), limits, target_hw)
    if key == "jsonData":
        payload = request["jsonData"]
        if not isinstance(payload, dict) or "image" not in payload:
            raise BadInput("jsonData", 'must be an object with "image": base64 JPEG/PNG')
        return decode_image_bytes(_b64("jsonData.image", payload["image"], limits), limits, target_hw)
    return from_ndarray(request["data"], limits)


# Seldon's Meta message (proto/prediction.proto): the JSON type of each field it may carry.
META_FIELDS: dict[str, tuple[type, str]] = {
    "puid": (str, "a string"),
    "tags": (dict, "an object"),
    "routing": (dict, "an object"),
    "requestPath": (dict, "an object"),
    "metrics": (list, "an array"),
}


def check_meta(meta: Any) -> None:
    """``meta`` is optional, but when sent it is a Seldon Meta object (openapi.yaml: ``meta: object``).

    The model does not use it, which is why a wrong one used to pass unnoticed; a client that sends
    ``"meta": "oops"`` has a bug it should hear about, and the executor would refuse the same message.
    """
    if not isinstance(meta, dict):
        raise BadInput("meta", f"must be an object, got {_type_name(meta)}")
    for key, (kind, name) in META_FIELDS.items():
        if key in meta and not isinstance(meta[key], kind):
            raise BadInput(f"meta.{key}", f"must be {name}, got {_type_name(meta[key])}")


def _b64(field: str, value: Any, limits: Limits) -> bytes:
    if not isinstance(value, str):
        raise BadInput(field, f"must be a base64 string, got {_type_name(value)}")
    if not value:
        raise BadInput(field, "is empty")
    if len(value) * 3 // 4 > limits.max_bytes:
        raise BadInput(field, f"image is larger than the limit of {limits.max_bytes} bytes", 413)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(field, "is not valid base64") from None


def decode_image_bytes(data: bytes, limits: Limits, target_hw: tuple[int, int]) -> DecodedImage:
    """Decode JPEG/PNG bytes; JPEGs far larger than the model input are decoded at 1/2..1/8 scale."""
    field = "binData"
    if not data:
        raise BadInput(field, "image is empty")
    if len(data) > limits.max_bytes:
        raise BadInput(field, f"image is larger than the limit of {limits.max_bytes} bytes", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if img.format not in ACCEPTED_FORMATS:
                raise BadInput(field, f"image format {img.format} is not accepted: send JPEG or PNG")
            if width <= 0 or height <= 0:
                raise BadInput(field, f"image has no pixels ({width}x{height})")
            if width * height > limits.max_pixels:
                raise BadInput(
                    field,
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}",
                    413,
                )
            if img.format == "JPEG":
                # draft() lets libjpeg decode straight to a smaller scale: a large camera
                # frame is never fully decoded only to be shrunk to the model input.
                img.draft("RGB", _draft_size(width, height, target_hw))
            rgb = img.convert("RGB")
            pixels = np.asarray(rgb)
    except BadInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput(field, f"image is over the limit of {limits.max_pixels} pixels", 413) from None
    except UnidentifiedImageError:
        raise BadInput(field, "is not a JPEG or PNG image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInput(field, f"image is corrupt or truncated ({exc})") from None
    return DecodedImage(pixels, width, height)


def _draft_size(width: int, height: int, target_hw: tuple[int, int]) -> tuple[int, int]:
    """The smallest size draft() may pick that still covers the model input."""
    th, tw = target_hw
    scale = min(tw / width, th / height)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def from_ndarray(data: Any, limits: Limits) -> DecodedImage:
    """Validate ``data.ndarray`` as an HxWx3 array of integers 0..255."""
    if not isinstance(data, dict):
        raise BadInput("data", f"must be an object with ndarray, got {_type_name(data)}")
    if "ndarray" not in data:
        others = sorted(k for k in data if k != "names")
        raise BadInput(
            "data",
            f"only data.ndarray (HxWx3 uint8) is accepted, got {others or 'no array'}",
        )
    return validate_array(data["ndarray"], limits, "data.ndarray")


def validate_array(raw: Any, limits: Limits, field: str) -> DecodedImage:
    """Check shape, dtype and range of an array-like image and return it as uint8."""
    if not isinstance(raw, (list, np.ndarray)):
        raise BadInput(field, f"must be an HxWx3 array, got {_type_name(raw)}")
    try:
        arr = np.asarray(raw)
    except (ValueError, TypeError):
        raise BadInput(field, "is ragged: every row must have the same length") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise BadInput(field, f"must have shape HxWx3 (RGB), got {list(arr.shape)}")
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise BadInput(field, f"image has no pixels ({w}x{h})")
    if h * w > limits.max_pixels:
        raise BadInput(field, f"image is {w}x{h} pixels, over the limit of {limits.max_pixels}", 413)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise BadInput(field, "contains NaN or infinity: values must be integers 0..255")
        if not np.array_equal(arr, np.round(arr)):
            raise BadInput(field, "must hold integers 0..255 (uint8), got fractional values")
    elif arr.dtype.kind not in "iu":
        raise BadInput(field, f"must hold integers 0..255 (uint8), got {arr.dtype.name} values")
    elif isinstance(raw, list) and _holds_booleans(raw):
        # numpy turns JSON true/false among integers into 1/0: refuse them explicitly.
        raise BadInput(field, "must hold integers 0..255 (uint8), got true/false")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise BadInput(field, "values must be in 0..255 (uint8)")
    return DecodedImage(np.ascontiguousarray(arr, dtype=np.uint8), w, h)


def _holds_booleans(raw: list) -> bool:
    return bool in set(map(type, np.asarray(raw, dtype=object).ravel()))


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
