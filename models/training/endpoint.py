"""Ask a running model endpoint for its detections on photos, as any client of the site would.

Needs only requests: a plant PC scoring its served model has neither onnxruntime nor PyTorch.
The request and answer shapes are the server's (models/server/openapi.yaml): a POST of
``{"binData": <base64 JPEG/PNG>}``, an answer ``jsonData.detections[]`` with boxes in
original-image pixels and ``jsonData.model`` naming what served it.
"""

from __future__ import annotations

import base64
import json
from argparse import ArgumentTypeError
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests
from cli_values import gateway_url  # scripts/, on the path via models/training/__init__
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .scoring import Detection

PREDICTION_PATHS = ("/api/v0.1/predictions", "/api/v1.0/predictions")


class EndpointError(Exception):
    """Why the endpoint could not be scored, in words for the person at the terminal."""


def check_url(url: str) -> str:
    """Refuse a URL that cannot be a prediction endpoint before sending anything: the gateway
    part by the parser every command shares (scripts/cli_values.py), then the path."""
    try:
        gateway_url(url)
    except ArgumentTypeError as exc:
        raise EndpointError(f"--url {exc}: must be http(s)://<node>:<port>/model/<name>/api/v0.1/predictions") from None
    parts = urlsplit(url)
    if not parts.path.rstrip("/").endswith(PREDICTION_PATHS):
        raise EndpointError(
            f"--url {url!r}: the path must end in {' or '.join(PREDICTION_PATHS)} "
            f"(e.g. {parts.scheme}://{parts.netloc}/model/<name>/api/v0.1/predictions)"
        )
    return url


def endpoint_url(text: str) -> str:
    """check_url as an argparse type: the refusal names --url and the process exits 2."""
    try:
        return check_url(text)
    except EndpointError as exc:
        raise ArgumentTypeError(str(exc).removeprefix("--url ")) from None


@dataclass
class Endpoint:
    """One served model, asked one photo at a time."""

    url: str
    timeout_s: float = 30.0
    retries: int = 3
    served: set[tuple[str, str]] = field(default_factory=set)  # (name, sha256) of every answer
    other_labels: set[str] = field(default_factory=set)  # labels returned that are not the one scored

    def __post_init__(self) -> None:
        check_url(self.url)
        self.session = requests.Session()
        # A badly connected site drops connections and answers 503 while a pod rolls: retry those.
        retry = Retry(
            total=self.retries,
            connect=self.retries,
            read=0,  # a slow answer is not retried: the request may have been served
            status=self.retries,
            backoff_factor=0.5,
            status_forcelist=(502, 503, 504),
            allowed_methods=None,  # a prediction has no side effect: POST may be retried
            raise_on_status=False,
        )
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))

    def detect(self, photo: Path, label: str) -> list[Detection]:
        """The endpoint's detections of ``label`` on one photo, as (confidence, [x1, y1, x2, y2])."""
        body = json.dumps({"binData": base64.b64encode(photo.read_bytes()).decode()})
        try:
            resp = self.session.post(
                self.url, data=body, headers={"Content-Type": "application/json"}, timeout=self.timeout_s
            )
        except requests.exceptions.ConnectionError as exc:
            raise EndpointError(f"cannot reach {self.url}: {_reason(exc)}") from None
        except requests.exceptions.Timeout:
            raise EndpointError(f"{self.url} did not answer {photo.name} within {self.timeout_s:g}s") from None
        except requests.exceptions.RequestException as exc:
            raise EndpointError(f"{self.url}: {exc}") from None
        if resp.status_code != 200:
            raise EndpointError(f"{self.url} answered {resp.status_code} to {photo.name}: {_error_info(resp)}")
        try:
            answer = resp.json()["jsonData"]
            model = answer["model"]
            self.served.add((str(model["name"]), str(model["sha256"])))
            self.other_labels.update(str(d["label"]) for d in answer["detections"] if d["label"] != label)
            return [(float(d["confidence"]), _corners(d["box"])) for d in answer["detections"] if d["label"] == label]
        except (ValueError, KeyError, TypeError):
            raise EndpointError(
                f"{self.url} answered {photo.name} with something that is not a detection answer "
                f"(expected jsonData.detections and jsonData.model): {resp.text[:200]!r}"
            ) from None


def _corners(box: dict) -> np.ndarray:
    x, y, w, h = (float(box[k]) for k in ("x", "y", "width", "height"))
    return np.array([x, y, x + w, y + h])


def _reason(exc: Exception) -> str:
    """The innermost cause of a connection error (refused, name not known...), not urllib3's wrapping."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc)
    return text.split("] ", 1)[-1] if "] " in text else text


def _error_info(resp: requests.Response) -> str:
    """The server's own words for an error (a Seldon status' info), else the start of the body."""
    try:
        return str(resp.json()["status"]["info"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200] or resp.reason
