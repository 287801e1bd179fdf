"""The Seldon Core Python-wrapper model class: ``seldon-core-microservice defect_server.seldon_model.DefectModel``.

The wrapper owns HTTP, gRPC, health, metadata and metrics; this class owns
what a request means. Graph parameters of the SeldonDeployment arrive as
keyword arguments (see ``charms/onnx-model/src/manifests.py``).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from google.protobuf import json_format
from seldon_core.flask_utils import SeldonMicroserviceException
from seldon_core.proto import prediction_pb2
from seldon_core.utils import grpc_datadef_to_array
from werkzeug.exceptions import HTTPException

from . import doc
from .detector import Detector, Thresholds, default_threads
from .errors import BadInput, ModelRejected
from .image_input import DecodedImage, Limits, decode_image_bytes, from_request, validate_array
from .model_source import FetchLimits, fetch_verified

FIRST_LOAD_WAIT_S = 10.0  # a request waits this long for its worker's first load (gunicorn kills at 30 s)
log = logging.getLogger("defect_server")


class DefectModel:
    """Serves one verified YOLOv8 ONNX model; refuses to be ready with anything else."""

    def __init__(
        self,
        model_uri: str = "",
        model_sha256: str = "",
        model_name: str = "model",
        model_version: str = "",
        confidence_threshold: float = Thresholds.confidence,
        iou_threshold: float = Thresholds.iou,
        input_size: int = 0,
        max_pixels: int = Limits.max_pixels,
        max_request_bytes: int = Limits.max_bytes,
        max_model_bytes: int = FetchLimits.max_bytes,
        download_timeout_s: float = FetchLimits.timeout_s,
        threads: int = 0,
        retry_seconds: float = 30.0,
    ) -> None:
        self.model_uri = model_uri
        self.model_sha256 = model_sha256.strip().lower()
        self.model_name = model_name
        self.model_version = model_version or self.model_sha256[:12]
        self.thresholds = Thresholds(float(confidence_threshold), float(iou_threshold))
        self.input_size = int(input_size)
        self.limits = Limits(max_pixels=int(max_pixels), max_bytes=int(max_request_bytes))
        self.fetch_limits = FetchLimits(int(max_model_bytes), float(download_timeout_s))
        workers = int(os.environ.get("GUNICORN_WORKERS", "1") or 1)
        self.threads = int(threads) or default_threads(workers)
        self.detector: Detector | None = None
        self.not_ready_reason = "model not loaded yet"
        self.retry_seconds = float(retry_seconds)
        self._loader: threading.Thread | None = None
        self._load_lock = threading.Lock()
        self._first_attempt = threading.Event()  # set once this worker's first load attempt ended
        self.model_error_handler = self._request_guard()

    # --- lifecycle -------------------------------------------------------------

    def load(self) -> None:
        """Start fetching, verifying and loading the model in the background; return at once.

        The wrapper calls this inside gunicorn's worker boot (``seldon_core/gunicorn_utils.py:
        UserModelApplication.load``, seldon-core v1.17.1), and the pod's ``seldon.io/rest-timeout``
        annotation is gunicorn's worker timeout (``seldon_core/microservice.py:
        _make_rest_server_prod``: 30000 ms -> 30 s). A download or load longer than that, done
        here, got the worker killed and restarted forever. Readiness gates on the model instead
        (``health_status``), and requests before then get a 503 saying what is happening.
        """
        with self._load_lock:
            if self.detector is not None or (self._loader is not None and self._loader.is_alive()):
                return
            self._loader = threading.Thread(target=self._load_until_done, name="model-load", daemon=True)
            self._loader.start()

    def _load_until_done(self) -> None:
        """Load; after a failure that may pass by itself (network, store), try again every retry_seconds.

        Raising would make the wrapper's worker exit and restart in a loop; staying up with a
        failing health check keeps the old pods serving (the new one is never Ready) and keeps
        the reason visible.
        """
        while self.detector is None:
            retryable = self._load_once()
            self._first_attempt.set()
            if not retryable:
                return
            time.sleep(self.retry_seconds)

    def _load_once(self) -> bool:
        """One attempt; returns whether a failure is worth retrying."""
        try:
            if not self.model_uri:
                raise ModelRejected("model_uri is empty: set the model's URI and its sha256")
            if self.not_ready_reason == "model not loaded yet":
                self.not_ready_reason = f"model not loaded yet: fetching {self.model_uri}"
            data = fetch_verified(self.model_uri, self.model_sha256, self.fetch_limits)
            self.detector = Detector(data, threads=self.threads, input_size=self.input_size)
        except ModelRejected as exc:
            self.not_ready_reason = str(exc)
            again = f"; retrying in {self.retry_seconds:g}s" if exc.retryable else ""
            log.error("MODEL REJECTED, not serving: %s%s", exc, again)
            return exc.retryable
        except Exception as exc:  # a bug or a broken runtime: say so instead of dying silently in a thread
            self.not_ready_reason = f"loading the model failed: {type(exc).__name__}: {exc}"
            log.exception("MODEL NOT LOADED, not serving")
            return False
        h, w = self.detector.input_hw
        log.info(
            "model %s version %s sha256 %s loaded: input %dx%d, classes %s, %d thread(s)",
            self.model_name,
            self.model_version,
            self.model_sha256,
            h,
            w,
            self.detector.names,
            self.threads,
        )
        return False

    def health_status(self) -> dict:
        """Ready means verified, loaded and warmed up; the readiness probe calls this."""
        if self.detector is None:
            raise SeldonMicroserviceException(
                f"not ready: {self.not_ready_reason}", status_code=503, reason="MODEL_NOT_READY"
            )
        return {"ready": True, "model": self._model_info()}

    def init_metadata(self) -> dict:
        return {
            "name": self.model_name,
            "versions": [self.model_version],
            "platform": "onnxruntime",
            "inputs": [{"messagetype": "binData"}, {"messagetype": "jsonData"}],
            "outputs": [{"messagetype": "jsonData"}],
            "custom": {"sha256": self.model_sha256},
        }

    def _model_info(self) -> dict:
        return {"name": self.model_name, "version": self.model_version, "sha256": self.model_sha256}

    def _doc_facts(self) -> doc.ModelFacts:
        """What the doc page's spec says about the model, read per request: it loads in the background."""
        detector = self.detector
        if detector is None:
            return doc.ModelFacts(
                self.model_name, self.model_version, self.model_sha256, not_ready=self.not_ready_reason
            )
        return doc.ModelFacts(
            self.model_name,
            self.model_version,
            self.model_sha256,
            classes=tuple(detector.names),
            input_hw=detector.input_hw,
        )

    # --- requests --------------------------------------------------------------

    def predict_raw(self, message: Any) -> Any:
        """Both REST (a dict) and gRPC (a SeldonMessage) land here."""
        if isinstance(message, prediction_pb2.SeldonMessage):
            return json_format.ParseDict(
                self._answer(lambda: self._image_from_proto(message)), prediction_pb2.SeldonMessage()
            )
        return self._answer(lambda: from_request(message, self.limits, self._input_hw()))

    def _answer(self, get_image) -> dict:
        """One request, end to end; errors become Seldon status answers with a 4xx/5xx code."""
        if self.detector is None and self._loader is not None:
            # Each gunicorn worker loads its own copy, and the pod is Ready once the worker that
            # answered the probe has: a request reaching a worker still on its first load waits
            # for it (seconds: the file was just verified by its sibling) instead of a 503 that
            # a roll would count as dropped. Bounded well under gunicorn's 30 s worker timeout.
            self._first_attempt.wait(FIRST_LOAD_WAIT_S)
        if self.detector is None:
            return _failure(503, "MODEL_NOT_READY", f"not ready: {self.not_ready_reason}")
        try:
            image = get_image()
        except BadInput as exc:
            return _failure(exc.status, "BAD_INPUT", str(exc))
        detections, inference_ms = self.detector.detect(image, self.thresholds)
        return {
            "jsonData": {
                "detections": [d.to_json() for d in detections],
                "model": self._model_info(),
                "image": {"width": image.original_width, "height": image.original_height},
                "inference_ms": round(inference_ms, 2),
            },
            # Each entry costs the wrapper an IPC round trip per request (a TIMER the most):
            # request latency is already measured by Seldon's executor and the gateway.
            "meta": {
                "metrics": [
                    {"type": "COUNTER", "key": "defect_images_total", "value": 1},
                    {"type": "COUNTER", "key": "defect_detections_total", "value": len(detections)},
                    # A TIMER is given in ms; the wrapper records it in seconds, hence the name.
                    {"type": "TIMER", "key": "defect_inference_seconds", "value": inference_ms},
                ]
            },
        }

    def _input_hw(self) -> tuple[int, int]:
        assert self.detector is not None
        return self.detector.input_hw

    def _image_from_proto(self, msg: prediction_pb2.SeldonMessage) -> DecodedImage:
        kind = msg.WhichOneof("data_oneof")
        if kind == "binData":
            return decode_image_bytes(msg.binData, self.limits, self._input_hw())
        if kind == "jsonData":
            return from_request({"jsonData": json_format.MessageToDict(msg.jsonData)}, self.limits, self._input_hw())
        if kind == "data":
            try:
                array = grpc_datadef_to_array(msg.data)
            except Exception:
                raise BadInput("data", "cannot be read as an array") from None
            return validate_array(array, self.limits, "data")
        raise BadInput("request", f"no image: send binData, jsonData.image or data (got {kind})")

    def _request_guard(self) -> Blueprint:
        """Hooks the wrapper registers on its Flask app (as ``model_error_handler``).

        Oversized bodies are refused before Flask reads them, and HTTP errors
        (unknown path, wrong method) keep their 4xx: the wrapper's catch-all
        handler would otherwise turn them into a 500. It is also the only blueprint the
        wrapper registers, so the doc page's routes ride in it (``doc.py``).
        """
        guard = Blueprint("defect_request_guard", __name__)
        guard.register_blueprint(doc.blueprint(self._doc_facts))

        @guard.app_errorhandler(HTTPException)
        def _http_error(exc: HTTPException):
            code = exc.code or 500
            reason = (exc.name or "HTTP_ERROR").upper().replace(" ", "_")
            response = jsonify(_status(code, reason, f"{request.method} {request.path}: {exc.description}"))
            response.status_code = code
            if getattr(exc, "valid_methods", None):  # RFC 9110: a 405 says what is allowed
                response.headers["Allow"] = ", ".join(exc.valid_methods)
            return response

        limit = self.limits.max_bytes * 4 // 3 + 64 * 1024  # base64 and JSON framing

        routes: dict[str, set[str]] = {}

        @guard.before_app_request
        def _method_not_allowed():
            """The wrapper serves static files at "" (GET on any path): a GET on a POST-only route
            would be a 404 from there; it is a 405 naming the allowed methods."""
            if not routes:  # built once, on the first request, from the wrapper's own routes
                for rule in current_app.url_map.iter_rules():
                    if rule.endpoint != "static":
                        routes.setdefault(rule.rule, set()).update(rule.methods or ())
            allowed = routes.get(request.path)
            if allowed and request.method not in allowed:
                info = f"{request.method} {request.path}: the method is not allowed; use {', '.join(sorted(allowed))}"
                response = jsonify(_status(405, "METHOD_NOT_ALLOWED", info))
                response.status_code = 405
                response.headers["Allow"] = ", ".join(sorted(allowed))
                return response
            return None

        @guard.before_app_request
        def _limit_body():
            length = request.content_length
            if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
                length = _bounded_chunked_body(request.environ, limit)
            if length is not None and length > limit:
                body = _status(413, "BAD_INPUT", f"request body: {length} bytes is over the limit of {limit}")
                response = jsonify(body)
                response.status_code = 413
                response.headers["Connection"] = "close"
                return response
            return None

        @guard.before_app_request
        def _parse_json_body():
            """Parse a JSON body here, once, so that one nested too deeply is a 400 naming it.

            The wrapper parses bodies in ``seldon_core/flask_utils.py: get_request`` (seldon-core
            v1.17.1), which catches only werkzeug's BadRequest: the RecursionError that Python's
            json raises past ~1000 levels reached the catch-all handler as a 500. Flask caches what
            is parsed here, so the wrapper's own ``request.get_json()`` does not parse it again.
            """
            if request.method not in ("POST", "PUT") or not request.is_json:
                return None
            try:
                request.get_json(silent=True)  # malformed JSON: left to the wrapper's own 400
            except RecursionError:
                return _too_deep("request body")
            return None

        @guard.app_errorhandler(RecursionError)
        def _recursion(exc: RecursionError):
            """Any other place a request's nesting exhausts the stack (the wrapper's ``json`` form
            field, protobuf's ParseDict of a feedback message): still the request's fault, a 400."""
            return _too_deep(f"{request.method} {request.path}")

        def _too_deep(where: str):
            info = (
                f"{where}: JSON is nested too deeply to parse (the server's limit is about"
                f" {sys.getrecursionlimit()} levels); send a Seldon message such as"
                ' {"binData": <base64 image>}'
            )
            response = jsonify(_status(400, "BAD_INPUT", info))
            response.status_code = 400
            return response

        return guard


