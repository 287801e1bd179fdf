"""Shared fixtures: real photos, the shipped model, and synthetic YOLOv8 models with known answers."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from support.server_process import ROOT, ServerProcess, free_port
from support.synthetic_yolo import build

PHOTOS = ROOT / "tests" / "data" / "metal-tags"
CARD = ROOT / "models" / "scratch-detector" / "model.yaml"


@dataclass(frozen=True)
class Photo:
    path: Path
    boxes: list[tuple[float, float, float, float]]  # left, top, width, height

    @property
    def b64(self) -> str:
        return base64.b64encode(self.path.read_bytes()).decode()


def photos() -> list[Photo]:
    coco = json.loads((PHOTOS / "annotations.json").read_text())
    boxes: dict[int, list] = {}
    for a in coco["annotations"]:
        boxes.setdefault(a["image_id"], []).append(tuple(a["bbox"]))
    return [Photo(PHOTOS / "images" / i["file_name"], boxes.get(i["id"], [])) for i in coco["images"]]


def shipped_variant(name: str) -> tuple[Path, str]:
    """(path, sha256) of a variant of the shipped scratch detector, from its model card."""
    card = yaml.safe_load(CARD.read_text())
    variant = next(v for v in card["variants"] if v["name"] == name)
    return CARD.parent / variant["file"], variant["sha256"]


def shipped_threshold() -> float:
    """The confidence threshold the site serves the scratch detector at (its card, chosen by cross-validation)."""
    return float(yaml.safe_load(CARD.read_text())["serving_thresholds"]["confidence"])


# A 256x384 model with two classes: candidates in model-input pixels.
SYNTH_NAMES = ["scratch", "dent"]
SYNTH_CANDIDATES = [
    (100, 120, 40, 20, 0, 0.90),  # kept
    (102, 121, 40, 20, 0, 0.80),  # suppressed by NMS (same class, IoU ~0.8)
    (101, 120, 40, 20, 1, 0.70),  # kept: another class is never suppressed by scratch
    (300, 200, 50, 50, 1, 0.60),  # kept
    (10, 10, 5, 5, 0, 0.10),  # below the confidence threshold
]


@pytest.fixture(scope="session")
def synthetic_model(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("models") / "synthetic.onnx"
    return path, build(path, (256, 384), SYNTH_NAMES, SYNTH_CANDIDATES)


def start(tmp_path: Path, **params) -> ServerProcess:
    params.setdefault("model_name", "scratch")
    server = ServerProcess(params, log_path=tmp_path / f"server-{len(list(tmp_path.iterdir()))}.log").start()
    return server


@pytest.fixture(scope="session")
def synthetic_server(synthetic_model, tmp_path_factory):
    path, sha = synthetic_model
    server = start(tmp_path_factory.mktemp("synthetic"), model_uri=path.as_uri(), model_sha256=sha)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def http_file_server():
    """Serve a directory over plain HTTP on loopback, like a model store behind a URL."""
    servers = []

    def serve(directory: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd in servers:
        httpd.shutdown()


@pytest.fixture(scope="session")
def s3_store():
    """A real S3-protocol server (moto) on loopback; returns a function that stores an object."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="edge",
        aws_secret_access_key="edge-secret",
        region_name="us-east-1",
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)

    def put(bucket: str, key: str, data: bytes) -> str:
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key=key, Body=data)
        return endpoint

    yield put
    proc.terminate()
    proc.wait(timeout=10)