def _bounded_chunked_body(environ: dict, limit: int) -> int:
    """A chunked body has no Content-Length to refuse it by (and a pod's port 9000 is reachable
    inside the cluster without the gateway's limit): read at most ``limit`` + 1 bytes of it.

    Within the limit, the body is handed on as if it had come with a Content-Length. Over it,
    the rest is read and dropped (up to a bound), so the client is still reading when the 413
    comes instead of meeting a reset connection; the size returned is what was read. Runs before
    anything touched ``request.stream`` (the guard's first body hook)."""
    stream = environ["wsgi.input"]
    data = stream.read(limit + 1)
    if len(data) <= limit:
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return len(data)
    seen = len(data)
    while seen < 8 * limit and (more := stream.read(1 << 16)):
        seen += len(more)
    return seen


def _status(code: int, reason: str, info: str) -> dict:
    """Seldon's status format, with the HTTP code the wrapper copies into the response."""
    return {"status": {"code": code, "info": info, "reason": reason, "status": "FAILURE"}}


def _failure(code: int, reason: str, info: str) -> dict:
    """A failed prediction: the status, and the error counter for the wrapper's metrics channel."""
    metrics = [{"type": "COUNTER", "key": "defect_errors_total", "value": 1, "tags": {"reason": reason}}]
    return {**_status(code, reason, info), "meta": {"metrics": metrics}}
